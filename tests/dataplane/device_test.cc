// Two devices in one process (fake TUN, fake UDP network, movable clock): handshake, data
// both ways, staged packets, rekey after time, expiry, replay rejection, roaming, the
// source-address check, cookies under load, retransmission and key zeroing timers.
#include <gtest/gtest.h>

#include <memory>

#include "control/device_uapi.h"
#include "control/uapi.h"
#include "node.h"

namespace meshwg::testing {
namespace {

using namespace std::chrono_literals;
using dataplane::Drop;

struct DevNode : Node {
  using Node::Node;
  control::PeerSnapshot peer_snapshot() {
    auto s = uapi.snapshot();
    EXPECT_EQ(s.peers.size(), 1u);
    return s.peers.empty() ? control::PeerSnapshot{} : s.peers[0];
  }
};

class TwoDevices : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(crypto::init());
    a = std::make_unique<DevNode>(net, clock, "10.0.0.1");
    b = std::make_unique<DevNode>(net, clock, "10.0.0.2");
    ASSERT_EQ(a->set("private_key=" + control::to_hex(a->priv.span()) + "\nlisten_port=1001\n"), 0);
    ASSERT_EQ(b->set("private_key=" + control::to_hex(b->priv.span()) + "\nlisten_port=1002\n"), 0);
    ASSERT_EQ(a->set("public_key=" + control::to_hex(b->pub) +
                     "\nallowed_ip=192.168.1.2/32\nallowed_ip=fd00::2/128\nendpoint=10.0.0.2:1002\n"),
              0);
    ASSERT_EQ(b->set("public_key=" + control::to_hex(a->pub) +
                     "\nallowed_ip=192.168.1.1/32\nallowed_ip=fd00::1/128\n"),
              0);
    ASSERT_TRUE(a->dev.start(false));
    ASSERT_TRUE(b->dev.start(false));
  }
  void TearDown() override {
    a->dev.stop();
    b->dev.stop();
  }
  // Sends one packet from a to b (or b to a) and waits until it comes out of the other TUN.
  bool a_to_b(const Packet& p) {
    const size_t before = b->tun.written_count();
    a->tun.inject(p);
    return wait_until([&] { return b->tun.written_count() > before; }) &&
           b->tun.written().back() == p;
  }
  bool b_to_a(const Packet& p) {
    const size_t before = a->tun.written_count();
    b->tun.inject(p);
    return wait_until([&] { return a->tun.written_count() > before; }) &&
           a->tun.written().back() == p;
  }
  Packet ping_ab(size_t n = 56) { return make_ipv4("192.168.1.1", "192.168.1.2", n); }
  Packet ping_ba(size_t n = 56) { return make_ipv4("192.168.1.2", "192.168.1.1", n); }

  FakeNet net;
  FakeClock clock;
  std::unique_ptr<DevNode> a, b;
};

TEST_F(TwoDevices, HandshakeThenDataBothWays) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  EXPECT_EQ(net.count_type(1), 1u);
  EXPECT_EQ(net.count_type(2), 1u);
  ASSERT_TRUE(b_to_a(ping_ba()));
  ASSERT_TRUE(a_to_b(make_ipv6("fd00::1", "fd00::2", 100)));
  ASSERT_TRUE(b_to_a(make_ipv6("fd00::2", "fd00::1", 1200)));
  EXPECT_EQ(net.count_type(1), 1u) << "one handshake serves both directions";
  // The responder learned the initiator's endpoint from the initiation.
  auto bp = b->peer_snapshot();
  ASSERT_TRUE(bp.endpoint);
  EXPECT_EQ(bp.endpoint->str(), "10.0.0.1:1001");
  EXPECT_GT(bp.last_handshake_sec, 0);
  EXPECT_GT(bp.rx_bytes, 0u);
  EXPECT_GT(bp.tx_bytes, 0u);
}

TEST_F(TwoDevices, CountersCountWholeMessages) {
  // netns.sh check 1, transposed: 10 packets of 84 bytes, each a 128-byte transport message.
  // The first packet was staged and confirms the session itself, so no keepalive is sent.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a_to_b(make_ipv4("192.168.1.1", "192.168.1.2", 64)));
  ASSERT_TRUE(wait_until([&] { return b->peer_snapshot().rx_bytes >= 148 + 1280; }));
  auto bp = b->peer_snapshot();
  EXPECT_EQ(bp.rx_bytes, 148u + 1280u);  // initiation + 10 × (16 + 96 + 16)
  EXPECT_EQ(bp.tx_bytes, 92u);            // response
  auto ap = a->peer_snapshot();
  EXPECT_EQ(ap.tx_bytes, 148u + 1280u);
  EXPECT_EQ(ap.rx_bytes, 92u);
}

