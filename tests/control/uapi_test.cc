// Tests for control/uapi.cc: set-body parsing (every error class with its errno and line),
// get serialisation against literal wireguard-go-shaped output, hex, and a get→set round trip.
// Expected values are written out by hand from uapi.md / wireguard-go, not computed by the code.
#include "control/uapi.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

namespace meshwg::control {
namespace {

// Keys from the xplatform page's example (any 32 bytes would do).
constexpr char kPriv[] = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
constexpr char kPub1[] = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";
constexpr char kPsk1[] = "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52";
constexpr char kPub2[] = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376";
constexpr char kZero[] = "0000000000000000000000000000000000000000000000000000000000000000";

std::string hex_of(const crypto::Key& k) { return to_hex(k.span()); }
std::string hex_of(const crypto::PublicKey& k) { return to_hex(k); }

dataplane::IpPrefix prefix(const char* s) {
  auto p = dataplane::IpPrefix::parse(s);
  EXPECT_TRUE(p.has_value()) << s;
  return p.value_or(dataplane::IpPrefix{});
}

std::optional<SetRequest> parse(const std::string& body) {
  ParseError err;
  auto r = parse_set(body, err);
  EXPECT_TRUE(r.has_value()) << err.message;
  return r;
}

// Checks errno, line and that the message names `names` (and the line).
void expect_error(const std::string& body, int errno_value, size_t line, const std::string& names) {
  ParseError err;
  auto r = parse_set(body, err);
  ASSERT_FALSE(r.has_value()) << body;
  EXPECT_EQ(err.errno_value, errno_value) << body << " -> " << err.message;
  EXPECT_EQ(err.line, line) << body << " -> " << err.message;
  EXPECT_EQ(err.message.rfind("line " + std::to_string(line) + ": ", 0), 0u) << err.message;
  EXPECT_NE(err.message.find(names), std::string::npos) << err.message;
}

TEST(UapiParse, FullSetLikeWireguardGoDeviceTests) {
  const std::string body = std::string("private_key=") + kPriv +
                           "\n"
                           "listen_port=0\n"
                           "replace_peers=true\n"
                           "public_key=" +
                           kPub1 +
                           "\n"
                           "protocol_version=1\n"
                           "replace_allowed_ips=true\n"
                           "allowed_ip=1.0.0.2/32\n"
                           "endpoint=127.0.0.1:51820\n"
                           "persistent_keepalive_interval=25\n";
  auto r = parse(body);
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->private_key);
  EXPECT_EQ(hex_of(*r->private_key), kPriv);
  ASSERT_TRUE(r->listen_port);
  EXPECT_EQ(*r->listen_port, 0);
  EXPECT_FALSE(r->fwmark);
  EXPECT_TRUE(r->replace_peers);
  ASSERT_EQ(r->peers.size(), 1u);
  const PeerChange& p = r->peers[0];
  EXPECT_EQ(hex_of(p.public_key), kPub1);
  EXPECT_FALSE(p.remove);
  EXPECT_FALSE(p.update_only);
  EXPECT_FALSE(p.preshared_key);
  EXPECT_TRUE(p.replace_allowed_ips);
  ASSERT_EQ(p.allowed_ips.size(), 1u);
  EXPECT_EQ(p.allowed_ips[0].prefix.addr.family, 4);
  EXPECT_EQ(p.allowed_ips[0].prefix.cidr, 32);
  EXPECT_EQ(p.allowed_ips[0].prefix.str(), "1.0.0.2/32");
  EXPECT_FALSE(p.allowed_ips[0].remove);
  ASSERT_TRUE(p.endpoint);
  EXPECT_EQ(p.endpoint->addr.sa.sa_family, AF_INET);
  EXPECT_EQ(ntohs(p.endpoint->addr.in4.sin_port), 51820);
  EXPECT_EQ(ntohl(p.endpoint->addr.in4.sin_addr.s_addr), 0x7f000001u);
  ASSERT_TRUE(p.persistent_keepalive);
  EXPECT_EQ(*p.persistent_keepalive, 25);
}

TEST(UapiParse, WgSetconfStyleBodyWithSeveralPeers) {
  // What wg(8) sends: no trailing newline handling differences, uppercase hex accepted,
  // removal forms, v6 endpoint with brackets, several peers.
  std::string upper = kPub2;
  for (char& c : upper) c = char(toupper(c));
  const std::string body = std::string("fwmark=4294967295\n") + "listen_port=65535\n" +
                           "public_key=" + kPub1 + "\npreshared_key=" + kPsk1 +
                           "\nendpoint=[2001:db8::1]:443\nallowed_ip=10.1.2.3/24\n"
                           "allowed_ip=-10.9.0.0/16\nallowed_ip=fd00::1234/64\n" +
                           "public_key=" + upper + "\nremove=true\n" + "public_key=" + kPub1 +
                           "\nupdate_only=true\npreshared_key=" + kZero +
                           "\npersistent_keepalive_interval=0";  // no final '\n'
  auto r = parse(body);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r->fwmark, 4294967295u);
  EXPECT_EQ(*r->listen_port, 65535);
  EXPECT_FALSE(r->private_key);
  EXPECT_FALSE(r->replace_peers);
  ASSERT_EQ(r->peers.size(), 3u);

