// The cross-platform userspace configuration protocol (wireguard.com/xplatform, "UAPI"):
// parsing of `set=1` bodies into a validated change set, and serialisation of `get=1`
// replies. Pure functions: no sockets, no device. A set is parsed completely before anything
// is applied, so a bad line rejects the whole set and changes nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/primitives.h"
#include "dataplane/ip.h"

namespace meshwg::control {

// Bounds on a set body. The server enforces them while reading (longer line: connection
// closed; more lines or bytes: EINVAL); parse_set repeats the line checks for other callers.
// 2^20 lines comfortably hold netns.sh's 130,561 allowed IPs on one peer.
inline constexpr size_t kMaxLineLength = 4096;       // bytes, without the '\n'
inline constexpr size_t kMaxSetLines = size_t{1} << 20;
inline constexpr size_t kMaxSetBytes = size_t{64} << 20;

struct AllowedIpChange {
  dataplane::IpPrefix prefix;
  bool remove = false;  // "allowed_ip=-a.b.c.d/n"
};

struct PeerChange {
  crypto::PublicKey public_key{};
  bool remove = false;
  bool update_only = false;
  std::optional<crypto::Key> preshared_key;  // all-zero = remove the PSK
  std::optional<dataplane::Endpoint> endpoint;
  std::optional<uint16_t> persistent_keepalive;  // seconds, 0 = off
  bool replace_allowed_ips = false;
  std::vector<AllowedIpChange> allowed_ips;  // in order
};

struct SetRequest {
  std::optional<crypto::Key> private_key;  // all-zero = remove the key
  std::optional<uint16_t> listen_port;
  std::optional<uint32_t> fwmark;
  bool replace_peers = false;
  std::vector<PeerChange> peers;  // in order; the same key may appear twice
};

struct ParseError {
  int errno_value = 0;  // positive errno (EINVAL, EPROTO, ...)
  size_t line = 0;      // 1-based line number in the set body
  std::string message;  // names the key and what is wrong with it
};

// Parses the lines of a set body (everything after "set=1\n", without the terminating empty
// line; a final '\n' is optional). Returns the request, or sets err and returns nullopt.
// Errors: EPROTO for a line without '=' or an empty line; EINVAL for everything else (unknown
// key, interface key after public_key, bad value, bounds). Messages never contain secrets.
std::optional<SetRequest> parse_set(std::string_view body, ParseError& err);

struct PeerSnapshot {
  crypto::PublicKey public_key{};
  crypto::Key preshared_key;  // zero when none
  std::optional<dataplane::Endpoint> endpoint;
  int64_t last_handshake_sec = 0;
  int64_t last_handshake_nsec = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
  uint16_t persistent_keepalive = 0;
  std::vector<dataplane::IpPrefix> allowed_ips;
};

struct DeviceSnapshot {
  std::optional<crypto::Key> private_key;
  uint16_t listen_port = 0;
  uint32_t fwmark = 0;
  std::vector<PeerSnapshot> peers;
};

// The get reply body (key=value lines), without the trailing "errno=0\n\n".
std::string serialize_get(const DeviceSnapshot& snap);

// Parses a get reply (what serialize_get writes, or wireguard-go's: any order of interface
// keys, public_key starting each peer), up to an empty line or the end. An "errno=N" line
// with N != 0 fails with errno_value N. Keys this reader does not know are skipped, so a
// newer implementation's reply still reads. Values are checked as strictly as in parse_set.
std::optional<DeviceSnapshot> parse_get(std::string_view body, ParseError& err);

// Echoes untrusted text into an error message: quoted, printable ASCII only (no log
// injection), at most 64 characters (a 4 KiB line does not become a 16 KiB log entry).
// Never used for secrets.
std::string quote(std::string_view s);

// Lowercase hex of 32 bytes, and the strict reverse (64 hex chars, either case).
std::string to_hex(std::span<const uint8_t, 32> key);
bool from_hex(std::string_view s, std::span<uint8_t, 32> out);

}  // namespace meshwg::control