TEST_F(TwoDevices, PacketsStagedDuringHandshakeArriveInOrder) {
  net.set_tap([](const FakeNet::Sent& s) { return dataplane::load_le32(s.data.data()) != 2; });
  for (uint8_t i = 0; i < 5; ++i) a->tun.inject(make_ipv4("192.168.1.1", "192.168.1.2", 40, i));
  ASSERT_TRUE(wait_until([&] { return net.count_type(1) >= 1; }));
  // b must have answered (the tap drops the answer) before time moves: an initiation that b
  // consumed late would stamp the moved time and make b's flood guard (50/s) refuse the
  // retransmit sent at that same instant.
  ASSERT_TRUE(wait_until([&] { return net.count_type(2) >= 1; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(b->tun.written_count(), 0u) << "no response reached a, nothing may be sent";
  net.set_tap(nullptr);
  clock.advance(6s);  // retransmit timer: REKEY_TIMEOUT + jitter
  a->dev.tick();
  ASSERT_TRUE(wait_until([&] { return b->tun.written_count() == 5; }));
  auto got = b->tun.written();
  for (uint8_t i = 0; i < 5; ++i) EXPECT_EQ(got[i], make_ipv4("192.168.1.1", "192.168.1.2", 40, i));
}

TEST_F(TwoDevices, ReplayedTransportIsDropped) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  net.clear_log();
  ASSERT_TRUE(a_to_b(ping_ab(300)));
  FakeNet::Sent data;
  for (auto& s : net.log())
    if (dataplane::load_le32(s.data.data()) == 4 && s.data.size() > 32) data = s;
  ASSERT_FALSE(data.data.empty());
  const size_t delivered = b->tun.written_count();
  net.deliver(data.data, data.from, data.to);
  ASSERT_TRUE(wait_until([&] { return b->dev.drops(Drop::kReplayed) == 1; }));
  EXPECT_EQ(b->tun.written_count(), delivered);
  // A tampered copy fails authentication instead.
  data.data[20] ^= 1;
  net.deliver(data.data, data.from, data.to);
  ASSERT_TRUE(wait_until([&] { return b->dev.drops(Drop::kDecryptFailed) == 1; }));
  EXPECT_EQ(b->tun.written_count(), delivered);
}

TEST_F(TwoDevices, RekeyAfterTime) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  ASSERT_TRUE(b_to_a(ping_ba()));
  EXPECT_EQ(net.count_type(1), 1u);
  clock.advance(dataplane::kRekeyAfterTime + 1s);
  // The initiator's next send notices the old session is due for renewal.
  ASSERT_TRUE(a_to_b(ping_ab()));
  ASSERT_TRUE(wait_until([&] { return net.count_type(2) >= 2; }));
  EXPECT_EQ(net.count_type(1), 2u);
  ASSERT_TRUE(a_to_b(ping_ab()));
  ASSERT_TRUE(b_to_a(ping_ba()));
  // Past REJECT_AFTER_TIME of the first session, traffic still flows on the second.
  clock.advance(dataplane::kRejectAfterTime - dataplane::kRekeyAfterTime);
  ASSERT_TRUE(a_to_b(ping_ab()));
  ASSERT_TRUE(b_to_a(ping_ba()));
  EXPECT_EQ(net.count_type(1), 2u);
}

TEST_F(TwoDevices, ResponderDoesNotSendOnExpiredSession) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  clock.advance(dataplane::kRejectAfterTime + 1s);
  // b's only session is too old to send with: b must start a handshake of its own.
  ASSERT_TRUE(b_to_a(ping_ba()));
  EXPECT_EQ(net.count_type(1), 2u);
  auto log = net.log();
  EXPECT_EQ(log[log.size() - 1].from.str().rfind("10.0.0.", 0), 0u);
}

