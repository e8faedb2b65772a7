// Tests for dataplane/ip: address and prefix parsing/formatting, and the UAPI endpoint forms
// ("a.b.c.d:port", "[v6%scope]:port") that wg(8) sends.
#include "dataplane/ip.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>

namespace meshwg::dataplane {
namespace {

using namespace std::string_literals;

TEST(IpAddress, ParseAndStrRoundTrip) {
  for (const char* s : {"0.0.0.0", "1.2.3.4", "255.255.255.255", "::", "::1", "fd00::1",
                        "2001:db8::ff00:42:8329", "fe80::1:2:3:4", "::ffff:1.2.3.4"}) {
    auto a = IpAddress::parse(s);
    ASSERT_TRUE(a) << s;
    EXPECT_EQ(a->str(), s);
    EXPECT_EQ(IpAddress::parse(a->str()), a);
  }
  auto v4 = IpAddress::parse("10.20.30.40");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->family, 4);
  EXPECT_EQ(v4->size(), 4u);
  EXPECT_EQ(v4->bytes[0], 10);
  EXPECT_EQ(v4->bytes[3], 40);
  auto v6 = IpAddress::parse("2001:0DB8:0000::0001");  // non-canonical input, canonical output
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->family, 6);
  EXPECT_EQ(v6->size(), 16u);
  EXPECT_EQ(v6->str(), "2001:db8::1");
  EXPECT_EQ(IpAddress{}.str(), "");
  EXPECT_EQ(IpAddress{}.size(), 0u);
}

TEST(IpAddress, RejectsBadInput) {
  for (const std::string& s :
       {""s, "x"s, "1.2.3"s, "1.2.3.4.5"s, "256.1.1.1"s, "1.2.3.4 "s, " 1.2.3.4"s, "1.2.3.-4"s,
        ":::"s, "1::2::3"s, "fe80::1%eth0"s, "[::1]"s, "12345::"s, std::string(100, '1'),
        "1.2.3.4\0"s, "1.2.3.4\0junk"s, "::1\0"s})
    EXPECT_FALSE(IpAddress::parse(s)) << s;
}

TEST(IpPrefix, ParseMasksHostBits) {
  auto p = IpPrefix::parse("192.168.1.77/24");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->cidr, 24);
  EXPECT_EQ(p->str(), "192.168.1.0/24");
  EXPECT_EQ(IpPrefix::parse("10.255.255.255/9")->str(), "10.128.0.0/9");
  EXPECT_EQ(IpPrefix::parse("1.2.3.4/0")->str(), "0.0.0.0/0");
  EXPECT_EQ(IpPrefix::parse("1.2.3.4/32")->str(), "1.2.3.4/32");
  EXPECT_EQ(IpPrefix::parse("1.2.3.4")->str(), "1.2.3.4/32");  // bare address: full length
  EXPECT_EQ(IpPrefix::parse("2001:db8:ffff::1/35")->str(), "2001:db8:e000::/35");
  EXPECT_EQ(IpPrefix::parse("ffff::1/0")->str(), "::/0");
  EXPECT_EQ(IpPrefix::parse("fd00::1")->str(), "fd00::1/128");
  EXPECT_EQ(IpPrefix::parse("fd00::ffff/127")->str(), "fd00::fffe/127");
  // Round trip of the formatted form.
  for (const char* s : {"0.0.0.0/0", "10.0.0.0/8", "192.0.2.128/25", "::/0", "fd00::/8",
                        "2001:db8::1/128"})
    EXPECT_EQ(IpPrefix::parse(s)->str(), s);
}

TEST(IpPrefix, MaskInPlace) {
  IpPrefix p;
  p.addr = *IpAddress::parse("255.255.255.255");
  for (unsigned c = 0; c <= 32; ++c) {
    IpPrefix q = p;
    q.cidr = uint8_t(c);
    q.mask();
    uint32_t want = c == 0 ? 0 : ~uint32_t(0) << (32 - c);
    uint32_t got = uint32_t(q.addr.bytes[0]) << 24 | uint32_t(q.addr.bytes[1]) << 16 |
                   uint32_t(q.addr.bytes[2]) << 8 | q.addr.bytes[3];
    EXPECT_EQ(got, want) << c;
  }
}

TEST(IpPrefix, RejectsBadCidr) {
  for (const char* s : {"1.2.3.4/33", "::/129", "1.2.3.4/", "x", "x/8", "/8", "1.2.3.4/-1",
                        "1.2.3.4/+8", "1.2.3.4/8/8", "1.2.3.4/ 8", "1.2.3.4/8 ", "1.2.3.4/1000",
                        "::/1280", "1.2.3.4/0x8", "fd00::/64/"})
    EXPECT_FALSE(IpPrefix::parse(s)) << s;
}

TEST(Endpoint, ParseV4) {
  auto e = Endpoint::parse("1.2.3.4:51820");
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->valid());
  EXPECT_EQ(e->addr.sa.sa_family, AF_INET);
  EXPECT_EQ(e->socklen(), sizeof(sockaddr_in));
  EXPECT_EQ(e->ip(), *IpAddress::parse("1.2.3.4"));
  EXPECT_EQ(e->port(), 51820);
  EXPECT_EQ(ntohs(e->addr.in4.sin_port), 51820);
  EXPECT_EQ(e->str(), "1.2.3.4:51820");
  auto z = Endpoint::parse("0.0.0.0:0");
  ASSERT_TRUE(z);
  EXPECT_EQ(z->port(), 0);
  EXPECT_TRUE(Endpoint::parse("1.2.3.4:65535"));
}

