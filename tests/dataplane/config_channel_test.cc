// The in-process configuration channel (dataplane/config.h): sets and gets submitted by a
// "control thread" are applied by the device's timer thread with the same effect as the
// UAPI, replies come back through the reply queue and its eventfd, a tick serves a bounded
// batch, and a full reply queue drops and counts instead of blocking the data plane.
#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <memory>

#include "control/uapi.h"
#include "dataplane/config.h"
#include "node.h"

namespace meshwg::testing {
namespace {

using namespace std::chrono_literals;
using dataplane::ConfigChannel;
using dataplane::ConfigCommand;
using dataplane::ConfigReply;

// Waits (bounded) for the reply with this id, polling the channel's eventfd as a control
// thread would; replies with other ids are skipped.
std::optional<ConfigReply> wait_reply(ConfigChannel& ch, uint64_t id,
                                      std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    ConfigReply r;
    while (ch.take_reply(r))
      if (r.id == id) return r;
    pollfd p{ch.reply_fd(), POLLIN, 0};
    (void)::poll(&p, 1, 100);
  }
  return std::nullopt;
}

ConfigCommand get_cmd(uint64_t id) { return ConfigCommand{.id = id, .set = std::nullopt}; }

TEST(ConfigChannel, SetAndGetOnTheTimerThreadActLikeTheUapi) {
  ASSERT_TRUE(crypto::init());
  FakeNet net;
  FakeClock clock;
  Node a(net, clock, "10.0.0.1"), b(net, clock, "10.0.0.2");
  ConfigChannel ch;
  a.dev.attach_config_channel(&ch);
  ASSERT_TRUE(a.dev.start(/*timer_thread=*/true));
  ASSERT_EQ(b.set("private_key=" + control::to_hex(b.priv.span()) + "\nlisten_port=1002\n" +
                  "public_key=" + control::to_hex(a.pub) + "\nallowed_ip=192.168.1.1/32\n"),
            0);
  ASSERT_TRUE(b.dev.start(false));

  // The same change as a UAPI body would make, as the control plane builds it.
  dataplane::SetRequest set;
  set.private_key = a.priv;
  set.listen_port = 1001;
  dataplane::PeerChange pc;
  pc.public_key = b.pub;
  pc.endpoint = dataplane::Endpoint::parse("10.0.0.2:1002");
  pc.allowed_ips.push_back({*dataplane::IpPrefix::parse("192.168.1.2/32"), false});
  pc.allowed_ips.push_back({*dataplane::IpPrefix::parse("fd00::2/128"), false});
  pc.persistent_keepalive = 0;
  set.peers.push_back(pc);
  ASSERT_TRUE(ch.submit(ConfigCommand{.id = 7, .set = set}));
  auto r = wait_reply(ch, 7);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error, 0);
  EXPECT_FALSE(r->snapshot);

  ASSERT_TRUE(ch.submit(get_cmd(8)));
  r = wait_reply(ch, 8);
  ASSERT_TRUE(r && r->snapshot);
  // Independent truth: the UAPI's own get of the same device, serialised.
  EXPECT_EQ(control::serialize_get(*r->snapshot), control::serialize_get(a.uapi.snapshot()));
  ASSERT_EQ(r->snapshot->peers.size(), 1u);
  EXPECT_EQ(r->snapshot->listen_port, 1001);
  EXPECT_EQ(r->snapshot->peers[0].allowed_ips.size(), 2u);

  // The set reached the packet path: a packet goes through a handshake to b.
  const Packet p = make_ipv4("192.168.1.1", "192.168.1.2", 100);
  a.tun.inject(p);
  ASSERT_TRUE(wait_until([&] { return b.tun.written_count() == 1; }));
  EXPECT_EQ(b.tun.written().back(), p);

  // Counters and the handshake time come back through a get.
  ASSERT_TRUE(ch.submit(get_cmd(9)));
  r = wait_reply(ch, 9);
  ASSERT_TRUE(r && r->snapshot && r->snapshot->peers.size() == 1);
  EXPECT_GT(r->snapshot->peers[0].last_handshake_sec, 0);
  EXPECT_GT(r->snapshot->peers[0].tx_bytes, 0u);

  // A remove through the channel removes.
  dataplane::SetRequest rm;
  rm.peers.push_back(dataplane::PeerChange{.public_key = b.pub, .remove = true});
  ASSERT_TRUE(ch.submit(ConfigCommand{.id = 10, .set = rm}));
  ASSERT_TRUE(wait_reply(ch, 10));
  EXPECT_EQ(a.dev.peer_count(), 0u);
  a.dev.stop();
  b.dev.stop();
}

TEST(ConfigChannel, OneTickServesABoundedBatch) {
  ASSERT_TRUE(crypto::init());
  FakeNet net;
  FakeClock clock;
  Node a(net, clock, "10.0.0.1");
  ConfigChannel ch(64);
  a.dev.attach_config_channel(&ch);
  for (uint64_t i = 1; i <= 40; ++i) ASSERT_TRUE(ch.submit(get_cmd(i)));
  auto drain = [&] {
    size_t n = 0;
    ConfigReply r;
    uint64_t last = 0;
    while (ch.take_reply(r)) {
      EXPECT_EQ(r.id, last + 1) << "replies keep submission order";
      last = r.id;
      ++n;
    }
    return n;
  };
  a.dev.tick();
  const size_t first = drain();
  EXPECT_EQ(first, 32u);
  a.dev.tick();
  size_t second = 0;
  ConfigReply r;
  while (ch.take_reply(r)) ++second;
  EXPECT_EQ(second, 8u);
}

TEST(ConfigChannel, FullReplyQueueDropsAndCountsThenRecovers) {
  ASSERT_TRUE(crypto::init());
  FakeNet net;
  FakeClock clock;
  Node a(net, clock, "10.0.0.1");
  ConfigChannel ch(4);
  a.dev.attach_config_channel(&ch);
  for (uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(ch.submit(get_cmd(i)));
  EXPECT_FALSE(ch.submit(get_cmd(99))) << "the command queue holds 4";
  a.dev.tick();
  for (uint64_t i = 5; i <= 8; ++i) ASSERT_TRUE(ch.submit(get_cmd(i)));
  a.dev.tick();  // the reply queue is full: these four replies are dropped, not waited for
  EXPECT_EQ(ch.replies_dropped(), 4u);
  ConfigReply r;
  for (uint64_t i = 1; i <= 4; ++i) {
    ASSERT_TRUE(ch.take_reply(r));
    EXPECT_EQ(r.id, i);
  }
  EXPECT_FALSE(ch.take_reply(r));
  ASSERT_TRUE(ch.submit(get_cmd(9)));
  a.dev.tick();
  ASSERT_TRUE(ch.take_reply(r));
  EXPECT_EQ(r.id, 9u);
  EXPECT_TRUE(r.snapshot);
}

TEST(ConfigChannel, DetachedChannelIsNotServed) {
  ASSERT_TRUE(crypto::init());
  FakeNet net;
  FakeClock clock;
  Node a(net, clock, "10.0.0.1");
  ConfigChannel ch;
  a.dev.attach_config_channel(&ch);
  a.dev.attach_config_channel(nullptr);
  ASSERT_TRUE(ch.submit(get_cmd(1)));  // no wake-up registered any more: must not crash
  a.dev.tick();
  ConfigReply r;
  EXPECT_FALSE(ch.take_reply(r));
}

}  // namespace
}  // namespace meshwg::testing