TEST_F(TwoDevices, RoamingFollowsAuthenticatedSource) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  a->bind.readdress("10.0.0.99", 2001);
  ASSERT_TRUE(a_to_b(ping_ab()));
  ASSERT_TRUE(wait_until([&] {
    auto ep = b->peer_snapshot().endpoint;
    return ep && ep->str() == "10.0.0.99:2001";
  }));
  ASSERT_TRUE(b_to_a(ping_ba())) << "reply must go to the new address";
  // An unauthenticated datagram from elsewhere does not move the endpoint.
  Packet junk(64, 0);
  dataplane::store_le32(junk.data(), 4);
  net.deliver(junk, *dataplane::Endpoint::parse("10.6.6.6:666"), b->bind.endpoint());
  ASSERT_TRUE(wait_until([&] { return b->dev.drops(Drop::kUnknownIndex) >= 1; }));
  EXPECT_EQ(b->peer_snapshot().endpoint->str(), "10.0.0.99:2001");
}

TEST_F(TwoDevices, SourceAddressMustBelongToPeer) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  const size_t delivered = b->tun.written_count();
  // a's allowed IPs at b do not include 192.168.1.77; a routes it to b anyway.
  a->tun.inject(make_ipv4("192.168.1.77", "192.168.1.2", 30));
  ASSERT_TRUE(wait_until([&] { return b->dev.drops(Drop::kSourceNotAllowed) == 1; }));
  EXPECT_EQ(b->tun.written_count(), delivered);
  // No peer for the destination: dropped and counted at a.
  a->tun.inject(make_ipv4("192.168.1.1", "192.168.9.9", 30));
  ASSERT_TRUE(wait_until([&] { return a->dev.drops(Drop::kNoRoute) == 1; }));
}

TEST_F(TwoDevices, CookieUnderLoad) {
  b->dev.force_under_load(true);
  a->tun.inject(ping_ab());
  // b answers the first initiation (no mac2) with a cookie and does no DH work.
  ASSERT_TRUE(wait_until([&] { return net.count_type(3) == 1; }));
  EXPECT_EQ(net.count_type(2), 0u);
  ASSERT_TRUE(wait_until([&] { return b->dev.drops(Drop::kCookieSent) == 1; }));
  // a retransmits after REKEY_TIMEOUT with mac2 from the cookie, and b accepts.
  ASSERT_TRUE(wait_until([&] { return a->dev.cookie_replies() == 1; }));
  clock.advance(6s);
  a->dev.tick();
  ASSERT_TRUE(wait_until([&] { return b->tun.written_count() == 1; }));
  EXPECT_EQ(net.count_type(2), 1u);
  EXPECT_EQ(b->dev.drops(Drop::kCookieSent), 1u);
}

TEST_F(TwoDevices, RetransmitsThenGivesUp) {
  net.set_tap([](const FakeNet::Sent&) { return false; });  // b is unreachable
  a->tun.inject(ping_ab());
  ASSERT_TRUE(wait_until([&] { return net.count_type(1) == 1; }));
  for (int i = 0; i < 40; ++i) {
    clock.advance(6s);
    a->dev.tick();
    std::this_thread::sleep_for(1ms);
  }
  // 1 initial + MAX_TIMER_HANDSHAKES retries, then it stops (REKEY_ATTEMPT_TIME).
  EXPECT_EQ(net.count_type(1), size_t(1 + dataplane::kMaxTimerHandshakes + 1));
}

TEST_F(TwoDevices, KeysZeroedAfterThreeRejectTimes) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  // Walk time forward as it would pass, so each timer fires in its turn.
  for (auto t = 0s; t <= 3 * dataplane::kRejectAfterTime; t += 10s) {
    clock.advance(10s);
    a->dev.tick();
    b->dev.tick();
    std::this_thread::sleep_for(1ms);
  }
  net.clear_log();
  // With the keys gone, b's data needs a fresh handshake.
  ASSERT_TRUE(b_to_a(ping_ba()));
  EXPECT_EQ(net.count_type(1), 1u);
}

TEST_F(TwoDevices, PassiveKeepaliveAfterReceivingData) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  net.clear_log();
  clock.advance(dataplane::kKeepaliveTimeout + 1s);
  b->dev.tick();
  // b received data and sent nothing back: it sends a keepalive (32 bytes).
  ASSERT_TRUE(wait_until([&] {
    for (auto& s : net.log())
      if (s.data.size() == dataplane::kKeepaliveSize) return true;
    return false;
  }));
}