TEST(Endpoint, ParseV6) {
  auto e = Endpoint::parse("[fd00::1]:1");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->addr.sa.sa_family, AF_INET6);
  EXPECT_EQ(e->socklen(), sizeof(sockaddr_in6));
  EXPECT_EQ(e->ip(), *IpAddress::parse("fd00::1"));
  EXPECT_EQ(e->port(), 1);
  EXPECT_EQ(e->addr.in6.sin6_scope_id, 0u);
  EXPECT_EQ(e->str(), "[fd00::1]:1");

  auto s = Endpoint::parse("[::1%1]:5");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->ip(), *IpAddress::parse("::1"));
  EXPECT_EQ(s->port(), 5);
  EXPECT_EQ(s->addr.in6.sin6_scope_id, 1u);
  // str() names the interface when it exists (index 1 is normally "lo"); either way the
  // text parses back to the same endpoint.
  auto back = Endpoint::parse(s->str());
  ASSERT_TRUE(back) << s->str();
  EXPECT_TRUE(back->same_remote(*s));
  EXPECT_EQ(back->addr.in6.sin6_scope_id, 1u);
}

TEST(Endpoint, ParseByInterfaceName) {
  // The loopback device exists in every network namespace.
  auto e = Endpoint::parse("[fe80::1%lo]:7");
  ASSERT_TRUE(e);
  EXPECT_NE(e->addr.in6.sin6_scope_id, 0u);
  EXPECT_FALSE(Endpoint::parse("[fe80::1%no-such-if0]:7"));
  EXPECT_FALSE(Endpoint::parse("[fe80::1%lo\0x]:7"s));  // name must not end at a NUL
  EXPECT_FALSE(Endpoint::parse("1.2.3.4:5\0"s));
}

TEST(Endpoint, RejectsBadInput) {
  for (const char* s :
       {"", "1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:99999", "1.2.3.4:-1", "1.2.3.4:+5",
        "1.2.3.4:5x", "1.2.3.4: 5", "::1:5", "fd00::1:51820", "[::1]5", "[::1]", "[::1]:",
        "[::1:5", "::1]:5", "[::1%]:5", "1.2.3.4%1:5", "[1.2.3.4%1]:5", "host.example:80",
        ":80", "[]:80", "1.2.3.4:123456", "[::1]:5:6", "[[::1]]:5"})
    EXPECT_FALSE(Endpoint::parse(s)) << s;
}

TEST(Endpoint, StrRoundTrip) {
  for (const char* s : {"1.2.3.4:51820", "255.255.255.255:65535", "0.0.0.0:0", "[fd00::1]:1",
                        "[::]:0", "[2001:db8::1]:51820", "[::ffff:1.2.3.4]:80"}) {
    auto e = Endpoint::parse(s);
    ASSERT_TRUE(e) << s;
    EXPECT_EQ(e->str(), s);
    auto again = Endpoint::parse(e->str());
    ASSERT_TRUE(again);
    EXPECT_TRUE(again->same_remote(*e));
  }
  EXPECT_EQ(Endpoint{}.str(), "");
  EXPECT_FALSE(Endpoint{}.valid());
}

TEST(Endpoint, SameRemote) {
  auto a = *Endpoint::parse("1.2.3.4:5");
  auto b = *Endpoint::parse("1.2.3.4:5");
  b.local = *IpAddress::parse("10.0.0.1");  // the local source is not compared
  b.local_ifindex = 3;
  EXPECT_TRUE(a.same_remote(b));
  EXPECT_FALSE(a.same_remote(*Endpoint::parse("1.2.3.4:6")));
  EXPECT_FALSE(a.same_remote(*Endpoint::parse("1.2.3.5:5")));
  EXPECT_FALSE(a.same_remote(*Endpoint::parse("[::ffff:1.2.3.4]:5")));  // other family
  auto c = *Endpoint::parse("[fd00::1]:5");
  EXPECT_TRUE(c.same_remote(*Endpoint::parse("[fd00::1]:5")));
  EXPECT_FALSE(c.same_remote(*Endpoint::parse("[fd00::2]:5")));
  EXPECT_FALSE(c.same_remote(*Endpoint::parse("[fd00::1]:6")));
  EXPECT_FALSE(c.same_remote(*Endpoint::parse("[fd00::1%1]:5")));  // other scope
  EXPECT_FALSE(Endpoint{}.same_remote(Endpoint{}));
}

TEST(Endpoint, FromSockaddrAndKeyBytes) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(4242);
  inet_pton(AF_INET6, "2001:db8::7", &sin6.sin6_addr);
  auto e = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof(sin6));
  EXPECT_EQ(e.str(), "[2001:db8::7]:4242");
  uint8_t key[18];
  ASSERT_EQ(e.key_bytes(key), 18u);
  EXPECT_EQ(key[0], 0x20);
  EXPECT_EQ(key[15], 0x07);
  EXPECT_EQ(key[16], 4242 >> 8);
  EXPECT_EQ(key[17], 4242 & 0xff);
  // A truncated sockaddr yields an invalid endpoint instead of reading past the end.
  EXPECT_FALSE(Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof(sockaddr_in)).valid());

  auto v4 = *Endpoint::parse("1.2.3.4:258");
  ASSERT_EQ(v4.key_bytes(key), 6u);
  EXPECT_EQ(key[0], 1);
  EXPECT_EQ(key[3], 4);
  EXPECT_EQ(key[4], 1);
  EXPECT_EQ(key[5], 2);
}

}  // namespace
}  // namespace meshwg::dataplane