  const PeerChange& a = r->peers[0];
  EXPECT_EQ(hex_of(*a.preshared_key), kPsk1);
  EXPECT_EQ(a.endpoint->str(), "[2001:db8::1]:443");
  ASSERT_EQ(a.allowed_ips.size(), 3u);
  EXPECT_EQ(a.allowed_ips[0].prefix.str(), "10.1.2.0/24");  // host bits masked
  EXPECT_FALSE(a.allowed_ips[0].remove);
  EXPECT_EQ(a.allowed_ips[1].prefix.str(), "10.9.0.0/16");
  EXPECT_TRUE(a.allowed_ips[1].remove);
  EXPECT_EQ(a.allowed_ips[2].prefix.str(), "fd00::/64");
  EXPECT_FALSE(a.replace_allowed_ips);

  EXPECT_EQ(hex_of(r->peers[1].public_key), kPub2);
  EXPECT_TRUE(r->peers[1].remove);

  const PeerChange& c = r->peers[2];
  EXPECT_EQ(hex_of(c.public_key), kPub1);  // the same key may appear again
  EXPECT_TRUE(c.update_only);
  ASSERT_TRUE(c.preshared_key);
  EXPECT_TRUE(c.preshared_key->is_zero());  // zero = remove the PSK
  EXPECT_EQ(*c.persistent_keepalive, 0);
}

TEST(UapiParse, EmptyBodyIsAnEmptySet) {
  auto r = parse("");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->private_key || r->listen_port || r->fwmark || r->replace_peers);
  EXPECT_TRUE(r->peers.empty());
}

TEST(UapiParse, ZeroPrivateKeyMeansRemove) {
  auto r = parse(std::string("private_key=") + kZero + "\n");
  ASSERT_TRUE(r && r->private_key);
  EXPECT_TRUE(r->private_key->is_zero());
}

TEST(UapiParse, AllowedIpRemoval) {
  auto r = parse(std::string("public_key=") + kPub1 + "\nallowed_ip=-1.2.3.0/24\n");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->peers.at(0).allowed_ips.size(), 1u);
  EXPECT_TRUE(r->peers[0].allowed_ips[0].remove);
  EXPECT_EQ(r->peers[0].allowed_ips[0].prefix.str(), "1.2.3.0/24");
}

