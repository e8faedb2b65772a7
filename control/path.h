// The path to one mesh peer (DESIGN.md "Traversal"): connectivity checks between our check
// socket and the peer's check-socket candidates, the agreement to move the WireGuard endpoint
// from the relay to the best working direct pair, its confirmation, bans of pairs that failed,
// and the fallback to the relay when a direct path goes quiet. In the spirit of ICE
// (RFC 8445: a controlling side nominates, checks are paced, RTT orders the pairs), much
// smaller: one check socket per node, and the pair checked is mapped to the WireGuard
// sockets' candidates on the same addresses.
//
// Sans-I/O and single-threaded (the control thread owns it): messages and device counters in,
// PathActions out; the owner seals, sends and reconfigures the device. Times are injected.
//
//   relayed ──(controlling: best pair works → Proposal; controlled: accepts a Proposal)──▶
//   switching ──(rx from the peer on the new endpoint within confirm_timeout)──▶ direct
//   switching ──(no rx / peer says it failed)──▶ relayed, pair banned (TTL doubles)
//   direct ──(no rx for dead_after / the device went back to the relay / peer gave up)──▶
//   relayed, pair banned, checks resume
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "control/peer_message.h"
#include "dataplane/ip.h"

namespace meshwg::control {

enum class PathState : uint8_t { kRelayed, kSwitching, kDirect };
// "relayed", "switching", "direct".
[[nodiscard]] const char* path_state_name(PathState s);

struct PathTimers {
  std::chrono::milliseconds check_pacing{10};  // between two pings of one round
  std::chrono::milliseconds fast_round{200};   // after new candidates or a fallback ...
  unsigned fast_rounds = 15;                   // ... this many rounds, then
  std::chrono::milliseconds slow_round{2000};  // this cadence while relayed
  std::chrono::milliseconds pair_fresh{3000};  // a pong this recent makes a pair "working"
  std::chrono::milliseconds ack_timeout{2000};
  std::chrono::milliseconds confirm_timeout{3000};
  std::chrono::milliseconds switch_ping{200};  // tunnel pings while confirming
  std::chrono::milliseconds liveness{1000};    // tunnel pings while direct, and (to start a
                                               // handshake) while relayed without a session
  std::chrono::milliseconds dead_after{4000};  // direct without rx this long: fall back
  std::chrono::seconds ban_first{5};
  std::chrono::seconds ban_max{300};
  // A ban's failure count starts over after a direct path on the pair lasted this long.
  std::chrono::seconds ban_forgiven_after{60};
  // Two RTTs this close are a tie, which a LAN (local) pair wins.
  std::chrono::microseconds rtt_tie{1000};
};

// What the owner must do after a call.
struct PathActions {
  // Sealed on the check-socket channel, sent from the check socket to the endpoint.
  std::vector<std::pair<dataplane::Endpoint, PeerMessage>> check;
  // Sealed on the relay channel, sent to the peer over the relay.
  std::vector<PeerMessage> relay;
  // Point the device's peer at this endpoint (and make it send at once); nullopt inside:
  // back to the relay's loopback endpoint.
  std::optional<std::optional<dataplane::Endpoint>> set_endpoint;
  // Send a sealed ping through the tunnel (to the peer's tunnel address and check port), so
  // data flows on the WireGuard path whatever the applications do.
  bool tunnel_ping = false;
};

struct PathBan {
  dataplane::Endpoint mine, yours;  // data-plane endpoints: ours, the peer's
  std::chrono::steady_clock::time_point until;
  unsigned failures = 0;
};

class PeerPath {
 public:
  using Clock = std::chrono::steady_clock;
  // controlling: this side proposes (the lower public key, decided by the owner).
  explicit PeerPath(bool controlling, PathTimers timers = {});

