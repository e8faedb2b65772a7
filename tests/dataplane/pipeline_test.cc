// The parallel packet pipeline (dataplane/pipeline.cc) with several workers, through the
// fake TUN and network: per-peer order under concurrency in both directions at once, every
// byte arriving as sent, packets in flight when a peer is removed or the device stops.
// Also run under ThreadSanitizer (tests/tsan_targets).
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "control/device_uapi.h"
#include "control/uapi.h"
#include "node.h"

namespace meshwg::testing {
namespace {

using dataplane::Drop;

// Small pools, so buffers run out and come back many times during a test.
dataplane::DeviceOptions opts() {
  dataplane::DeviceOptions o;
  o.workers = 4;
  o.tx_buffers = 300;
  o.rx_buffers = 300;
  o.inline_below = 0;  // every packet through the workers (a fake TUN read is one packet)
  return o;
}

// A packet whose payload starts with (flow, seq) and has a size that varies with seq, so
// padding and the tag land differently from packet to packet.
Packet numbered(const std::string& src, const std::string& dst, uint8_t flow, uint32_t seq) {
  Packet p = make_ipv4(src, dst, 8 + (seq * 37) % 1300, uint8_t(seq));
  p[20] = flow;
  std::memcpy(&p[21], &seq, 4);
  return p;
}

// Checks that each flow's packets among `got` arrive in increasing seq order and equal what
// was sent; returns how many arrived per flow.
std::map<uint8_t, size_t> check_order(const std::vector<Packet>& got,
                                      const std::map<uint8_t, std::pair<std::string, std::string>>& addrs) {
  std::map<uint8_t, int64_t> last;
  std::map<uint8_t, size_t> n;
  for (const Packet& p : got) {
    if (p.size() < 25) continue;  // a handshake-time ping
    const uint8_t flow = p[20];
    uint32_t seq;
    std::memcpy(&seq, &p[21], 4);
    auto it = addrs.find(flow);
    if (it == addrs.end()) continue;
    EXPECT_EQ(p, numbered(it->second.first, it->second.second, flow, seq)) << "flow " << int(flow);
    auto [pos, fresh] = last.emplace(flow, -1);
    EXPECT_GT(int64_t(seq), pos->second) << "flow " << int(flow) << " out of order";
    pos->second = seq;
    ++n[flow];
  }
  return n;
}

class Pipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(crypto::init());
    a = std::make_unique<Node>(net, clock, "10.0.0.1", false, opts());
    b = std::make_unique<Node>(net, clock, "10.0.0.2", false, opts());
    c = std::make_unique<Node>(net, clock, "10.0.0.3", false, opts());
    ASSERT_EQ(a->dev.workers(), 4);
    int port = 1001;
    for (Node* n : {a.get(), b.get(), c.get()})
      ASSERT_EQ(n->set("private_key=" + control::to_hex(n->priv.span()) +
                       "\nlisten_port=" + std::to_string(port++) + "\n"),
                0);
    ASSERT_EQ(a->set("public_key=" + control::to_hex(b->pub) +
                     "\nallowed_ip=192.168.1.2/32\nendpoint=10.0.0.2:1002\n"
                     "public_key=" + control::to_hex(c->pub) +
                     "\nallowed_ip=192.168.1.3/32\nendpoint=10.0.0.3:1003\n"),
              0);
    for (Node* n : {b.get(), c.get()})
      ASSERT_EQ(n->set("public_key=" + control::to_hex(a->pub) +
                       "\nallowed_ip=192.168.1.1/32\nendpoint=10.0.0.1:1001\n"),
                0);
    for (Node* n : {a.get(), b.get(), c.get()}) ASSERT_TRUE(n->dev.start(false));
    // Sessions first, so the floods below do not wait in the staging queue (128 packets).
    a->tun.inject(make_ipv4("192.168.1.1", "192.168.1.2", 10));
    a->tun.inject(make_ipv4("192.168.1.1", "192.168.1.3", 10));
    ASSERT_TRUE(wait_until([&] { return b->tun.written_count() == 1 && c->tun.written_count() == 1; }));
    b->tun.inject(make_ipv4("192.168.1.2", "192.168.1.1", 10));
    c->tun.inject(make_ipv4("192.168.1.3", "192.168.1.1", 10));
    ASSERT_TRUE(wait_until([&] { return a->tun.written_count() == 2; }));
  }
  void TearDown() override {
    for (Node* n : {a.get(), b.get(), c.get()}) n->dev.stop();
  }
  uint64_t pipeline_drops(Node& n) {
    return n.dev.drops(Drop::kQueueFull) + n.dev.drops(Drop::kNoBuffer);
  }