TEST_F(TwoDevices, PersistentKeepalive) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  ASSERT_EQ(a->set("public_key=" + control::to_hex(b->pub) + "\npersistent_keepalive_interval=5\n"),
            0);
  net.clear_log();
  auto keepalives = [&] {
    size_t n = 0;
    for (auto& s : net.log())
      if (s.data.size() == dataplane::kKeepaliveSize && s.from.str() == "10.0.0.1:1001") ++n;
    return n;
  };
  for (size_t i = 1; i <= 3; ++i) {
    // Each keepalive re-arms the timer when it is sent (by a packet worker): wait for it
    // before moving time, or the next deadline would be measured from the moved clock.
    clock.advance(5s + 10ms);
    a->dev.tick();
    ASSERT_TRUE(wait_until([&] { return keepalives() >= i; })) << "keepalive " << i;
  }
}

TEST_F(TwoDevices, LowOrderPeerKeyNeverHandshakes) {
  // The all-zero point: DH with it is zero, so no initiation may ever be sent.
  ASSERT_EQ(a->set("replace_peers=true\npublic_key=" + std::string(64, '0') +
                   "\nallowed_ip=192.168.1.2/32\nendpoint=10.0.0.2:1002\n"
                   "persistent_keepalive_interval=1\n"),
            0);
  net.clear_log();
  a->tun.inject(ping_ab());
  for (int i = 0; i < 5; ++i) {
    clock.advance(1s);
    a->dev.tick();
  }
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(net.log().size(), 0u);
}

TEST_F(TwoDevices, PrivateKeyChangeDropsSessions) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  crypto::Key k2;
  crypto::x25519_generate(k2.span());
  crypto::PublicKey p2{};
  ASSERT_TRUE(crypto::x25519_public(p2, k2.span()));
  ASSERT_EQ(a->set("private_key=" + control::to_hex(k2.span()) + "\n"), 0);
  ASSERT_EQ(b->set("public_key=" + control::to_hex(a->pub) + "\nremove=true\npublic_key=" +
                   control::to_hex(p2) + "\nallowed_ip=192.168.1.1/32\n"),
            0);
  net.clear_log();
  ASSERT_TRUE(a_to_b(ping_ab())) << "a new handshake with the new identity must work at once";
  EXPECT_EQ(net.count_type(1), 1u);
}

TEST_F(TwoDevices, GarbageDatagramsAreCountedNotFatal) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  std::mt19937 rng(7);
  const auto from = *dataplane::Endpoint::parse("10.6.6.6:666");
  for (int i = 0; i < 2000; ++i) {
    Packet junk(rng() % 200, 0);
    for (auto& c : junk) c = uint8_t(rng());
    if (i % 3 == 0 && junk.size() >= 4) dataplane::store_le32(junk.data(), 1 + rng() % 4);
    if (i % 7 == 0) junk.resize(148), dataplane::store_le32(junk.data(), 1);
    net.deliver(junk, from, b->bind.endpoint());
  }
  ASSERT_TRUE(wait_until([&] {
    return b->dev.drops(Drop::kMalformedMessage) + b->dev.drops(Drop::kInvalidMac1) +
               b->dev.drops(Drop::kUnknownIndex) + b->dev.drops(Drop::kHandshakeFailed) +
               b->dev.drops(Drop::kCookieReplyInvalid) >=
           1900;
  })) << "malformed " << b->dev.drops(Drop::kMalformedMessage) << " mac1 "
      << b->dev.drops(Drop::kInvalidMac1) << " index " << b->dev.drops(Drop::kUnknownIndex)
      << " hs " << b->dev.drops(Drop::kHandshakeFailed) << " cookie "
      << b->dev.drops(Drop::kCookieReplyInvalid) << " queue "
      << b->dev.drops(Drop::kHandshakeQueueFull) << " decrypt " << b->dev.drops(Drop::kDecryptFailed)
      << " expired " << b->dev.drops(Drop::kKeypairExpired);
  ASSERT_TRUE(a_to_b(ping_ab()));
  ASSERT_TRUE(b_to_a(ping_ba()));
}

TEST_F(TwoDevices, PaddingNeverExceedsMtu) {
  ASSERT_TRUE(a_to_b(ping_ab()));
  net.clear_log();
  // 1419-byte packet at MTU 1420 pads to 1420, not 1424.
  ASSERT_TRUE(a_to_b(make_ipv4("192.168.1.1", "192.168.1.2", 1399)));
  auto log = net.log();
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back().data.size(), 16u + 1420u + 16u);
  ASSERT_TRUE(a_to_b(make_ipv4("192.168.1.1", "192.168.1.2", 1)));
  EXPECT_EQ(net.log().back().data.size(), 16u + 32u + 16u);
}

}  // namespace
}  // namespace meshwg::testing
