// PeerPath (control/path.h) between two simulated nodes: a model network decides which check
// pings arrive and with what delay, whether WireGuard data flows on a pair of endpoints, and
// delivers relay messages; the two state machines must agree on the same direct pair, prefer
// a LAN pair on ties, ban failing pairs with growing TTLs, and fall back and recover.
#include "control/path.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

using namespace meshwg;
using namespace meshwg::control;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using dataplane::Endpoint;

namespace {

Endpoint ep(const char* s) { return *Endpoint::parse(s); }

PeerCandidate cand(PeerCandidateKind k, const char* addr, bool wg) {
  PeerCandidate c;
  c.kind = k;
  c.address = ep(addr);
  c.for_wireguard = wg;
  return c;
}

// A node behind a NAT: LAN address, public address, WireGuard port 51000, check port 40000
// (public ports as the NAT maps them).
struct NodeSpec {
  const char* lan_wg;
  const char* lan_check;
  const char* pub_wg;
  const char* pub_check;
};

std::vector<PeerCandidate> candidates_of(const NodeSpec& s) {
  return {cand(PeerCandidateKind::kLocal, s.lan_wg, true),
          cand(PeerCandidateKind::kLocal, s.lan_check, false),
          cand(PeerCandidateKind::kWgStun, s.pub_wg, true),
          cand(PeerCandidateKind::kStun, s.pub_check, false)};
}

struct Node {
  NodeSpec spec;
  PeerPath path;
  std::optional<Endpoint> endpoint;  // nullopt: the relay
  uint64_t rx = 0;
  std::vector<PeerMessage> relay_sent;
  uint64_t tunnel_pings = 0;
};

struct Sim {
  Node a, b;  // a controls
  Clock::time_point now = Clock::time_point() + 1000s;
  // Does a check ping from `from` reach the address `to`, and after how long (one way)?
  std::function<std::optional<Clock::duration>(const Endpoint& to)> check_path;
  // Does WireGuard data flow when a points at ea and b at eb?
  std::function<bool(const Endpoint& ea, const Endpoint& eb)> data_ok;
  struct Pending {
    Clock::time_point at;
    bool to_a;
    Endpoint from;
    PeerMessage msg;
  };
  std::vector<Pending> wire;
  bool session = true;  // the device has a WireGuard session with the peer

  Sim(NodeSpec sa, NodeSpec sb, PathTimers t = {})
      : a{sa, PeerPath(true, t), {}, 0, {}, 0}, b{sb, PeerPath(false, t), {}, 0, {}, 0} {
    a.path.set_local(candidates_of(sa));
    b.path.set_local(candidates_of(sb));
    a.path.set_remote(candidates_of(sb), now);
    b.path.set_remote(candidates_of(sa), now);
    check_path = [](const Endpoint&) { return std::optional<Clock::duration>(5ms); };
    data_ok = [](const Endpoint&, const Endpoint&) { return true; };
  }

  // The address a check from `self` to `to` comes from: its LAN address on the LAN, its
  // public mapping otherwise.
  static Endpoint source_for(const Node& self, const Node& other, const Endpoint& to) {
    return to.same_remote(ep(other.spec.lan_check)) ? ep(self.spec.lan_check)
                                                   : ep(self.spec.pub_check);
  }

  void apply(Node& self, Node& other, bool self_is_a, PathActions& out) {
    for (auto& [to, msg] : out.check) {
      const auto delay = check_path(to);
      if (!delay) continue;
      wire.push_back({now + *delay, !self_is_a, source_for(self, other, to), msg});
    }
    for (auto& m : out.relay) {
      self.relay_sent.push_back(m);
      PathActions back;
      other.path.on_relay_message(m, now, back);
      apply(other, self, !self_is_a, back);
    }
    if (out.set_endpoint) self.endpoint = *out.set_endpoint;
    self.tunnel_pings += out.tunnel_ping;
    out = {};
  }

