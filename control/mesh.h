// Mesh mode's control plane (DESIGN.md "Traversal"): sets up the interface from the mesh
// config (addresses, MTU, routes over rtnetlink; keys and peers through the WgDriver, i.e.
// the standard set/get only), then gathers this node's endpoint candidates on its own thread:
// local addresses (rtnetlink), the WireGuard socket's public mapping by WG-STUN (a STUN
// binding request from an ordinary socket to the WG-STUN server's reserved tunnel address, so
// the data plane carries it like any packet), the check socket's mapping by plain STUN
// (RFC 8489), and UPnP-IGD / NAT-PMP port mappings. Refreshed on rtnetlink events and
// periodically.
//
// Relayed data path: a [Peer] without Endpoint gets, as its WireGuard endpoint, a loopback UDP
// socket of the control plane (127.0.0.1:port). What the data plane sends there (already
// encrypted WireGuard messages) goes to that peer over the relay's TCP connection, and what
// the relay delivers from that peer is sent from the same socket to the WireGuard port, so
// the device sees the peer at that loopback endpoint. Relay payloads start with a tag byte
// (kRelayTagWireGuard), so sealed control messages can share the connection.
//
// Threads:
//   caller            setup() (before start()), candidates()/status_json() from any thread
//   control thread    run(): one poll loop over the rtnetlink monitor, the WG-STUN probe
//                     socket, the check socket, the status socket, the relay connection and
//                     the per-peer relay sockets, and a stop eventfd; it is
//                     the only user of the WgDriver after setup(). Port mapping runs on a
//                     short-lived helper thread (the libraries block), joined by the loop.
#pragma once

#include <array>
#include <atomic>
#include <sys/socket.h>
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
#include "control/path.h"
#include "control/mesh_config.h"
#include "control/portmap.h"
#include "control/peer_message.h"
#include "control/relay_client.h"
#include "control/sealed.h"
#include "control/stun.h"
#include "dataplane/ip.h"
#include "tun/netlink.h"

namespace meshwg::control {

// First byte of every payload this node sends over the relay.
inline constexpr uint8_t kRelayTagWireGuard = 0x00;  // a WireGuard message, as the device sent it
inline constexpr uint8_t kRelayTagSealed = 0x01;     // a sealed control message (control/sealed.h)

// Check-socket datagrams: magic "MWC", version 1, the sender's key id (the first 8 bytes of
// BLAKE2s-256 of its public key, so the receiver finds the channel without trying them all),
// then a box sealed on the pair's check-socket channel. STUN messages (first two bits zero)
// never start with 'M'.
inline constexpr uint8_t kCheckMagic[4] = {'M', 'W', 'C', 1};
inline constexpr size_t kCheckKeyIdSize = 8;
inline constexpr size_t kCheckHeaderSize = sizeof(kCheckMagic) + kCheckKeyIdSize;
using CheckKeyId = std::array<uint8_t, kCheckKeyIdSize>;
[[nodiscard]] CheckKeyId check_key_id(const crypto::PublicKey& key);

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
  bool relay_up() const { return relay_up_.load(); }
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
  struct RelayedPeer {  // a [Peer] without Endpoint, reached over the relay for now
    crypto::PublicKey key{};
    int fd = -1;  // 127.0.0.1:port, the peer's WireGuard endpoint
    uint16_t port = 0;
    uint64_t to_relay = 0, from_relay = 0, dropped = 0;
    // End to end with the peer over the relay (control/sealed.h): our candidates go out,
    // theirs come in; the relay sees only boxes.
    std::optional<SealedChannel> channel;
    std::vector<PeerCandidate> remote;  // the peer's latest list
    bool owe_list = false;  // it said hello: send our list
    std::vector<uint8_t> last_initiation;  // tagged, as sent over the relay
    Clock::time_point last_initiation_at{};
    // Direct paths: checks and pings on the check socket (their own sealed channel), the
    // state machine, and where to ping through the tunnel.
    std::optional<SealedChannel> check_channel;
    std::optional<PeerPath> path;
    CheckKeyId check_id{};
    std::optional<dataplane::IpAddress> tunnel_ip;  // a host route in its AllowedIPs
    uint16_t keepalive = 0;                          // configured PersistentKeepalive
    uint64_t relayed_while_direct = 0;               // relay WireGuard packets dropped
    PathState shown = PathState::kRelayed;           // last state logged
  };
  struct PeerView {  // what status_json() shows of a relayed peer
    crypto::PublicKey key{};
    std::vector<PeerCandidate> candidates;
    PathState state = PathState::kRelayed;
    std::optional<double> rtt_ms;
    uint64_t upgrades = 0, fallbacks = 0;
    std::vector<PathBan> bans;
  };

  void run();
  void step_probe(Probe& p, Clock::time_point now);
  void on_datagram(int fd);
  void gather_local();
  void start_portmap(Clock::time_point now);
  void finish_portmap();
  void publish();  // rebuilds candidates_ from the sources
  void serve_status();
  void on_relayed_datagram(RelayedPeer& p);
  void on_relay_payload(const crypto::PublicKey& src, std::span<const uint8_t> payload);
  void on_peer_message(RelayedPeer& p, std::span<const uint8_t> box);
  void send_candidates();  // to every peer when announce_, else to those owed a list
  std::vector<PeerCandidate> announced() const;  // our candidates as peers get them
  void on_check_datagram(const dataplane::Endpoint& from, std::span<const uint8_t> d);
  void apply(RelayedPeer& p, PathActions& out);
  void send_check(RelayedPeer& p, const dataplane::Endpoint& to, const PeerMessage& m);
  void send_sealed(RelayedPeer& p, const PeerMessage& m);
  void step_paths(Clock::time_point now);
  void update_views();
  Clock::time_point next_deadline(Clock::time_point now) const;

  MeshConfig cfg_;
  WgDriver& driver_;
  MeshOptions opts_;
  int ifindex_ = 0;
  std::atomic<uint16_t> listen_port_{0};
  uint16_t check_port_ = 0;
  int check_family_ = AF_INET6;  // of check_fd_
  crypto::PublicKey me_{};
  CheckKeyId my_check_id_{};  // of me_, in every check datagram we send
  int probe_fd_ = -1;   // WG-STUN: through the tunnel
  int check_fd_ = -1;   // plain STUN and, later, connectivity checks
  int status_fd_ = -1;
  int stop_fd_ = -1;
  tun::NetlinkMonitor monitor_;
  std::vector<Probe> probes_;
  std::vector<RelayedPeer> relayed_;
  std::unique_ptr<RelayClient> relay_;
  std::atomic<bool> relay_up_{false};
  bool hello_ = false;     // the relay came (back) up: ask peers for their lists
  bool announce_ = false;  // candidates changed or the relay came (back) up: send them
  uint32_t generation_ = 0;
  std::vector<Candidate> local_;
  std::vector<PortMapping> portmaps_;
  Clock::time_point portmaps_at_{};
  std::future<std::vector<PortMapping>> portmap_job_;
  Clock::time_point next_portmap_{}, next_gather_{};
  bool changed_ = false;  // rtnetlink reported a change: gather again soon
  Clock::time_point changed_at_{};

  Clock::time_point next_counters_{};

  mutable std::mutex mu_;  // guards candidates_ and views_
  std::vector<Candidate> candidates_;
  std::vector<PeerView> views_;
  std::thread thread_;
  bool started_ = false;
};

}  // namespace meshwg::control
