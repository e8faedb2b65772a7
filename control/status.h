// `meshwg status`: what a device is doing, for people (text) and programs (JSON). Built from
// a UAPI get reply, plus the control plane's candidates and paths when it runs (mesh mode).
//
// JSON schema (stable; fields are only ever added):
//   {
//     "interface":   string,            the interface name
//     "listen_port": number,            UDP port of the WireGuard socket (0: not listening)
//     "check_port":  number | null,     UDP port of the control plane's check socket
//                                       (null: no control plane, not mesh mode)
//     "candidates":  [ { "kind": "local" | "wg-stun" | "stun" | "upnp" | "nat-pmp",
//                        "address": "IP:PORT" or "[IPv6]:PORT",
//                        "age_s": number } ],       empty unless the control plane runs
//     "peers": [ { "public_key": base64 string (as wg(8) prints it),
//                  "endpoint": "IP:PORT" | "[IPv6]:PORT" | null,
//                  "path": "direct" | "relayed" | "none",
//                  "rtt_ms": number | null,          null until connectivity checks measure it
//                  "latest_handshake": number,       Unix seconds, 0 = never
//                  "rx_bytes": number, "tx_bytes": number } ]
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

struct PeerStatus {
  std::string public_key;  // base64
  std::optional<std::string> endpoint;
  std::string path;  // direct, relayed, none
  std::optional<double> rtt_ms;
  int64_t latest_handshake = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
};

struct InterfaceStatus {
  std::string interface;
  uint16_t listen_port = 0;
  std::optional<uint16_t> check_port;
  std::vector<CandidateStatus> candidates;
  std::vector<PeerStatus> peers;
};

// The path a peer's traffic takes, from what the device reports: none without an endpoint or
// without a handshake in the last REJECT_AFTER_TIME (no usable session); relayed when the
// endpoint is a loopback address (the control plane's relay socket); direct otherwise.
std::string classify_path(const PeerSnapshot& p, std::chrono::system_clock::time_point now);

InterfaceStatus status_from_snapshot(const std::string& ifname, const DeviceSnapshot& snap,
                                     std::chrono::system_clock::time_point now);

// Adds what the control plane reports on its status socket (MeshControl::status_json():
// check_port, candidates). False, leaving s untouched, when doc is not such a document.
bool merge_mesh_status(InterfaceStatus& s, std::string_view doc);

nlohmann::json to_json(const InterfaceStatus& s);
// Human-readable, in the spirit of `wg show` (relative handshake times, byte units).
std::string to_text(const InterfaceStatus& s, std::chrono::system_clock::time_point now);

}  // namespace meshwg::control
