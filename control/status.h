// `meshwg status`: what a device is doing, for people (text) and programs (JSON). Built from
// a UAPI get reply, plus the control plane's candidates and paths when it runs (mesh mode).
//
// JSON schema (stable; fields are only ever added):
//   {
//     "interface":   string,            the interface name
//     "listen_port": number,            UDP port of the WireGuard socket (0: not listening)
//     "check_port":  number | null,     UDP port of the control plane's check socket
//                                       (null: no control plane, not mesh mode)
//     "relay":       "up" | "down" | null,  the control plane's relay connection (null: none)
//     "candidates":  [ { "kind": "local" | "wg-stun" | "stun" | "upnp" | "nat-pmp",
//                        "address": "IP:PORT" or "[IPv6]:PORT",
//                        "age_s": number } ],       empty unless the control plane runs
//     "peers": [ { "public_key": base64 string (as wg(8) prints it),
//                  "endpoint": "IP:PORT" | "[IPv6]:PORT" | null,
//                  "path": "direct" | "relayed" | "none",
//                  "rtt_ms": number | null,          null until connectivity checks measure it
//                  "latest_handshake": number,       Unix seconds, 0 = never
//                  "rx_bytes": number, "tx_bytes": number,
//                  "candidates": [ { "kind", "address" } ],   what the peer told us of its
//                                    own candidates, sealed, over the relay (mesh mode; else [])
//                  "state": "relayed" | "switching" | "direct" | null,   the control plane's
//                                    path to a relayed peer (null: not managed, e.g. a peer
//                                    with a configured Endpoint, or not mesh mode); "direct"
//                                    only once data arrived on the direct path
//                  "upgrades": number | null,        switches to a direct path tried
//                  "fallbacks": number | null,       direct paths given up for the relay
//                  "bans": [ { "pair": "OURS>THEIRS" (WireGuard endpoints), "ttl_s": number,
//                              "failures": number } ] }  pairs not tried again for ttl_s
//   ]
//   }
// Without an interface name, `meshwg status --json` prints an array of these objects.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/uapi.h"

namespace meshwg::control {

struct CandidateStatus {
  std::string kind;
  std::string address;
  int64_t age_s = 0;
};

struct BanStatus {
  std::string pair;  // "OURS>THEIRS"
  int64_t ttl_s = 0;
  uint64_t failures = 0;
};

struct PeerStatus {
  std::string public_key;  // base64
  std::optional<std::string> endpoint;
  std::string path;  // direct, relayed, none
  std::optional<double> rtt_ms;
  int64_t latest_handshake = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
  std::vector<CandidateStatus> candidates;  // the peer's own, as it told us (age_s unused)
  std::optional<std::string> state;         // relayed, switching, direct (mesh mode)
  std::optional<uint64_t> upgrades, fallbacks;
  std::vector<BanStatus> bans;
};

struct InterfaceStatus {
  std::string interface;
  uint16_t listen_port = 0;
  std::optional<uint16_t> check_port;
  std::optional<std::string> relay;  // "up" / "down"
  std::vector<CandidateStatus> candidates;
  std::vector<PeerStatus> peers;
};

// A WireGuard key as wg(8) prints it.
std::string key_to_base64(std::span<const uint8_t, 32> key);

// 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: where the relay's loopback endpoints live.
bool is_loopback(const dataplane::IpAddress& a);

// The path a peer's traffic takes, from what the device reports: none without an endpoint or
// without a handshake in the last REJECT_AFTER_TIME (no usable session); relayed when the
// endpoint is a loopback address (the control plane's relay socket); direct otherwise.
std::string classify_path(const PeerSnapshot& p, std::chrono::system_clock::time_point now);

InterfaceStatus status_from_snapshot(const std::string& ifname, const DeviceSnapshot& snap,
                                     std::chrono::system_clock::time_point now);

// Adds what the control plane reports on its status socket (MeshControl::status_json():
// check_port, relay, candidates). False, leaving s untouched, when doc is not such a document.
bool merge_mesh_status(InterfaceStatus& s, std::string_view doc);

nlohmann::json to_json(const InterfaceStatus& s);
// Human-readable, in the spirit of `wg show` (relative handshake times, byte units).
std::string to_text(const InterfaceStatus& s, std::chrono::system_clock::time_point now);

}  // namespace meshwg::control