  void step(Clock::duration dt = 5ms) {
    now += dt;
    for (size_t i = 0; i < wire.size();) {
      if (wire[i].at > now) {
        ++i;
        continue;
      }
      Pending p = wire[i];
      wire.erase(wire.begin() + long(i));
      Node& dst = p.to_a ? a : b;
      Node& src = p.to_a ? b : a;
      PathActions out;
      if (const auto* ping = std::get_if<PeerPing>(&p.msg)) {
        dst.path.on_ping(p.from, *ping, out);
        apply(dst, src, p.to_a, out);
      } else if (const auto* pong = std::get_if<PeerPong>(&p.msg)) {
        dst.path.on_pong(p.from, *pong, now);
      }
    }
    if (a.endpoint && b.endpoint && data_ok(*a.endpoint, *b.endpoint)) {
      a.rx += 100;
      b.rx += 100;
    }
    for (int i = 0; i < 2; ++i) {
      Node& self = i == 0 ? a : b;
      Node& other = i == 0 ? b : a;
      PathActions out;
      self.path.on_counters(self.rx, !self.endpoint, session, now, out);
      apply(self, other, i == 0, out);
      self.path.tick(now, out);
      apply(self, other, i == 0, out);
    }
  }
  // Runs until both are in state s or the time is up; true if reached.
  bool run_until(PathState s, Clock::duration limit) {
    const auto end = now + limit;
    while (now < end) {
      step();
      if (a.path.state() == s && b.path.state() == s) return true;
    }
    return false;
  }
  void run_for(Clock::duration d) {
    const auto end = now + d;
    while (now < end) step();
  }
};

const NodeSpec kA{"10.1.0.2:51000", "10.1.0.2:40000", "198.51.100.1:51000", "198.51.100.1:40000"};
const NodeSpec kB{"10.2.0.2:51000", "10.2.0.2:40001", "198.51.101.1:51000", "198.51.101.1:40001"};
// Both behind one NAT: same public address, different mapped ports.
const NodeSpec kB_same_lan{"10.1.0.3:51000", "10.1.0.3:40001", "198.51.100.1:1024",
                           "198.51.100.1:1025"};

bool is_lan(const Endpoint& e) { return e.ip().bytes[0] == 10; }

TEST(PeerPath, BothOnTheInternetGoDirectOnTheirPublicMappings) {
  Sim s(kA, kB);
  // Different LANs do not reach each other; the public addresses do.
  s.check_path = [](const Endpoint& to) -> std::optional<Clock::duration> {
    if (is_lan(to)) return std::nullopt;
    return 5ms;
  };
  ASSERT_TRUE(s.run_until(PathState::kDirect, 2s));
  ASSERT_TRUE(s.a.endpoint && s.b.endpoint);
  EXPECT_EQ(s.a.endpoint->str(), kB.pub_wg);
  EXPECT_EQ(s.b.endpoint->str(), kA.pub_wg);
  EXPECT_EQ(s.a.path.upgrades(), 1u);
  EXPECT_EQ(s.b.path.upgrades(), 1u);
  ASSERT_TRUE(s.a.path.rtt_ms(s.now));
  EXPECT_NEAR(*s.a.path.rtt_ms(s.now), 10.0, 1.0);  // 5 ms each way
  EXPECT_TRUE(s.a.path.bans(s.now).empty());
  EXPECT_FALSE(s.a.path.accepts_relayed_wireguard());
  // Only the controlling side proposes; the other confirmed as well.
  bool b_proposed = false, b_confirmed = false;
  for (const auto& m : s.b.relay_sent) {
    b_proposed = b_proposed || std::holds_alternative<PeerSwitchProposal>(m);
    if (const auto* c = std::get_if<PeerSwitchConfirm>(&m)) b_confirmed = b_confirmed || c->ok;
  }
  EXPECT_FALSE(b_proposed);
  EXPECT_TRUE(b_confirmed);
  // And stays direct while data flows.
  s.run_for(20s);
  EXPECT_EQ(s.a.path.state(), PathState::kDirect);
  EXPECT_EQ(s.a.path.upgrades(), 1u);
}

TEST(PeerPath, NoSwitchBeforeTheRelayedSessionExists) {
  Sim s(kA, kB);
  s.session = false;
  s.run_for(3s);
  const uint64_t pokes = s.a.tunnel_pings;
  EXPECT_EQ(s.a.path.state(), PathState::kRelayed);
  EXPECT_EQ(s.a.path.upgrades(), 0u);
  EXPECT_TRUE(s.a.relay_sent.empty()) << "no proposal";
  EXPECT_GE(pokes, 2u) << "tunnel pings to start the handshake, once a second";
  EXPECT_LE(pokes, 4u);
  s.session = true;
  EXPECT_TRUE(s.run_until(PathState::kDirect, 2s));
}

TEST(PeerPath, LanPairWinsATie) {
  Sim s(kA, kB_same_lan);
  s.check_path = [](const Endpoint&) -> std::optional<Clock::duration> { return 200us; };
  // The public pair first, so that list order alone would pick it: only the tie-break can
  // make the LAN pair win.
  auto remote = candidates_of(kB_same_lan);
  std::reverse(remote.begin(), remote.end());
  s.a.path.set_remote(remote, s.now);
  ASSERT_TRUE(s.run_until(PathState::kDirect, 2s));
  EXPECT_EQ(s.a.endpoint->str(), kB_same_lan.lan_wg);
  EXPECT_EQ(s.b.endpoint->str(), kA.lan_wg);
}

TEST(PeerPath, LowerRttWinsOverLan) {
  Sim s(kA, kB_same_lan);
  // A contrived network where the LAN is slow: RTT decides when it is not a tie.
  s.check_path = [](const Endpoint& to) -> std::optional<Clock::duration> {
    return is_lan(to) ? 20ms : 2ms;
  };
  ASSERT_TRUE(s.run_until(PathState::kDirect, 2s));
  EXPECT_EQ(s.a.endpoint->str(), kB_same_lan.pub_wg);
}

TEST(PeerPath, NoWorkingPairStaysRelayedWithoutProposals) {
  Sim s(kA, kB);
  s.check_path = [](const Endpoint&) -> std::optional<Clock::duration> { return std::nullopt; };
  s.run_for(30s);
  EXPECT_EQ(s.a.path.state(), PathState::kRelayed);
  EXPECT_EQ(s.b.path.state(), PathState::kRelayed);
  EXPECT_EQ(s.a.path.upgrades(), 0u);
  EXPECT_TRUE(s.a.relay_sent.empty());
  EXPECT_FALSE(s.a.endpoint);
  EXPECT_TRUE(s.a.path.accepts_relayed_wireguard());
  // Checks stayed paced: fast rounds, then one round per slow_round.
  const PathTimers t;
  const uint64_t rounds = t.fast_rounds + 30s / t.slow_round + 2;
  EXPECT_LE(s.a.path.checks_sent(), rounds * 2);  // two check candidates per round
  EXPECT_GE(s.a.path.checks_sent(), 2 * (t.fast_rounds + 10));
}

TEST(PeerPath, ChecksPassButDataFailsBansWithGrowingTtl) {
  Sim s(kA, kB);
  s.check_path = [](const Endpoint& to) -> std::optional<Clock::duration> {
    if (is_lan(to)) return std::nullopt;
    return 5ms;
  };
  s.data_ok = [](const Endpoint&, const Endpoint&) { return false; };
  std::vector<unsigned> failures;
  std::vector<int64_t> ttls;
  for (int round = 0; round < 4; ++round) {
    const uint64_t before = s.a.path.upgrades();
    for (int i = 0; i < 20000 && s.a.path.upgrades() == before; ++i) s.step();
    ASSERT_GT(s.a.path.upgrades(), before) << round;
    for (int i = 0; i < 2000 && s.a.path.state() != PathState::kRelayed; ++i) s.step();
    ASSERT_EQ(s.a.path.state(), PathState::kRelayed);
    EXPECT_FALSE(s.a.endpoint) << "reverted to the relay";
    const auto bans = s.a.path.bans(s.now);
    ASSERT_EQ(bans.size(), 1u);
    EXPECT_EQ(bans[0].yours.str(), kB.pub_wg);
    failures.push_back(bans[0].failures);
    ttls.push_back(std::chrono::duration_cast<std::chrono::seconds>(bans[0].until - s.now).count());
  }
  EXPECT_EQ(failures, (std::vector<unsigned>{1, 2, 3, 4}));
  for (size_t i = 1; i < ttls.size(); ++i) EXPECT_GE(ttls[i], 2 * ttls[i - 1] - 1) << i;
  EXPECT_EQ(s.a.path.fallbacks(), 0u) << "never direct, so never a fallback";
  // B saw the failures too and banned the pair from its side.
  EXPECT_FALSE(s.b.path.bans(s.now).empty());
  EXPECT_FALSE(s.b.endpoint);
}

TEST(PeerPath, DirectPathGoingQuietFallsBackAndRecovers) {
  Sim s(kA, kB);
  bool cut = false;
  s.check_path = [&](const Endpoint& to) -> std::optional<Clock::duration> {
    if (is_lan(to) || cut) return std::nullopt;
    return 5ms;
  };
  s.data_ok = [&](const Endpoint&, const Endpoint&) { return !cut; };
  ASSERT_TRUE(s.run_until(PathState::kDirect, 2s));
  s.run_for(2s);
  cut = true;
  const auto t_cut = s.now;
  ASSERT_TRUE(s.run_until(PathState::kRelayed, 10s));
  const auto took = s.now - t_cut;
  const PathTimers t;
  EXPECT_GE(took, t.dead_after - 100ms);
  EXPECT_LE(took, t.dead_after + 1s);
  EXPECT_FALSE(s.a.endpoint);
  EXPECT_FALSE(s.b.endpoint);
  EXPECT_EQ(s.a.path.fallbacks() + s.b.path.fallbacks(), 2u);
  // While cut: checks continue, no upgrade is attempted.
  const uint64_t ups = s.a.path.upgrades();
  s.run_for(30s);
  EXPECT_EQ(s.a.path.upgrades(), ups);
  EXPECT_EQ(s.a.path.state(), PathState::kRelayed);
  // Healed: direct again on the next slow round (the short first ban has expired).
  cut = false;
  const auto t_heal = s.now;
  ASSERT_TRUE(s.run_until(PathState::kDirect, 10s));
  EXPECT_LE(s.now - t_heal, t.slow_round + 1s);
  EXPECT_EQ(s.a.endpoint->str(), kB.pub_wg);
}

TEST(PeerPath, PeerSayingItFailedRevertsBothSides) {
  Sim s(kA, kB);
  ASSERT_TRUE(s.run_until(PathState::kDirect, 2s));
  uint64_t id = 0;
  for (const auto& m : s.a.relay_sent)
    if (const auto* p = std::get_if<PeerSwitchProposal>(&m)) id = p->id;
  ASSERT_NE(id, 0u);
  PathActions back;
  s.a.path.on_relay_message(PeerSwitchConfirm{id + 1, false}, s.now, back);
  EXPECT_EQ(s.a.path.state(), PathState::kDirect) << "another switch's id changes nothing";
  s.a.path.on_relay_message(PeerSwitchConfirm{id, true}, s.now, back);
  EXPECT_EQ(s.a.path.state(), PathState::kDirect);
  s.a.path.on_relay_message(PeerSwitchConfirm{id, false}, s.now, back);
  EXPECT_EQ(s.a.path.state(), PathState::kRelayed);
  ASSERT_TRUE(back.set_endpoint);
  EXPECT_FALSE(*back.set_endpoint) << "a returns to the relay";
  EXPECT_TRUE(back.relay.empty()) << "no confirmation echoed back";
  EXPECT_EQ(s.a.path.bans(s.now).size(), 1u);
}

TEST(PeerPath, DeviceRoamingBackToTheRelayIsUndone) {
  Sim s(kA, kB);
  s.check_path = [](const Endpoint& to) -> std::optional<Clock::duration> {
    if (is_lan(to)) return std::nullopt;
    return 5ms;
  };
  ASSERT_TRUE(s.run_until(PathState::kSwitching, 2s));
  // A relayed packet from before the switch reached the device after it: it roamed back.
  for (Node* n : {&s.a, &s.b}) {
    if (n->path.state() != PathState::kSwitching) continue;
    PathActions out;
    n->path.on_counters(n->rx, /*endpoint_is_relay=*/true, true, s.now, out);
    ASSERT_TRUE(out.set_endpoint && *out.set_endpoint) << "pointed at the path again";
    EXPECT_TRUE(out.relay.empty());
    EXPECT_EQ(n->path.state(), PathState::kSwitching);
    EXPECT_EQ(n->path.repoints(), 1u);
  }
  ASSERT_TRUE(s.run_until(PathState::kDirect, 2s));
  PathActions out;
  s.b.path.on_counters(s.b.rx, true, true, s.now, out);
  ASSERT_TRUE(out.set_endpoint && *out.set_endpoint);
  EXPECT_EQ((*out.set_endpoint)->str(), kA.pub_wg);
  EXPECT_EQ(s.b.path.state(), PathState::kDirect);
}

TEST(PeerPath, ProposalsAreChecked) {
  const auto now = Clock::time_point() + 1000s;
  PeerPath b(false);
  b.set_local(candidates_of(kB));
  b.set_remote(candidates_of(kA), now);
  auto ack_of = [](const PathActions& out) {
    EXPECT_EQ(out.relay.size(), 1u);
    const auto* a = out.relay.empty() ? nullptr : std::get_if<PeerSwitchAck>(&out.relay[0]);
    return a ? std::optional<bool>(a->accept) : std::nullopt;
  };
  {  // an endpoint the proposer never announced
    PathActions out;
    b.on_relay_message(PeerSwitchProposal{7, ep("192.0.2.9:1"), ep(kB.pub_wg), 0}, now, out);
    EXPECT_EQ(ack_of(out), false);
    EXPECT_FALSE(out.set_endpoint);
  }
  {  // "yours" is not one of ours
    PathActions out;
    b.on_relay_message(PeerSwitchProposal{8, ep(kA.pub_wg), ep("192.0.2.9:1"), 0}, now, out);
    EXPECT_EQ(ack_of(out), false);
  }
  {  // a check candidate is not a WireGuard endpoint
    PathActions out;
    b.on_relay_message(PeerSwitchProposal{9, ep(kA.pub_check), ep(kB.pub_wg), 0}, now, out);
    EXPECT_EQ(ack_of(out), false);
  }
  {  // a good one, then the same again (a duplicate is acked, not applied twice)
    PathActions out;
    b.on_relay_message(PeerSwitchProposal{10, ep(kA.pub_wg), ep(kB.pub_wg), 0}, now, out);
    EXPECT_EQ(ack_of(out), true);
    ASSERT_TRUE(out.set_endpoint && *out.set_endpoint);
    EXPECT_EQ((*out.set_endpoint)->str(), kA.pub_wg);
    EXPECT_EQ(b.state(), PathState::kSwitching);
    PathActions again;
    b.on_relay_message(PeerSwitchProposal{10, ep(kA.pub_wg), ep(kB.pub_wg), 0}, now, again);
    EXPECT_EQ(ack_of(again), true);
    EXPECT_FALSE(again.set_endpoint);
    EXPECT_EQ(b.upgrades(), 1u);
  }
  {  // while switching, another pair is refused
    PathActions out;
    b.on_relay_message(PeerSwitchProposal{11, ep(kA.lan_wg), ep(kB.lan_wg), 0}, now, out);
    EXPECT_EQ(ack_of(out), false);
  }
  // The controlling side never accepts proposals (both proposing would race).
  PeerPath a(true);
  a.set_local(candidates_of(kA));
  a.set_remote(candidates_of(kB), now);
  PathActions out;
  a.on_relay_message(PeerSwitchProposal{12, ep(kB.pub_wg), ep(kA.pub_wg), 0}, now, out);
  EXPECT_EQ(ack_of(out), false);
  EXPECT_EQ(a.state(), PathState::kRelayed);
}

TEST(PeerPath, PongFromAnotherAddressDoesNotCount) {
  const auto now = Clock::time_point() + 1000s;
  PeerPath a(true);
  a.set_local(candidates_of(kA));
  a.set_remote(candidates_of(kB), now);
  PathActions out;
  a.on_counters(0, true, /*session=*/true, now, out);
  a.tick(now, out);
  a.tick(now + 50ms, out);
  ASSERT_GE(out.check.size(), 2u);
  for (const auto& [to, m] : out.check) {
    const auto& ping = std::get<PeerPing>(m);
    // A symmetric NAT answers from a fresh port.
    a.on_pong(ep("198.51.101.1:61234"), PeerPong{ping.id, ping.sent_ns}, now + 60ms);
  }
  EXPECT_FALSE(a.rtt_ms(now));
  PathActions none;
  a.tick(now + 100ms, none);
  EXPECT_TRUE(none.relay.empty()) << "no proposal without a working pair";
  // Forged ids do not count either (with a plausible send time: 20 ms ago).
  const uint64_t sent_ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        (now + 80ms).time_since_epoch())
                                        .count());
  a.on_pong(ep(kB.pub_check), PeerPong{12345, sent_ns}, now + 100ms);
  EXPECT_FALSE(a.rtt_ms(now + 100ms));
  a.tick(now + 110ms, none);
  EXPECT_TRUE(none.relay.empty());
  // The real answer from the pinged address does.
  for (const auto& [to, m] : out.check) {
    const auto& ping = std::get<PeerPing>(m);
    a.on_pong(to, PeerPong{ping.id, ping.sent_ns}, now + 120ms);
  }
  PathActions prop;
  a.tick(now + 130ms, prop);
  ASSERT_EQ(prop.relay.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<PeerSwitchProposal>(prop.relay[0]));
}

TEST(PeerPath, PingsAreAnsweredWhereTheyCameFrom) {
  PeerPath b(false);
  PathActions out;
  b.on_ping(ep("203.0.113.7:999"), PeerPing{42, 77}, out);
  ASSERT_EQ(out.check.size(), 1u);
  EXPECT_EQ(out.check[0].first.str(), "203.0.113.7:999");
  EXPECT_EQ(std::get<PeerPong>(out.check[0].second), (PeerPong{42, 77}));
}

}  // namespace