  FakeNet net;
  FakeClock clock;
  std::unique_ptr<Node> a, b, c;
};

TEST_F(Pipeline, PerPeerOrderHoldsWithFourWorkersBothWays) {
  constexpr uint32_t kCount = 3000;
  // a sends two interleaved flows (to b and to c) while b and c send to a: four workers per
  // device seal and open in parallel, the ordered queues put each peer's packets back in line.
  for (uint32_t i = 0; i < kCount; ++i) {
    a->tun.inject(numbered("192.168.1.1", "192.168.1.2", 1, i));
    a->tun.inject(numbered("192.168.1.1", "192.168.1.3", 2, i));
    b->tun.inject(numbered("192.168.1.2", "192.168.1.1", 3, i));
    c->tun.inject(numbered("192.168.1.3", "192.168.1.1", 4, i));
  }
  auto settled = [&](Node& n, size_t want, Node& sender) {
    return wait_until([&] { return n.tun.written_count() + pipeline_drops(sender) + pipeline_drops(n) >= want; },
                      std::chrono::seconds(60));
  };
  ASSERT_TRUE(settled(*b, 1 + kCount, *a));
  ASSERT_TRUE(settled(*c, 1 + kCount, *a));
  ASSERT_TRUE(settled(*a, 2 + 2 * kCount, *b));

  const std::map<uint8_t, std::pair<std::string, std::string>> addrs = {
      {1, {"192.168.1.1", "192.168.1.2"}}, {2, {"192.168.1.1", "192.168.1.3"}},
      {3, {"192.168.1.2", "192.168.1.1"}}, {4, {"192.168.1.3", "192.168.1.1"}}};
  auto nb = check_order(b->tun.written(), addrs);
  auto nc = check_order(c->tun.written(), addrs);
  auto na = check_order(a->tun.written(), addrs);
  // Backpressure (producers help the workers) keeps in-flight packets far below what the
  // queues hold: nothing may be lost to the pipeline itself.
  for (Node* n : {a.get(), b.get(), c.get()}) {
    EXPECT_EQ(pipeline_drops(*n), 0u);
    EXPECT_EQ(n->dev.drops(Drop::kDecryptFailed), 0u);
    EXPECT_EQ(n->dev.drops(Drop::kReplayed), 0u);
  }
  EXPECT_EQ(nb[1], kCount);
  EXPECT_EQ(nc[2], kCount);
  EXPECT_EQ(na[3], kCount);
  EXPECT_EQ(na[4], kCount);
}

TEST_F(Pipeline, PeerRemovedWithPacketsInFlight) {
  // Packets to b are in the queues when b is removed: they are dropped quietly, their
  // buffers come back (the pools would abort at destruction otherwise) and c is unaffected.
  for (uint32_t i = 0; i < 2000; ++i) {
    a->tun.inject(numbered("192.168.1.1", "192.168.1.2", 1, i));
    b->tun.inject(numbered("192.168.1.2", "192.168.1.1", 3, i));
  }
  ASSERT_TRUE(wait_until([&] { return b->tun.written_count() > 50; }));
  ASSERT_EQ(a->set("public_key=" + control::to_hex(b->pub) + "\nremove=true\n"), 0);
  EXPECT_EQ(a->dev.peer_count(), 1u);
  for (uint32_t i = 0; i < 100; ++i) a->tun.inject(numbered("192.168.1.1", "192.168.1.3", 2, i));
  ASSERT_TRUE(wait_until([&] { return c->tun.written_count() == 101; }));
  check_order(c->tun.written(), {{2, {"192.168.1.1", "192.168.1.3"}}});
  check_order(b->tun.written(), {{1, {"192.168.1.1", "192.168.1.2"}}});
}

TEST_F(Pipeline, StopWithPacketsInFlight) {
  // stop() joins the producers, closes the crypt queue and lets the workers finish: every
  // buffer is back in its pool before the device (and its pools) go away.
  for (uint32_t i = 0; i < 2000; ++i) {
    a->tun.inject(numbered("192.168.1.1", "192.168.1.2", 1, i));
    b->tun.inject(numbered("192.168.1.2", "192.168.1.1", 3, i));
  }
  ASSERT_TRUE(wait_until([&] { return b->tun.written_count() > 20; }));
  a->dev.stop();
  b->dev.stop();
  EXPECT_FALSE(a->dev.running());
  check_order(b->tun.written(), {{1, {"192.168.1.1", "192.168.1.2"}}});
  check_order(a->tun.written(), {{3, {"192.168.1.2", "192.168.1.1"}}});
}

}  // namespace
}  // namespace meshwg::testing
