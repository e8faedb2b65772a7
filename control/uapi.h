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
#include "dataplane/config.h"
#include "dataplane/ip.h"

namespace meshwg::control {

// Bounds on a set body. The server enforces them while reading (longer line: connection
// closed; more lines or bytes: EINVAL); parse_set repeats the line checks for other callers.
// 2^20 lines comfortably hold netns.sh's 130,561 allowed IPs on one peer.
inline constexpr size_t kMaxLineLength = 4096;       // bytes, without the '\n'
inline constexpr size_t kMaxSetLines = size_t{1} << 20;
inline constexpr size_t kMaxSetBytes = size_t{64} << 20;

// The operations themselves live with the device (dataplane/config.h), which applies them.
using dataplane::AllowedIpChange;
using dataplane::PeerChange;
using dataplane::SetRequest;

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

using dataplane::DeviceSnapshot;
using dataplane::PeerSnapshot;

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
