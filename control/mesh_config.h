// Configuration files of the two programs: the mesh file of `meshwg --config FILE IFNAME` (the
// wg-quick(8) format plus [WGStun] and [Relay] sections) and the server file of `meshwg-server
// --config FILE` ([Server]). Pure parsers: no DNS, no sockets (the one lookup is an IPv6
// %interface scope, by name, as dataplane::Endpoint::parse does for the UAPI).
//
// Syntax, as wg(8) / wg-quick(8) read it:
//   [Section]                  names and keys are case-insensitive
//   Key = Value                value trimmed of spaces and tabs
//   # comment                  full-line or trailing ('#' always starts a comment)
// blank lines are ignored, lines may end in CRLF, and a leading UTF-8 byte-order mark is
// skipped. Stricter than wg(8) on purpose: unknown keys and sections, a key outside any
// section, a second value for a single-valued key and a second [Interface], [WGStun], [Relay]
// or [Server] are errors, not silently merged.
//
// Mesh file:
//   [Interface]  PrivateKey (required), ListenPort, Address (repeatable, comma list of
//                addr[/prefix], host address kept), MTU; and wg-quick's DNS, Table, PreUp,
//                PostUp, PreDown, PostDown, SaveConfig, FwMark, which are checked and kept
//                but not acted on (meshwg runs no hooks and touches no resolver or table).
//   [Peer]       PublicKey (required), AllowedIPs (repeatable), Endpoint, PersistentKeepalive
//                (0-65535 or "off"), PresharedKey. Without Endpoint the peer is reached
//                through traversal. At most kMaxConfigPeers peers, each key at most once.
//   [WGStun]     Endpoint and PublicKey (both required), at most once; Stun (repeatable, at
//                most kMaxStunServers): plain STUN servers (UDP host:port, e.g. the same
//                meshwg-server's Stun address) for the control plane's check socket.
//   [Relay]      Endpoint (TCP) and PublicKey (both required), at most once.
// Server file:
//   [Server]     PrivateKey (required); Stun (UDP), WGStun (UDP), Relay (TCP): bind addresses,
//                each optional, at least one.
//
// Errors: every message reads "FILE:LINE: KEY: what is wrong". KEY is the key's canonical
// name ("ListenPort"), or "[Section]" for a section problem, or "line" for a line that holds
// no key. Problems with a whole section (a missing required key) carry the line of the
// section header; problems with the whole file (unreadable, too big, no [Interface]) carry
// line 0. Messages never contain key material: values of key fields are never echoed, and an
// unknown key name is echoed only when it looks like a name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/primitives.h"
#include "dataplane/ip.h"

namespace meshwg::control {

inline constexpr size_t kMaxConfigBytes = size_t{1} << 20;  // 1 MiB; larger files are refused
inline constexpr size_t kMaxConfigLineLength = 4096;        // characters, without CR/LF
inline constexpr size_t kMaxConfigPeers = 10000;
inline constexpr size_t kMaxStunServers = 8;

// A "host:port" as written in an Endpoint: an IP literal ("a.b.c.d:port", "[v6]:port",
// "[v6%scope]:port") or a DNS name ("relay.example.org:443"). Names are kept, not resolved:
// the parser does no DNS, and the daemon resolves at start-up (and may again later, as
// wg-quick users expect from dynamic DNS). The port is 1-65535.
struct HostPort {
  std::string host;  // without brackets: the literal's text or the name as written
  uint16_t port = 0;
  std::optional<dataplane::Endpoint> address;  // set exactly when host is an IP literal

  [[nodiscard]] bool is_name() const { return !address.has_value(); }
  // "host:port", with brackets around an IPv6 literal.
  [[nodiscard]] std::string str() const;
};

// An interface address keeps its host bits ("10.0.0.1/24" is 10.0.0.1 on a /24), unlike an
// allowed-IPs prefix, which IpPrefix::parse masks to its network.
struct InterfaceAddress {
  dataplane::IpAddress addr;
  uint8_t cidr = 0;  // a bare address means the full length (/32, /128), as with ip(8)
  bool operator==(const InterfaceAddress&) const = default;
  [[nodiscard]] std::string str() const;
};

struct InterfaceConfig {
  crypto::Key private_key;                  // never all zeros
  std::optional<uint16_t> listen_port;      // absent: random port
  std::vector<InterfaceAddress> addresses;  // in file order
  std::optional<uint32_t> mtu;              // 576-65535
  // wg-quick(8) keys, kept for tools and messages only.
  std::vector<std::string> dns;  // items of the comma lists, trimmed (addresses or domains)
  std::optional<std::string> table;
  std::vector<std::string> pre_up, post_up, pre_down, post_down;  // commands, in order
  std::optional<bool> save_config;
  std::optional<uint32_t> fwmark;  // "off" reads as 0, as in wg(8)
  size_t line = 0;                 // of the [Interface] header
};

struct PeerConfig {
  crypto::PublicKey public_key{};
  std::optional<crypto::Key> preshared_key;      // all zeros means none, as in wg(8)
  std::vector<dataplane::IpPrefix> allowed_ips;  // masked, in file order
  std::optional<HostPort> endpoint;              // absent: reached through traversal
  uint16_t persistent_keepalive = 0;             // seconds; 0 = off
  size_t line = 0;                               // of the [Peer] header
};

// [WGStun] and [Relay]: a service of a meshwg-server, named by its public key.
struct ServiceConfig {
  HostPort endpoint;
  crypto::PublicKey public_key{};
  std::vector<HostPort> stun;  // [WGStun] only: plain STUN servers, in file order
  size_t line = 0;  // of the section header
};

struct MeshConfig {
  InterfaceConfig interface;
  std::vector<PeerConfig> peers;  // in file order; public keys are distinct
  std::optional<ServiceConfig> wgstun;
  std::optional<ServiceConfig> relay;
};

struct ServerConfig {
  crypto::Key private_key;  // never all zeros
  // Bind addresses (IP literals, port 1-65535); at least one is set.
  std::optional<dataplane::Endpoint> stun;    // UDP, plain STUN (RFC 8489)
  std::optional<dataplane::Endpoint> wgstun;  // UDP, WG-STUN
  std::optional<dataplane::Endpoint> relay;   // TCP
};

struct ConfigError {
  std::string file;
  size_t line = 0;      // 1-based; 0 for the whole file
  std::string key;      // canonical key name, "[Section]", "line" or "file"
  std::string message;  // "FILE:LINE: KEY: what is wrong", ready to print
};

// Parse `text` (the file's contents; `file` is only used in messages). On failure they set
// err and return nullopt; nothing is thrown except std::bad_alloc. The caller owns `text`
// and should wipe it afterwards: it holds the private key in base64.
[[nodiscard]] std::optional<MeshConfig> parse_mesh_config(std::string_view text,
                                                          std::string_view file, ConfigError& err);
[[nodiscard]] std::optional<ServerConfig> parse_server_config(std::string_view text,
                                                              std::string_view file,
                                                              ConfigError& err);

// Read `path` (at most kMaxConfigBytes; the read buffer is wiped afterwards) and parse it.
// An unreadable or oversized file is an error at line 0 with key "file".
[[nodiscard]] std::optional<MeshConfig> load_mesh_config(const std::string& path, ConfigError& err);
[[nodiscard]] std::optional<ServerConfig> load_server_config(const std::string& path,
                                                             ConfigError& err);

}  // namespace meshwg::control
