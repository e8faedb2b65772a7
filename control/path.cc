// The path to one mesh peer: checks, switch agreement, confirmation, bans, fallback (path.h).
#include "control/path.h"

#include <algorithm>
#include <span>

#include "crypto/primitives.h"

namespace meshwg::control {

namespace {

constexpr size_t kMaxPairs = 16;  // remote check candidates we ping per round

uint64_t ns_of(std::chrono::steady_clock::time_point t) {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

bool same_ip(const dataplane::Endpoint& a, const dataplane::Endpoint& b) {
  return a.ip() == b.ip();
}

unsigned common_prefix_bits(const dataplane::IpAddress& a, const dataplane::IpAddress& b) {
  if (a.family != b.family) return 0;
  const size_t n = a.family == 4 ? 4 : 16;
  unsigned bits = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t x = a.bytes[i] ^ b.bytes[i];
    if (x == 0) {
      bits += 8;
      continue;
    }
    for (int bit = 7; bit >= 0 && !(x >> bit & 1); --bit) ++bits;
    break;
  }
  return bits;
}

bool listed(const std::vector<PeerCandidate>& list, const dataplane::Endpoint& e) {
  return std::any_of(list.begin(), list.end(), [&](const PeerCandidate& c) {
    return c.for_wireguard && c.address.same_remote(e);
  });
}

}  // namespace

const char* path_state_name(PathState s) {
  switch (s) {
    case PathState::kRelayed: return "relayed";
    case PathState::kSwitching: return "switching";
    case PathState::kDirect: return "direct";
  }
  return "?";
}

PeerPath::PeerPath(bool controlling, PathTimers timers) : controlling_(controlling), t_(timers) {
  // Ids only need to differ between this run's pings and switches and an earlier run's.
  uint8_t r[8];
  crypto::random_bytes(r);
  next_id_ = 0;
  for (uint8_t b : r) next_id_ = next_id_ << 8 | b;
  next_id_ >>= 1;  // room to count up
}

void PeerPath::set_local(std::vector<PeerCandidate> mine) { local_ = std::move(mine); }

void PeerPath::set_remote(const std::vector<PeerCandidate>& theirs, Clock::time_point now) {
  if (theirs == remote_) return;
  remote_ = theirs;
  std::vector<Pair> fresh;
  for (const PeerCandidate& c : remote_) {
    if (c.for_wireguard || fresh.size() >= kMaxPairs) continue;
    Pair p;
    p.remote = c;
    for (const Pair& old : pairs_)
      if (old.remote == c) p = old;  // keep what we measured
    fresh.push_back(p);
  }
  pairs_ = std::move(fresh);
  restart_checks(now);
}

void PeerPath::restart_checks(Clock::time_point now) {
  fast_left_ = t_.fast_rounds;
  next_round_ = now;
  round_pos_ = pairs_.size();
}

// The peer's WireGuard candidate behind one of its check candidates: the same address, and
// for a reflexive one the WG-STUN mapping (or a port mapping) rather than a LAN address.
std::optional<dataplane::Endpoint> PeerPath::data_for(const PeerCandidate& check) const {
  const PeerCandidateKind order_local[] = {PeerCandidateKind::kLocal};
  const PeerCandidateKind order_public[] = {PeerCandidateKind::kWgStun, PeerCandidateKind::kUpnp,
                                            PeerCandidateKind::kNatPmp};
  const std::span<const PeerCandidateKind> order =
      check.kind == PeerCandidateKind::kLocal ? std::span<const PeerCandidateKind>(order_local)
                                              : std::span<const PeerCandidateKind>(order_public);
  for (PeerCandidateKind k : order)
    for (const PeerCandidate& c : remote_)
      if (c.for_wireguard && c.kind == k && same_ip(c.address, check.address)) return c.address;
  return std::nullopt;
}

// Which of our WireGuard candidates the peer should use on the pair: a LAN address on the
// LAN closest to the peer's, or our public mapping.
std::optional<dataplane::Endpoint> PeerPath::my_data_for(const PeerCandidate& remote_check) const {
  const dataplane::IpAddress rip = remote_check.address.ip();
  if (remote_check.kind == PeerCandidateKind::kLocal) {
    const PeerCandidate* best = nullptr;
    unsigned best_bits = 0;
    for (const PeerCandidate& c : local_) {
      if (!c.for_wireguard || c.kind != PeerCandidateKind::kLocal || c.address.ip().family != rip.family)
        continue;
      const unsigned bits = common_prefix_bits(c.address.ip(), rip);
      if (!best || bits > best_bits) {
        best = &c;
        best_bits = bits;
      }
    }
    if (best) return best->address;
    return std::nullopt;
  }
  for (PeerCandidateKind k :
       {PeerCandidateKind::kWgStun, PeerCandidateKind::kUpnp, PeerCandidateKind::kNatPmp})
    for (const PeerCandidate& c : local_)
      if (c.for_wireguard && c.kind == k && c.address.ip().family == rip.family) return c.address;
  return std::nullopt;
}

const PeerPath::Pair* PeerPath::best(Clock::time_point now) const {
  const Pair* b = nullptr;
  for (const Pair& p : pairs_) {
    if (!p.rtt || now - p.last_ok > t_.pair_fresh) continue;
    const auto yours = data_for(p.remote);
    const auto mine = my_data_for(p.remote);
    if (!yours || !mine || banned(*mine, *yours, now)) continue;
    if (!b) {
      b = &p;
      continue;
    }
    const auto diff = *p.rtt > *b->rtt ? *p.rtt - *b->rtt : *b->rtt - *p.rtt;
    if (diff <= t_.rtt_tie) {
      // A tie: the LAN pair wins (no NAT state to lose, no hairpin, no internet).
      const bool p_local = p.remote.kind == PeerCandidateKind::kLocal;
      const bool b_local = b->remote.kind == PeerCandidateKind::kLocal;
      if (p_local && !b_local) b = &p;
    } else if (*p.rtt < *b->rtt) {
      b = &p;
    }
  }
  return b;
}

bool PeerPath::banned(const dataplane::Endpoint& mine, const dataplane::Endpoint& yours,
                      Clock::time_point now) const {
  return std::any_of(bans_.begin(), bans_.end(), [&](const PathBan& b) {
    return b.until > now && b.mine.same_remote(mine) && b.yours.same_remote(yours);
  });
}

void PeerPath::ban(const dataplane::Endpoint& mine, const dataplane::Endpoint& yours,
                   Clock::time_point now) {
  PathBan* b = nullptr;
  for (PathBan& x : bans_)
    if (x.mine.same_remote(mine) && x.yours.same_remote(yours)) b = &x;
  if (!b) {
    bans_.push_back({mine, yours, now, 0});
    b = &bans_.back();
  }
  ++b->failures;
  auto ttl = std::chrono::duration_cast<std::chrono::seconds>(t_.ban_first);
  for (unsigned i = 1; i < b->failures && ttl < t_.ban_max; ++i) ttl *= 2;
  b->until = now + std::min(ttl, t_.ban_max);
}

std::vector<PathBan> PeerPath::bans(Clock::time_point now) const {
  std::vector<PathBan> out;
  for (const PathBan& b : bans_)
    if (b.until > now) out.push_back(b);
  return out;
}

void PeerPath::on_ping(const dataplane::Endpoint& from, const PeerPing& ping, PathActions& out) {
  out.check.emplace_back(from, PeerPong{ping.id, ping.sent_ns});
}

void PeerPath::on_pong(const dataplane::Endpoint& from, const PeerPong& pong,
                       Clock::time_point now) {
  const uint64_t now_ns = ns_of(now);
  if (pong.sent_ns > now_ns) return;  // from the future: not a time we sent
  if (pong.id == 0) {
    // The answer to a tunnel ping: the RTT of the WireGuard path itself, crypto included.
    if (state_ == PathState::kDirect) {
      const Clock::duration rtt = std::chrono::nanoseconds(now_ns - pong.sent_ns);
      tunnel_rtt_ = tunnel_rtt_ ? (*tunnel_rtt_ * 3 + rtt) / 4 : rtt;
    }
    return;
  }
  for (Pair& p : pairs_) {
    // The answer must come from the address we asked: one from elsewhere says the peer's
    // NAT maps per destination, and the pair's data candidate would be wrong.
    if (!p.remote.address.same_remote(from)) continue;
    // Pongs of the last few rounds count (a slow path answers after the next ping left).
    if (std::find(p.recent.begin(), p.recent.end(), pong.id) == p.recent.end()) continue;
    const auto rtt = std::chrono::nanoseconds(now_ns - pong.sent_ns);
    p.rtt = p.rtt ? (*p.rtt * 3 + Clock::duration(rtt)) / 4 : Clock::duration(rtt);
    p.last_ok = now;
    return;
  }
}

void PeerPath::begin_switch(const Switch& s, Clock::time_point now, PathActions& out) {
  current_ = s;
  current_->at = now;
  proposed_.reset();
  state_ = PathState::kSwitching;
  rx_base_.reset();
  next_tunnel_ping_ = now;
  ++upgrades_;
  out.set_endpoint = std::optional<dataplane::Endpoint>(s.yours);
}

void PeerPath::give_up(bool tell_peer, Clock::time_point now, PathActions& out) {
  if (!current_) return;
  if (tell_peer) out.relay.push_back(PeerSwitchConfirm{current_->id, false});
  if (state_ == PathState::kDirect) {
    ++fallbacks_;
    // A path that served for a good while and then broke is a changed network, not a pair
    // that never works: its ban starts small again.
    if (now - direct_since_ >= t_.ban_forgiven_after)
      for (PathBan& b : bans_)
        if (b.mine.same_remote(current_->mine) && b.yours.same_remote(current_->yours))
          b.failures = 0;
  }
  ban(current_->mine, current_->yours, now);
  state_ = PathState::kRelayed;
  current_.reset();
  tunnel_rtt_.reset();
  out.set_endpoint = std::optional<dataplane::Endpoint>();
  // Old answers proved the pair worked then; only new ones count now.
  for (Pair& p : pairs_) p.last_ok = {};
  restart_checks(now);
}

void PeerPath::on_relay_message(const PeerMessage& m, Clock::time_point now, PathActions& out) {
  if (const auto* p = std::get_if<PeerSwitchProposal>(&m)) {
    // From the peer's view: "mine" is its endpoint, "yours" ours.
    const bool dup = current_ && current_->id == p->id;
    bool ok = !controlling_ && listed(remote_, p->mine) && listed(local_, p->yours);
    ok = ok && (dup || (state_ == PathState::kRelayed && !banned(p->yours, p->mine, now)));
    out.relay.push_back(PeerSwitchAck{p->id, ok});
    if (ok && !dup) begin_switch({p->id, p->yours, p->mine, now}, now, out);
  } else if (const auto* a = std::get_if<PeerSwitchAck>(&m)) {
    if (!proposed_ || a->id != proposed_->id || state_ != PathState::kRelayed) return;
    const Switch s = *proposed_;
    proposed_.reset();
    if (a->accept)
      begin_switch(s, now, out);
    else
      ban(s.mine, s.yours, now);
  } else if (const auto* c = std::get_if<PeerSwitchConfirm>(&m)) {
    if (current_ && c->id == current_->id && !c->ok)
      give_up(false, now, out);  // the peer gave up on the path
  } else if (std::holds_alternative<PeerBye>(m)) {
    give_up(false, now, out);  // the peer left
  }
}

void PeerPath::on_counters(uint64_t rx_bytes, bool endpoint_is_relay, bool session,
                           Clock::time_point now, PathActions& out) {
  session_ = session;
  if (endpoint_is_relay && state_ != PathState::kRelayed) {
    // The device went back to the loopback socket: a WireGuard packet the relay delivered
    // just before the switch reached it after, and it roamed. Point it at the path again
    // (the peer, if it really left the path, says so over the relay; silence is caught by
    // the timers).
    out.set_endpoint = direct_endpoint();
    ++repoints_;
    return;
  }
  if (state_ == PathState::kSwitching) {
    if (!rx_base_) {
      rx_base_ = rx_bytes;
    } else if (rx_bytes > *rx_base_) {
      state_ = PathState::kDirect;
      direct_since_ = now;
      rx_last_ = rx_bytes;
      rx_changed_ = now;
      next_tunnel_ping_ = now + t_.liveness;
      out.relay.push_back(PeerSwitchConfirm{current_->id, true});
    }
  } else if (state_ == PathState::kDirect) {
    if (rx_bytes != rx_last_) {
      rx_last_ = rx_bytes;
      rx_changed_ = now;
    }
  }
}

void PeerPath::tick(Clock::time_point now, PathActions& out) {
  switch (state_) {
    case PathState::kRelayed: {
      if (round_pos_ >= pairs_.size() && !pairs_.empty() && now >= next_round_) {
        round_pos_ = 0;
        next_ping_ = now;
        next_round_ = now + (fast_left_ > 0 ? t_.fast_round : t_.slow_round);
        if (fast_left_ > 0) --fast_left_;
      }
      while (round_pos_ < pairs_.size() && now >= next_ping_) {
        Pair& p = pairs_[round_pos_++];
        std::rotate(p.recent.rbegin(), p.recent.rbegin() + 1, p.recent.rend());
        p.recent[0] = ++next_id_;
        out.check.emplace_back(p.remote.address, PeerPing{p.recent[0], ns_of(now)});
        ++checks_sent_;
        last_ping_ = now;
        next_ping_ = now + t_.check_pacing;
      }
      if (proposed_ && now - proposed_->at >= t_.ack_timeout) {
        ban(proposed_->mine, proposed_->yours, now);
        proposed_.reset();
      }
      if (controlling_ && !proposed_ && round_pos_ >= pairs_.size()) {
        // Wait until every pair that could beat the best one has had time to answer the
        // round's pings: a faster pair answers within the best RTT of its ping.
        const Pair* b = best(now);
        if (b && !session_ && now >= next_tunnel_ping_) {
          // Traffic through the tunnel makes the device start its handshake (over the relay).
          out.tunnel_ping = true;
          next_tunnel_ping_ = now + t_.liveness;
        }
        if (b && session_ && now >= last_ping_ + *b->rtt + t_.rtt_tie) {
          Switch s{++next_id_, *my_data_for(b->remote), *data_for(b->remote), now};
          proposed_ = s;
          out.relay.push_back(PeerSwitchProposal{s.id, s.mine, s.yours, 0});
        }
      }
      break;
    }
    case PathState::kSwitching:
      if (now - current_->at >= t_.confirm_timeout) {
        give_up(true, now, out);  // no data on the new path
        break;
      }
      if (now >= next_tunnel_ping_) {
        out.tunnel_ping = true;
        next_tunnel_ping_ = now + t_.switch_ping;
      }
      break;
    case PathState::kDirect:
      if (now - rx_changed_ >= t_.dead_after) {
        give_up(true, now, out);  // no data on the direct path
        break;
      }
      if (now >= next_tunnel_ping_) {
        out.tunnel_ping = true;
        next_tunnel_ping_ = now + t_.liveness;
      }
      break;
  }
}

PeerPath::Clock::time_point PeerPath::next_deadline(Clock::time_point now) const {
  Clock::time_point t = now + std::chrono::seconds(1);
  switch (state_) {
    case PathState::kRelayed:
      if (!pairs_.empty()) t = std::min(t, round_pos_ < pairs_.size() ? next_ping_ : next_round_);
      if (proposed_) t = std::min(t, proposed_->at + t_.ack_timeout);
      // As in tick(): the proposal (and the handshake poke) wait for the end of the round.
      if (controlling_ && !proposed_ && round_pos_ >= pairs_.size())
        if (const Pair* b = best(now))
          t = std::min(t, session_ ? last_ping_ + *b->rtt + t_.rtt_tie : next_tunnel_ping_);
      break;
    case PathState::kSwitching:
      t = std::min({t, current_->at + t_.confirm_timeout, next_tunnel_ping_});
      break;
    case PathState::kDirect:
      t = std::min({t, rx_changed_ + t_.dead_after, next_tunnel_ping_});
      break;
  }
  return std::max(t, now);
}

std::chrono::milliseconds PeerPath::counters_interval() const {
  switch (state_) {
    case PathState::kSwitching: return std::chrono::milliseconds(50);
    case PathState::kDirect: return std::chrono::milliseconds(500);
    case PathState::kRelayed:
      // Only the session matters here; until there is one, it is awaited eagerly.
      return std::chrono::milliseconds(session_ ? 1000 : 100);
  }
  return std::chrono::milliseconds(1000);
}

std::optional<double> PeerPath::rtt_ms(Clock::time_point now) const {
  auto ms = [](Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  };
  if (state_ == PathState::kDirect && tunnel_rtt_) return ms(*tunnel_rtt_);
  if (current_)
    for (const Pair& p : pairs_)
      if (p.rtt && data_for(p.remote) && data_for(p.remote)->same_remote(current_->yours))
        return ms(*p.rtt);
  std::optional<double> r;
  for (const Pair& p : pairs_)
    if (p.rtt && now - p.last_ok <= t_.pair_fresh && (!r || ms(*p.rtt) < *r)) r = ms(*p.rtt);
  return r;
}

}  // namespace meshwg::control
