// Tests for dataplane/ratelimiter: wireguard-go's TestRatelimiter sequence on a mocked
// clock (20 packets/s, burst 5), IPv6 /64 keying, the bounded table and its once-a-second GC.
#include "dataplane/ratelimiter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace meshwg::dataplane {
namespace {

using namespace std::chrono_literals;
using Instant = RateLimiter::Instant;

IpAddress addr(const std::string& s) {
  auto a = IpAddress::parse(s);
  EXPECT_TRUE(a.has_value()) << s;
  return a.value_or(IpAddress{});
}

IpAddress v4(uint32_t n) {
  const uint8_t b[4] = {uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n)};
  return IpAddress::v4(b);
}

// An arbitrary, non-zero start so nothing depends on the epoch.
const Instant kStart = Instant{} + 1000h;

TEST(RateLimiter, WireguardGoSequence) {
  const std::vector<IpAddress> ips = {
      addr("127.0.0.1"),
      addr("192.168.1.1"),
      addr("172.167.2.3"),
      addr("97.231.252.215"),
      addr("248.97.91.167"),
      addr("188.208.233.47"),
      addr("104.2.183.179"),
      addr("72.129.46.120"),
      addr("2001:0db8:0a0b:12f0:0000:0000:0000:0001"),
      addr("f5c2:818f:c052:655a:9860:b136:6894:25f0"),
      addr("b2d7:15ab:48a7:b07c:a541:f144:a9fe:54fc"),
      addr("a47b:786e:1671:a22b:d6f9:4ab0:abc7:c918"),
      addr("ea1e:d155:7f7a:98fb:2bf5:9483:80f6:5445"),
      addr("3f0e:54a2:f5b4:cd19:a21d:58e1:3746:84c4"),
  };
  struct Step {
    std::chrono::nanoseconds wait;
    bool allowed;
    const char* text;
  };
  constexpr auto kTick = std::chrono::nanoseconds(1'000'000'000 / RateLimiter::kPacketsPerSecond);
  std::vector<Step> steps;
  for (uint64_t i = 0; i < RateLimiter::kBurst; ++i) steps.push_back({0ns, true, "initial burst"});
  steps.push_back({0ns, false, "after burst"});
  steps.push_back({kTick, true, "filling tokens for single packet"});
  steps.push_back({0ns, false, "not having refilled enough"});
  steps.push_back({2 * kTick, true, "filling tokens for two packet burst"});
  steps.push_back({0ns, true, "second packet in 2 packet burst"});
  steps.push_back({0ns, false, "packet following 2 packet burst"});

  RateLimiter rl;
  Instant now = kStart;
  for (size_t i = 0; i < steps.size(); ++i) {
    now += steps[i].wait + 1ns;  // as wireguard-go's timeSleep: d + 1 ns
    for (const auto& ip : ips)
      EXPECT_EQ(rl.allow(ip, now), steps[i].allowed) << i << ": " << steps[i].text << ": " << ip.str();
  }
  EXPECT_EQ(rl.size(), ips.size());
}

TEST(RateLimiter, Ipv6SameSlash64SharesBucket) {
  RateLimiter rl;
  const IpAddress a = addr("2001:db8:1:2::1");
  const IpAddress b = addr("2001:db8:1:2:ffff:ffff:ffff:ffff");
  const IpAddress other = addr("2001:db8:1:3::1");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(rl.allow(a, kStart));
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(rl.allow(b, kStart));
  EXPECT_FALSE(rl.allow(a, kStart));
  EXPECT_FALSE(rl.allow(b, kStart));
  EXPECT_TRUE(rl.allow(other, kStart));  // next /64: its own bucket
  EXPECT_EQ(rl.size(), 2u);

  // An IPv4 address and an IPv6 /64 with the same leading bytes do not collide.
  const IpAddress v4a = addr("32.1.13.184");  // 0x20010db8
  const IpAddress v6a = addr("2001:db8::");
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(rl.allow(v6a, kStart));
  EXPECT_TRUE(rl.allow(v4a, kStart));
}

TEST(RateLimiter, BurstRefillsButNotBeyondBurst) {
  RateLimiter rl;
  const IpAddress a = addr("10.0.0.1");
  EXPECT_TRUE(rl.allow(a, kStart));
  // A long idle period refills at most kBurst packets.
  const Instant later = kStart + 10s;
  for (uint64_t i = 0; i < RateLimiter::kBurst; ++i) EXPECT_TRUE(rl.allow(a, later));
  EXPECT_FALSE(rl.allow(a, later));
  // A clock that steps back neither earns nor loses tokens.
  EXPECT_FALSE(rl.allow(a, later - 5s));
  EXPECT_TRUE(rl.allow(a, later + 50ms));

  // A short wait on a nearly full bucket also caps at kBurst.
  const IpAddress b = addr("10.0.0.2");
  EXPECT_TRUE(rl.allow(b, kStart));
  for (uint64_t i = 0; i < RateLimiter::kBurst; ++i) EXPECT_TRUE(rl.allow(b, kStart + 100ms));
  EXPECT_FALSE(rl.allow(b, kStart + 100ms));
}

TEST(RateLimiter, UnsetAddressIsRefused) {
  RateLimiter rl;
  EXPECT_FALSE(rl.allow(IpAddress{}, kStart));
  EXPECT_EQ(rl.size(), 0u);
}

TEST(RateLimiter, GarbageCollectsIdleEntriesAtMostOncePerSecond) {
  RateLimiter rl;
  EXPECT_TRUE(rl.allow(v4(1), kStart));  // GC runs here (first call)
  EXPECT_TRUE(rl.allow(v4(2), kStart + 500ms));
  EXPECT_EQ(rl.size(), 2u);
  EXPECT_TRUE(rl.allow(v4(3), kStart + 1200ms));  // GC due: 1 idle 1.2 s goes, 2 stays
  EXPECT_EQ(rl.size(), 2u);
  EXPECT_TRUE(rl.allow(v4(4), kStart + 1900ms));  // GC not due; 2 (idle 1.4 s) stays for now
  EXPECT_EQ(rl.size(), 3u);
  EXPECT_TRUE(rl.allow(v4(5), kStart + 2300ms));  // GC due: 2 and 3 go
  EXPECT_EQ(rl.size(), 2u);
  EXPECT_TRUE(rl.allow(v4(6), kStart + 10s));
  EXPECT_EQ(rl.size(), 1u);
}

TEST(RateLimiter, TableStaysBoundedUnderFlood) {
  RateLimiter rl;
  const IpAddress known = addr("192.0.2.1");
  EXPECT_TRUE(rl.allow(known, kStart));
  Instant now = kStart + 100ms;
  size_t allowed = 0;
  const uint32_t flood = uint32_t(RateLimiter::kMaxEntries + 5000);
  for (uint32_t i = 0; i < flood; ++i) allowed += rl.allow(v4(0x0a000000 + i), now) ? 1 : 0;
  EXPECT_EQ(rl.size(), RateLimiter::kMaxEntries);
  EXPECT_EQ(allowed, RateLimiter::kMaxEntries - 1);
  // A source already in the table keeps its bucket while new ones are refused.
  EXPECT_TRUE(rl.allow(known, now));
  EXPECT_FALSE(rl.allow(addr("198.51.100.7"), now));
  // Once the flood has been idle for more than a second, collection makes room again.
  now += 1500ms;
  EXPECT_TRUE(rl.allow(addr("198.51.100.7"), now));
  EXPECT_EQ(rl.size(), 1u);
}

}  // namespace
}  // namespace meshwg::dataplane