TEST(UapiParse, NumbersAcceptLeadingZerosLikeParseUint) {
  auto r = parse("listen_port=00051820\nfwmark=0\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(*r->listen_port, 51820);
  EXPECT_EQ(*r->fwmark, 0u);
}

TEST(UapiParse, LineWithoutEqualsIsEPROTO) {
  expect_error("listen_port=1\nlisten_port\n", EPROTO, 2, "=");
  expect_error("get=1\nnonsense", EINVAL, 1, "get");  // has '=': unknown key instead
  expect_error("nonsense", EPROTO, 1, "=");
}

TEST(UapiParse, UnknownKeysAreEINVAL) {
  expect_error("bogus=1\n", EINVAL, 1, "bogus");
  expect_error("=1\n", EINVAL, 1, "unknown");
  expect_error(std::string("public_key=") + kPub1 + "\nbogus=1\n", EINVAL, 2, "bogus");
  // wg(8) parses these from get replies but they are not settable.
  expect_error(std::string("public_key=") + kPub1 + "\ntx_bytes=1\n", EINVAL, 2, "tx_bytes");
  // Keys are case-sensitive and spaces are not trimmed.
  expect_error("Listen_port=1\n", EINVAL, 1, "Listen_port");
  expect_error("listen_port =1\n", EINVAL, 1, "listen_port ");
}

TEST(UapiParse, InterfaceKeyInPeerSectionIsEINVAL) {
  const std::string peer = std::string("public_key=") + kPub1 + "\n";
  expect_error(peer + "listen_port=1\n", EINVAL, 2, "listen_port");
  expect_error(peer + "fwmark=1\n", EINVAL, 2, "fwmark");
  expect_error(peer + "replace_peers=true\n", EINVAL, 2, "replace_peers");
  expect_error(peer + "private_key=" + kPriv + "\n", EINVAL, 2, "private_key");
  // And peer keys before any public_key are unknown interface keys.
  expect_error("endpoint=1.2.3.4:5\n", EINVAL, 1, "endpoint");
  expect_error("allowed_ip=1.2.3.4/32\n", EINVAL, 1, "allowed_ip");
}

TEST(UapiParse, BadHexKeys) {
  const std::string k(kPriv);
  expect_error("private_key=" + k.substr(0, 63) + "\n", EINVAL, 1, "private_key");
  expect_error("private_key=" + k + "0\n", EINVAL, 1, "private_key");
  expect_error("private_key=" + k.substr(0, 63) + "g\n", EINVAL, 1, "private_key");
  expect_error("private_key=\n", EINVAL, 1, "private_key");
  expect_error("public_key=" + k.substr(0, 62) + " 0\n", EINVAL, 1, "public_key");
  expect_error("public_key=" + std::string(kPub1) + "\npreshared_key=" + k.substr(1) + "x\n",
               EINVAL, 2, "preshared_key");
}

TEST(UapiParse, SecretsNeverAppearInMessages) {
  const std::string k(kPriv);
  for (const std::string& body :
       {"private_key=" + k.substr(0, 63) + "\n", "private_key=" + k + "ff\n",
        "public_key=" + std::string(kPub1) + "\npreshared_key=" + k + "z\n",
        "private_key" + k + "\n"}) {
    ParseError err;
    ASSERT_FALSE(parse_set(body, err));
    EXPECT_EQ(err.message.find(k.substr(0, 16)), std::string::npos) << err.message;
  }
}

TEST(UapiParse, NumbersOutOfRangeOrMalformed) {
  expect_error("listen_port=65536\n", EINVAL, 1, "listen_port: '65536'");
  expect_error("listen_port=70000\n", EINVAL, 1, "listen_port: '70000' is not a port (0-65535)");
  expect_error("fwmark=4294967296\n", EINVAL, 1, "fwmark: '4294967296'");
  expect_error("fwmark=99999999999999999999999\n", EINVAL, 1, "fwmark");
  for (const char* v : {"-1", "+1", " 1", "1 ", "", "0x10", "1e3", "1.0"})
    expect_error(std::string("listen_port=") + v + "\n", EINVAL, 1, "listen_port");
  const std::string peer = std::string("public_key=") + kPub1 + "\n";
  expect_error(peer + "persistent_keepalive_interval=65536\n", EINVAL, 2,
               "persistent_keepalive_interval");
  expect_error(peer + "persistent_keepalive_interval=-5\n", EINVAL, 2,
               "persistent_keepalive_interval");
}

TEST(UapiParse, BooleansAcceptOnlyTrue) {
  expect_error("replace_peers=false\n", EINVAL, 1, "replace_peers: 'false'");
  expect_error("replace_peers=TRUE\n", EINVAL, 1, "replace_peers");
  const std::string peer = std::string("public_key=") + kPub1 + "\n";
  expect_error(peer + "remove=false\n", EINVAL, 2, "remove");
  expect_error(peer + "update_only=1\n", EINVAL, 2, "update_only");
  expect_error(peer + "replace_allowed_ips=false\n", EINVAL, 2, "replace_allowed_ips");
}

TEST(UapiParse, ProtocolVersionOnlyOne) {
  const std::string peer = std::string("public_key=") + kPub1 + "\n";
  expect_error(peer + "protocol_version=2\n", EINVAL, 2, "protocol_version: '2'");
  expect_error(peer + "protocol_version=01\n", EINVAL, 2, "protocol_version");
  expect_error(peer + "protocol_version=\n", EINVAL, 2, "protocol_version");
}

TEST(UapiParse, BadEndpoints) {
  const std::string peer = std::string("public_key=") + kPub1 + "\n";
  for (const char* v : {"1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "example.com:51820",
                        "2001:db8::1:51820", "[2001:db8::1]", "[2001:db8::1]51820",
                        "1.2.3.256:1", ""}) {
    expect_error(peer + "endpoint=" + v + "\n", EINVAL, 2, "endpoint");
  }
  // inet_pton stops at NUL; the parser must not accept a prefix of the value.
  expect_error(peer + std::string("endpoint=1.2.3.4:5\0junk\n", 24), EINVAL, 2, "endpoint");
}

TEST(UapiParse, BadAllowedIps) {
  const std::string peer = std::string("public_key=") + kPub1 + "\n";
  for (const char* v : {"1.2.3.0/33", "1.2.3.0/", "1.2.3.0", "1.2.3/24", "fd00::/129", "-",
                        "--1.2.3.0/24", "1.2.3.0/-1", "", "1.2.3.0/24 "}) {
    expect_error(peer + "allowed_ip=" + v + "\n", EINVAL, 2, "allowed_ip");
  }
}

TEST(UapiParse, FramingAndBounds) {
  // An empty line can only come from a caller that framed the body wrongly.
  expect_error("listen_port=1\n\nfwmark=1\n", EPROTO, 2, "empty");
  expect_error("listen_port=1\n" + std::string("fwmark=") + std::string(kMaxLineLength, '1') + "\n",
               EINVAL, 2, "too long");
  // Exactly at the bound is fine as far as length goes (this value fails as a number).
  expect_error("fwmark=" + std::string(kMaxLineLength - 7, '1') + "\n", EINVAL, 1, "fwmark");
  // A CR is not stripped (wireguard-go does not either).
  expect_error("listen_port=1\r\n", EINVAL, 1, "listen_port: '1\\x0d'");
}

TEST(UapiParse, ErrorLineIsTheFirstBadOne) {
  const std::string body = std::string("listen_port=1\npublic_key=") + kPub1 +
                           "\nallowed_ip=1.2.3.4/32\nendpoint=bad\nallowed_ip=bad\n";
  expect_error(body, EINVAL, 4, "endpoint");
}

TEST(UapiHex, RoundTripAndStrictness) {
  std::array<uint8_t, 32> in{};
  for (size_t i = 0; i < 32; ++i) in[i] = uint8_t(i * 37 + 5);
  const std::string h = to_hex(in);
  EXPECT_EQ(h, "052a4f7499bee3082d52779cc1e60b30557a9fc4e90e33587da2c7ec11365b80");
  std::array<uint8_t, 32> out{};
  ASSERT_TRUE(from_hex(h, out));
  EXPECT_EQ(out, in);

  std::string upper = h;
  for (char& c : upper) c = char(toupper(c));
  out.fill(0);
  ASSERT_TRUE(from_hex(upper, out));
  EXPECT_EQ(out, in);

  // Failures leave out untouched.
  out.fill(0xee);
  const std::array<uint8_t, 32> untouched = out;
  EXPECT_FALSE(from_hex(h.substr(0, 63), out));
  EXPECT_FALSE(from_hex(h + "0", out));
  EXPECT_FALSE(from_hex("", out));
  EXPECT_FALSE(from_hex(h.substr(0, 62) + "0g", out));
  EXPECT_FALSE(from_hex("g" + h.substr(1), out));
  EXPECT_FALSE(from_hex(h.substr(0, 62) + "+1", out));
  EXPECT_EQ(out, untouched);
}

DeviceSnapshot sample_snapshot() {
  DeviceSnapshot s;
  crypto::Key priv;
  EXPECT_TRUE(from_hex(kPriv, priv.span()));
  s.private_key = priv;
  s.listen_port = 51820;
  s.fwmark = 0;

  PeerSnapshot a;
  EXPECT_TRUE(from_hex(kPub1, a.public_key));
  EXPECT_TRUE(from_hex(kPsk1, a.preshared_key.span()));
  a.endpoint = dataplane::Endpoint::parse("192.0.2.7:51821");
  a.last_handshake_sec = 1700000000;
  a.last_handshake_nsec = 123456789;
  a.tx_bytes = 1480;
  a.rx_bytes = 2960;
  a.persistent_keepalive = 25;
  a.allowed_ips = {prefix("10.0.0.2/32"), prefix("fd00:1::/64")};
  s.peers.push_back(a);

  PeerSnapshot b;  // never handshaken, no PSK, no endpoint, no allowed IPs
  EXPECT_TRUE(from_hex(kPub2, b.public_key));
  s.peers.push_back(b);
  return s;
}

TEST(UapiGet, SerialisesLikeWireguardGo) {
  const std::string expected = std::string("private_key=") + kPriv +
                               "\n"
                               "listen_port=51820\n"
                               "public_key=" +
                               kPub1 + "\npreshared_key=" + kPsk1 +
                               "\n"
                               "protocol_version=1\n"
                               "endpoint=192.0.2.7:51821\n"
                               "last_handshake_time_sec=1700000000\n"
                               "last_handshake_time_nsec=123456789\n"
                               "tx_bytes=1480\n"
                               "rx_bytes=2960\n"
                               "persistent_keepalive_interval=25\n"
                               "allowed_ip=10.0.0.2/32\n"
                               "allowed_ip=fd00:1::/64\n"
                               "public_key=" +
                               kPub2 + "\npreshared_key=" + kZero +
                               "\n"
                               "protocol_version=1\n"
                               "last_handshake_time_sec=0\n"
                               "last_handshake_time_nsec=0\n"
                               "tx_bytes=0\n"
                               "rx_bytes=0\n"
                               "persistent_keepalive_interval=0\n";
  EXPECT_EQ(serialize_get(sample_snapshot()), expected);
}

TEST(UapiGet, OmitsUnsetInterfaceFields) {
  DeviceSnapshot s;
  EXPECT_EQ(serialize_get(s), "");
  s.private_key = crypto::Key{};  // present but zero = no key (wireguard-go checks IsZero)
  s.fwmark = 7;
  s.peers.emplace_back();
  s.peers[0].endpoint = dataplane::Endpoint::parse("[2001:db8::9]:1");
  EXPECT_EQ(serialize_get(s), std::string("fwmark=7\npublic_key=") + kZero +
                                  "\npreshared_key=" + kZero +
                                  "\nprotocol_version=1\nendpoint=[2001:db8::9]:1\n"
                                  "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
                                  "tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n");
}

TEST(UapiGet, PeerLinesRoundTripThroughSet) {
  const DeviceSnapshot snap = sample_snapshot();
  const std::string get = serialize_get(snap);
  // Drop the read-only keys; everything else is valid set syntax.
  std::string body;
  size_t pos = 0;
  while (pos < get.size()) {
    const size_t nl = get.find('\n', pos);
    const std::string line = get.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.rfind("last_handshake_time_", 0) == 0 || line.rfind("tx_bytes=", 0) == 0 ||
        line.rfind("rx_bytes=", 0) == 0)
      continue;
    body += line + "\n";
  }
  auto r = parse(body);
  ASSERT_TRUE(r);
  EXPECT_EQ(hex_of(*r->private_key), kPriv);
  EXPECT_EQ(*r->listen_port, 51820);
  ASSERT_EQ(r->peers.size(), snap.peers.size());
  for (size_t i = 0; i < snap.peers.size(); ++i) {
    const PeerChange& p = r->peers[i];
    const PeerSnapshot& s = snap.peers[i];
    EXPECT_EQ(p.public_key, s.public_key);
    ASSERT_TRUE(p.preshared_key);
    EXPECT_EQ(hex_of(*p.preshared_key), hex_of(s.preshared_key));
    ASSERT_EQ(p.endpoint.has_value(), s.endpoint.has_value());
    if (s.endpoint) {
      EXPECT_TRUE(p.endpoint->same_remote(*s.endpoint));
    }
    EXPECT_EQ(p.persistent_keepalive.value_or(9999), s.persistent_keepalive);
    ASSERT_EQ(p.allowed_ips.size(), s.allowed_ips.size());
    for (size_t j = 0; j < s.allowed_ips.size(); ++j) {
      EXPECT_EQ(p.allowed_ips[j].prefix, s.allowed_ips[j]);
      EXPECT_FALSE(p.allowed_ips[j].remove);
    }
  }
}

}  // namespace
}  // namespace meshwg::control