  // Our own candidates as we announce them (data-plane and check socket).
  void set_local(std::vector<PeerCandidate> mine);
  // The peer's latest list. A changed list restarts the fast check rounds.
  void set_remote(const std::vector<PeerCandidate>& theirs, Clock::time_point now);
  // A ping on the check socket (or through the tunnel): answer it where it came from.
  void on_ping(const dataplane::Endpoint& from, const PeerPing& ping, PathActions& out);
  void on_pong(const dataplane::Endpoint& from, const PeerPong& pong, Clock::time_point now);
  // A sealed message from the peer over the relay (not Candidates: set_remote gets those).
  void on_relay_message(const PeerMessage& m, Clock::time_point now, PathActions& out);
  // The device's view of this peer: its rx byte counter, whether its endpoint is still the
  // relay's loopback socket, and whether it has a usable session (a handshake less than
  // REJECT_AFTER_TIME ago). No switch is proposed without a session: a handshake caught
  // half-way by the switch would wait REKEY_TIMEOUT (5 s) for its retry on the new path.
  void on_counters(uint64_t rx_bytes, bool endpoint_is_relay, bool session, Clock::time_point now,
                   PathActions& out);
  void tick(Clock::time_point now, PathActions& out);
  Clock::time_point next_deadline(Clock::time_point now) const;

  PathState state() const { return state_; }
  bool controlling() const { return controlling_; }
  // While not relayed, WireGuard packets the relay still delivers would pull the device's
  // endpoint back to the loopback socket: the owner drops them.
  bool accepts_relayed_wireguard() const { return state_ == PathState::kRelayed; }
  // How often the owner polls the device counters: eagerly while switching or while a relayed
  // session is awaited, slowly otherwise.
  std::chrono::milliseconds counters_interval() const;
  std::optional<dataplane::Endpoint> direct_endpoint() const {
    return current_ ? std::optional(current_->yours) : std::nullopt;
  }
  // RTT in milliseconds: while direct, of the tunnel pings' round trips (else of the check
  // pair in use); while relayed, of the best working check pair.
  std::optional<double> rtt_ms(Clock::time_point now) const;
  std::vector<PathBan> bans(Clock::time_point now) const;
  uint64_t upgrades() const { return upgrades_; }
  uint64_t fallbacks() const { return fallbacks_; }
  uint64_t checks_sent() const { return checks_sent_; }
  uint64_t repoints() const { return repoints_; }

 private:
  struct Pair {  // our check socket → one check candidate of the peer
    PeerCandidate remote;
    std::array<uint64_t, 4> recent{};  // ids of the last pings sent, newest first
    Clock::time_point last_ok{};
    std::optional<Clock::duration> rtt;
  };
  struct Switch {
    uint64_t id = 0;
    dataplane::Endpoint mine, yours;
    Clock::time_point at{};
  };

  std::optional<dataplane::Endpoint> data_for(const PeerCandidate& check) const;
  std::optional<dataplane::Endpoint> my_data_for(const PeerCandidate& remote_check) const;
  const Pair* best(Clock::time_point now) const;
  bool banned(const dataplane::Endpoint& mine, const dataplane::Endpoint& yours,
              Clock::time_point now) const;
  void ban(const dataplane::Endpoint& mine, const dataplane::Endpoint& yours,
           Clock::time_point now);
  void begin_switch(const Switch& s, Clock::time_point now, PathActions& out);
  void give_up(bool tell_peer, Clock::time_point now, PathActions& out);
  void restart_checks(Clock::time_point now);

  bool controlling_;
  PathTimers t_;
  PathState state_ = PathState::kRelayed;
  std::vector<PeerCandidate> local_;
  std::vector<PeerCandidate> remote_;  // data-plane and check candidates of the peer
  std::vector<Pair> pairs_;            // one per remote check candidate
  uint64_t next_id_;

  // Check rounds: the round's pings go out one per check_pacing.
  Clock::time_point next_round_{};
  unsigned fast_left_ = 0;
  size_t round_pos_ = 0;  // next pair to ping in the current round (== size: round done)
  Clock::time_point next_ping_{};
  Clock::time_point last_ping_{};

  std::optional<Switch> proposed_;  // controlling: waiting for the ack
  std::optional<Switch> current_;   // switching or direct: the pair in use
  std::optional<uint64_t> rx_base_;  // first rx counter seen since the switch
  uint64_t rx_last_ = 0;
  bool session_ = false;
  std::optional<Clock::duration> tunnel_rtt_;  // tunnel pings' answers, while direct
  Clock::time_point rx_changed_{};
  Clock::time_point direct_since_{};
  Clock::time_point next_tunnel_ping_{};
  std::vector<PathBan> bans_;
  uint64_t upgrades_ = 0, fallbacks_ = 0, checks_sent_ = 0, repoints_ = 0;
};

}  // namespace meshwg::control
