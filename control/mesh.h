// Mesh mode's control plane (DESIGN.md "Traversal"): sets up the interface from the mesh
// config (addresses, MTU, routes over rtnetlink; keys and peers through the WgDriver, i.e.
// the standard set/get only), then gathers this node's endpoint candidates on its own thread:
// local addresses (rtnetlink), the WireGuard socket's public mapping by WG-STUN (a STUN
// binding request from an ordinary socket to the WG-STUN server's reserved tunnel address, so
// the data plane carries it like any packet), the check socket's mapping by plain STUN
// (RFC 8489), and UPnP-IGD / NAT-PMP port mappings. Refreshed on rtnetlink events and
// periodically.
//
// Threads:
//   caller            setup() (before start()), candidates()/status_json() from any thread
//   control thread    run(): one poll loop over the rtnetlink monitor, the WG-STUN probe
//                     socket, the check socket, the status socket and a stop eventfd; it is
//                     the only user of the WgDriver after setup(). Port mapping runs on a
//                     short-lived helper thread (the libraries block), joined by the loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/driver.h"
#include "control/mesh_config.h"
#include "control/portmap.h"
#include "control/stun.h"
#include "dataplane/ip.h"
#include "tun/netlink.h"

namespace meshwg::control {

enum class CandidateKind : uint8_t { kLocal, kWgStun, kStun, kUpnp, kNatPmp };
// "local", "wg-stun", "stun", "upnp", "nat-pmp": the kinds `meshwg status` prints.
const char* candidate_kind_name(CandidateKind k);

struct Candidate {
  CandidateKind kind;
  dataplane::Endpoint address;
  std::chrono::steady_clock::time_point confirmed;  // last time a source vouched for it
};

struct MeshOptions {
  std::string ifname;
  // Unix socket where the control plane serves its status as JSON ("" = none).
  std::string status_socket;
  std::chrono::seconds probe_interval{25};   // WG-STUN and STUN refresh (NAT UDP timeouts)
  std::chrono::seconds gather_interval{60};  // local addresses, besides rtnetlink events
  std::chrono::seconds portmap_interval{1800};
  bool portmap = true;
  PortMapOptions portmap_options;
  StunRetransmit stun_retransmit{std::chrono::milliseconds(250), 6, 4};
};

class MeshControl {
 public:
  MeshControl(const MeshConfig& cfg, WgDriver& driver, MeshOptions opts);
  ~MeshControl();
  MeshControl(const MeshControl&) = delete;
  MeshControl& operator=(const MeshControl&) = delete;

  // Configures the interface (MTU, addresses, up, routes to the peers' allowed IPs and the
  // WG-STUN addresses) and the device (key, port, peers, the WG-STUN server as a peer).
  // Resolves names. False with a message in err; what was applied stays applied.
  [[nodiscard]] bool setup(std::string& err);
  // Opens the control plane's sockets and starts its thread. False with a message in err.
  [[nodiscard]] bool start(std::string& err);
  void stop();  // idempotent; removes port mappings (bounded) and the status socket

  std::vector<Candidate> candidates() const;
  uint16_t listen_port() const { return listen_port_.load(); }
  uint16_t check_port() const { return check_port_; }
  // {"check_port": n, "candidates": [{kind, address, age_s}]}, what the status socket serves.
  nlohmann::json status_json() const;

 private:
  struct Probe {  // one STUN binding transaction at a time with one server, on one socket
    dataplane::Endpoint server;
    int fd = -1;
    CandidateKind kind = CandidateKind::kStun;
    StunTxid txid{};
    bool active = false;
    unsigned sent = 0;
    std::chrono::steady_clock::time_point started{}, next_round{};
    std::optional<dataplane::Endpoint> mapped;
    std::chrono::steady_clock::time_point mapped_at{};
  };
  using Clock = std::chrono::steady_clock;

  void run();
  void step_probe(Probe& p, Clock::time_point now);
  void on_datagram(int fd);
  void gather_local();
  void start_portmap(Clock::time_point now);
  void finish_portmap();
  void publish();  // rebuilds candidates_ from the sources
  void serve_status();
  Clock::time_point next_deadline(Clock::time_point now) const;

  MeshConfig cfg_;
  WgDriver& driver_;
  MeshOptions opts_;
  int ifindex_ = 0;
  std::atomic<uint16_t> listen_port_{0};
  uint16_t check_port_ = 0;
  int probe_fd_ = -1;   // WG-STUN: through the tunnel
  int check_fd_ = -1;   // plain STUN and, later, connectivity checks
  int status_fd_ = -1;
  int stop_fd_ = -1;
  tun::NetlinkMonitor monitor_;
  std::vector<Probe> probes_;
  std::vector<Candidate> local_;
  std::vector<PortMapping> portmaps_;
  Clock::time_point portmaps_at_{};
  std::future<std::vector<PortMapping>> portmap_job_;
  Clock::time_point next_portmap_{}, next_gather_{};
  bool changed_ = false;  // rtnetlink reported a change: gather again soon
  Clock::time_point changed_at_{};

  mutable std::mutex mu_;  // guards candidates_
  std::vector<Candidate> candidates_;
  std::thread thread_;
  bool started_ = false;
};

}  // namespace meshwg::control
