// Tests for control/wgstun_server.cc and control/stun_server.cc.
//
// The WG-STUN client here is built from crypto/ directly (the initiator side of
// crypto::Handshake, as dataplane/device.cc drives it): initiation -> response -> transport.
// Two harnesses:
//   - Core: the sans-I/O WgStunResponder with a recording sink and an injected clock (expiry,
//     load, keepalives, LRU against a naive model);
//   - Loopback: a WgStunServer on a real UDP socket, the test's client on another; the test
//     pumps the server itself (no thread), so every exchange is deterministic.
// Inner packets are built and checked with the test's own naive RFC 1071 checksum, and the
// expected mapped address is what getsockname() says about the client's socket, never a value
// taken from the code under test. The plain STUN server is checked with control/stun.h's
// client (stun_query) over loopback, and for its 420 and ignore rules.
#include "control/wgstun_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "control/stun.h"
#include "control/stun_server.h"
#include "crypto/aead.h"
#include "crypto/cookie.h"
#include "crypto/noise.h"
#include "crypto/primitives.h"
#include "crypto/tai64n.h"
#include "dataplane/messages.h"
#include "tests/control/loopback_udp.h"

namespace meshwg::control {
namespace {

using namespace std::chrono_literals;
using dataplane::Endpoint;
using Bytes = std::vector<uint8_t>;
using Instant = std::chrono::steady_clock::time_point;

const Instant kT0 = Instant{} + 100000s;

Endpoint ep(const char* s) {
  auto e = Endpoint::parse(s);
  EXPECT_TRUE(e.has_value()) << s;
  return e.value_or(Endpoint{});
}

// ---- inner packets, built and checked independently of the code under test ----

const Bytes kRes4 = {100, 100, 100, 100};
const Bytes kRes6 = {0xfd, 0x6d, 0x65, 0x73, 0x68, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
const Bytes kSrc4 = {10, 77, 0, 2};
const Bytes kSrc6 = {0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};

// RFC 1071, the slow obvious way: the complement of the one's-complement sum of 16-bit words.
uint16_t naive_csum(const Bytes& d) {
  uint32_t s = 0;
  for (size_t i = 0; i < d.size(); i += 2)
    s += uint32_t(d[i]) << 8 | (i + 1 < d.size() ? d[i + 1] : 0);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(~s);
}

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
Bytes be16b(uint16_t v) { return {uint8_t(v >> 8), uint8_t(v)}; }

Bytes pseudo(const Bytes& src, const Bytes& dst, uint8_t proto, size_t len) {
  if (src.size() == 4) return cat({src, dst, {0, proto}, be16b(uint16_t(len))});
  return cat({src, dst, {0, 0}, be16b(uint16_t(len)), {0, 0, 0, proto}});
}

// An IP packet around l4 (whose checksum the caller has set).
Bytes ip_packet(const Bytes& src, const Bytes& dst, uint8_t proto, const Bytes& l4) {
  if (src.size() == 4) {
    Bytes h = cat({{0x45, 0}, be16b(uint16_t(20 + l4.size())), {0x12, 0x34, 0, 0, 64, proto, 0, 0},
                   src, dst});
    const uint16_t c = naive_csum(h);
    h[10] = uint8_t(c >> 8);
    h[11] = uint8_t(c);
    return cat({h, l4});
  }
  return cat({{0x60, 0, 0, 0}, be16b(uint16_t(l4.size())), {proto, 64}, src, dst, l4});
}

Bytes udp_packet(const Bytes& src, const Bytes& dst, uint16_t sport, uint16_t dport,
                 const Bytes& payload) {
  Bytes u = cat({be16b(sport), be16b(dport), be16b(uint16_t(8 + payload.size())), {0, 0}, payload});
  uint16_t c = naive_csum(cat({pseudo(src, dst, 17, u.size()), u}));
  if (c == 0) c = 0xffff;
  u[6] = uint8_t(c >> 8);
  u[7] = uint8_t(c);
  return ip_packet(src, dst, 17, u);
}

Bytes echo_request(const Bytes& src, const Bytes& dst, uint16_t id, uint16_t seq, const Bytes& data) {
  const bool v6 = src.size() == 16;
  Bytes m = cat({{uint8_t(v6 ? 128 : 8), 0, 0, 0}, be16b(id), be16b(seq), data});
  const uint16_t c = naive_csum(v6 ? cat({pseudo(src, dst, 58, m.size()), m}) : m);
  m[2] = uint8_t(c >> 8);
  m[3] = uint8_t(c);
  return ip_packet(src, dst, v6 ? 58 : 1, m);
}

struct ParsedIp {
  bool v6 = false;
  Bytes src, dst;
  uint8_t proto = 0;
  uint8_t ttl = 0;
  Bytes l4;
  bool ip_sum_ok = true;
  bool l4_sum_ok = false;
};

// Parses a decrypted reply (padding after the IP length is allowed) and verifies checksums.
std::optional<ParsedIp> parse_ip(const Bytes& p) {
  ParsedIp r;
  if (p.size() >= 20 && p[0] == 0x45) {
    const size_t total = size_t(p[2]) << 8 | p[3];
    if (total < 20 || total > p.size()) return std::nullopt;
    r.ip_sum_ok = naive_csum(Bytes(p.begin(), p.begin() + 20)) == 0;
    r.proto = p[9];
    r.ttl = p[8];
    r.src.assign(p.begin() + 12, p.begin() + 16);
    r.dst.assign(p.begin() + 16, p.begin() + 20);
    r.l4.assign(p.begin() + 20, p.begin() + ptrdiff_t(total));
  } else if (p.size() >= 40 && p[0] >> 4 == 6) {
    const size_t total = 40 + (size_t(p[4]) << 8 | p[5]);
    if (total > p.size()) return std::nullopt;
    r.v6 = true;
    r.proto = p[6];
    r.ttl = p[7];
    r.src.assign(p.begin() + 8, p.begin() + 24);
    r.dst.assign(p.begin() + 24, p.begin() + 40);
    r.l4.assign(p.begin() + 40, p.begin() + ptrdiff_t(total));
  } else {
    return std::nullopt;
  }
  if (r.proto == 1)
    r.l4_sum_ok = naive_csum(r.l4) == 0;
  else
    r.l4_sum_ok = naive_csum(cat({pseudo(r.src, r.dst, r.proto, r.l4.size()), r.l4})) == 0;
  return r;
}

// ---- a WG-STUN client from the crypto primitives ----

// Strictly increasing timestamps across all clients (the server demands newer ones).
crypto::Tai64n next_timestamp() {
  static int seq = 0;
  return crypto::tai64n_from(std::chrono::system_clock::now() + std::chrono::seconds(++seq));
}

class TestClient {
 public:
  explicit TestClient(const crypto::PublicKey& server) {
    crypto::Key priv;
    crypto::x25519_generate(priv.span());
    id_.set(priv.span());
    static const crypto::Key kNoPsk;
    EXPECT_TRUE(hs_.set_keys(id_, server, kNoPsk.span()));
    cookie_.init(server);
  }
  const crypto::PublicKey& pub() const { return id_.public_key; }

  Bytes initiation(Instant now) {
    dataplane::MessageInitiation m{};
    crypto::random_bytes({reinterpret_cast<uint8_t*>(&index_), 4});
    EXPECT_TRUE(hs_.create_initiation(m, id_, index_, next_timestamp()));
    auto bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&m), sizeof(m));
    cookie_.add_macs(bytes, now);
    return Bytes(bytes.begin(), bytes.end());
  }
  bool consume_response(const Bytes& d) {
    if (d.size() != dataplane::kResponseSize || dataplane::load_le32(d.data()) != 2) return false;
    dataplane::MessageResponse r;
    std::memcpy(&r, d.data(), sizeof(r));
    if (dataplane::load_le32(d.data() + 8) != index_) return false;
    crypto::SessionKeys k;
    if (!hs_.consume_response(r, id_) || !hs_.derive_session(k)) return false;
    keys_ = k;
    have_keys_ = true;
    send_counter_ = 0;
    return true;
  }
  bool consume_cookie(const Bytes& d, Instant now) {
    if (d.size() != dataplane::kCookieReplySize) return false;
    dataplane::MessageCookieReply r;
    std::memcpy(&r, d.data(), sizeof(r));
    return cookie_.consume_reply(r, now);
  }
  // A transport message carrying plain (padded to 16 as a sender does).
  Bytes seal(const Bytes& plain) { return seal_with(plain, send_counter_++); }
  Bytes seal_with(const Bytes& plain, uint64_t counter) {
    const size_t padded = dataplane::padded_length(plain.size(), 0);
    Bytes out(dataplane::kTransportHeaderSize + padded + dataplane::kTagSize, 0);
    dataplane::store_le32(out.data(), 4);
    dataplane::store_le32(out.data() + 4, keys_.remote_index);
    dataplane::store_le64(out.data() + 8, counter);
    std::copy(plain.begin(), plain.end(), out.begin() + 16);
    crypto::transport_seal(out.data() + 16, {out.data() + 16, padded}, counter, keys_.send.span());
    return out;
  }
  Bytes keepalive() { return seal({}); }
  // The plaintext of a transport message addressed to us, or nullopt.
  std::optional<Bytes> open(const Bytes& d) {
    if (!have_keys_ || d.size() < 32 || dataplane::load_le32(d.data()) != 4 ||
        dataplane::load_le32(d.data() + 4) != keys_.local_index)
      return std::nullopt;
    Bytes plain(d.size() - 32);
    if (!crypto::transport_open(plain.data(), {d.data() + 16, d.size() - 16},
                                dataplane::load_le64(d.data() + 8), keys_.recv.span()))
      return std::nullopt;
    return plain;
  }

 private:
  crypto::LocalStatic id_;
  crypto::Handshake hs_;
  crypto::CookieGenerator cookie_;
  crypto::SessionKeys keys_;
  bool have_keys_ = false;
  uint32_t index_ = 0;
  uint64_t send_counter_ = 0;
};

// The STUN answer in a decrypted reply packet: checks IP/UDP framing on the way.
std::optional<StunMessage> stun_in(const Bytes& plain, const Bytes& want_dst, uint16_t want_port) {
  const auto ip = parse_ip(plain);
  if (!ip) return std::nullopt;
  EXPECT_TRUE(ip->ip_sum_ok);
  EXPECT_TRUE(ip->l4_sum_ok);
  EXPECT_EQ(ip->proto, 17);
  EXPECT_EQ(ip->src, ip->v6 ? kRes6 : kRes4);
  EXPECT_EQ(ip->dst, want_dst);
  if (ip->l4.size() < 8) return std::nullopt;
  EXPECT_EQ(size_t(ip->l4[4]) << 8 | ip->l4[5], ip->l4.size());
  EXPECT_EQ(uint16_t(ip->l4[0] << 8 | ip->l4[1]), kWgStunPort);
  EXPECT_EQ(uint16_t(ip->l4[2] << 8 | ip->l4[3]), want_port);
  StunDecodeFailure fail;
  auto m = stun_decode(Bytes(ip->l4.begin() + 8, ip->l4.end()), fail);
  if (!m) return std::nullopt;
  return m;
}

Bytes binding_request(StunTxid* txid_out = nullptr) {
  const StunTxid t = stun_new_txid();
  if (txid_out) *txid_out = t;
  return stun_encode_binding_request(t, {.software = "test"});
}

// ---- core harness ----

struct Recorder final : WgStunSink {
  struct Sent {
    Bytes data;
    Endpoint to;
  };
  std::vector<Sent> sent;
  bool send(std::span<const uint8_t> d, const Endpoint& to) override {
    sent.push_back({Bytes(d.begin(), d.end()), to});
    return true;
  }
};

class Core {
 public:
  explicit Core(WgStunOptions opt = {}) {
    crypto::Key k;
    crypto::x25519_generate(k.span());
    r = std::make_unique<WgStunResponder>(k.span(), sink, opt);
  }
  // Hands d to the responder; returns what it sent in answer.
  std::vector<Recorder::Sent> deliver(const Bytes& d, const Endpoint& from) {
    sink.sent.clear();
    r->receive(d, from, now);
    return sink.sent;
  }
  std::vector<Recorder::Sent> tick() {
    sink.sent.clear();
    r->tick(now);
    return sink.sent;
  }
  // Handshake; with confirm, also the keepalive that makes the session current.
  bool connect(TestClient& c, const Endpoint& from, bool confirm = true) {
    const auto out = deliver(c.initiation(now), from);
    if (out.size() != 1 || !out[0].to.same_remote(from) || !c.consume_response(out[0].data))
      return false;
    return !confirm || deliver(c.keepalive(), from).empty();
  }
  // One STUN binding request through the tunnel; the decoded answer, or nullopt.
  std::optional<StunMessage> stun(TestClient& c, const Endpoint& from, bool v6 = false) {
    const Bytes& src = v6 ? kSrc6 : kSrc4;
    const auto out = deliver(c.seal(udp_packet(src, v6 ? kRes6 : kRes4, 40000, 3478,
                                               binding_request())),
                             from);
    if (out.size() != 1) return std::nullopt;
    EXPECT_TRUE(out[0].to.same_remote(from));
    const auto plain = c.open(out[0].data);
    if (!plain) return std::nullopt;
    return stun_in(*plain, src, 40000);
  }
  uint64_t drops(WgStunDrop d) const { return r->drops(d); }
  uint64_t events(WgStunEvent e) const { return r->events(e); }

  Recorder sink;
  std::unique_ptr<WgStunResponder> r;
  Instant now = kT0;
};

class WgStun : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(crypto::init()); }
};

// ---- the answers ----

TEST_F(WgStun, StunAnswersWithOuterEndpointNotInner) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint outer = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(c, outer));
  EXPECT_EQ(core.r->clients(), 1u);
  StunTxid txid;
  const auto out = core.deliver(
      c.seal(udp_packet(kSrc4, kRes4, 51515, 3478, binding_request(&txid))), outer);
  ASSERT_EQ(out.size(), 1u);
  const auto plain = c.open(out[0].data);
  ASSERT_TRUE(plain);
  const auto m = stun_in(*plain, kSrc4, 51515);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->cls, StunClass::kSuccess);
  EXPECT_EQ(m->txid, txid);
  ASSERT_TRUE(m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), "198.51.100.7:40123");
  EXPECT_TRUE(m->fingerprint);
  EXPECT_EQ(m->software.value_or(""), "meshwg-server");
  EXPECT_EQ(core.events(WgStunEvent::kStunAnswered), 1u);
  // Inner IPv6 request, same outer endpoint: the same (IPv4) mapping.
  const auto m6 = core.stun(c, outer, true);
  ASSERT_TRUE(m6 && m6->xor_mapped);
  EXPECT_EQ(m6->xor_mapped->str(), "198.51.100.7:40123");
}

TEST_F(WgStun, ClientRoamsAndMappingFollows) {
  Core core;
  TestClient c(core.r->public_key());
  ASSERT_TRUE(core.connect(c, ep("198.51.100.7:40123")));
  const Endpoint moved = ep("[2001:db8::9]:61000");
  const auto m = core.stun(c, moved);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), "[2001:db8::9]:61000");
  EXPECT_EQ(core.r->client_endpoint(c.pub())->str(), "[2001:db8::9]:61000");
  EXPECT_EQ(core.events(WgStunEvent::kRoamed), 1u);
  // An unauthenticated packet from elsewhere does not move it.
  Bytes forged = c.seal(udp_packet(kSrc4, kRes4, 1, 3478, binding_request()));
  forged[40] ^= 1;
  EXPECT_TRUE(core.deliver(forged, ep("203.0.113.66:1")).empty());
  EXPECT_EQ(core.r->client_endpoint(c.pub())->str(), "[2001:db8::9]:61000");
}

TEST_F(WgStun, InnerStunWithUnknownRequiredAttributeGets420) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint outer = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(c, outer));
  // A binding request with attribute 0x0033 (comprehension-required, unknown), by hand.
  Bytes req = {0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42};
  for (int i = 0; i < 12; ++i) req.push_back(uint8_t(i + 1));
  req.insert(req.end(), {0x00, 0x33, 0x00, 0x04, 1, 2, 3, 4});
  const auto out = core.deliver(c.seal(udp_packet(kSrc4, kRes4, 5000, 3478, req)), outer);
  ASSERT_EQ(out.size(), 1u);
  const auto plain = c.open(out[0].data);
  ASSERT_TRUE(plain);
  StunDecodeFailure fail;
  const auto ip = parse_ip(*plain);
  ASSERT_TRUE(ip && ip->l4.size() > 8);
  const auto m = stun_decode(Bytes(ip->l4.begin() + 8, ip->l4.end()), fail);
  ASSERT_TRUE(m) << stun_error_name(fail.error);
  EXPECT_EQ(m->cls, StunClass::kError);
  ASSERT_TRUE(m->error);
  EXPECT_EQ(m->error->code, 420);
  EXPECT_EQ(m->unknown_attributes, std::vector<uint16_t>{0x0033});
  EXPECT_EQ(core.events(WgStunEvent::kStunUnknownAttributes), 1u);
}

TEST_F(WgStun, EchoRepliesV4AndV6) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint outer = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(c, outer));
  for (const bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "ICMPv6" : "ICMP");
    const Bytes& src = v6 ? kSrc6 : kSrc4;
    Bytes data(333);
    for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7);
    const auto out = core.deliver(c.seal(echo_request(src, v6 ? kRes6 : kRes4, 0xbeef, 42, data)),
                                  outer);
    ASSERT_EQ(out.size(), 1u);
    const auto plain = c.open(out[0].data);
    ASSERT_TRUE(plain);
    const auto ip = parse_ip(*plain);
    ASSERT_TRUE(ip);
    EXPECT_EQ(ip->v6, v6);
    EXPECT_TRUE(ip->ip_sum_ok);
    EXPECT_TRUE(ip->l4_sum_ok);
    EXPECT_EQ(ip->proto, v6 ? 58 : 1);
    EXPECT_EQ(ip->src, v6 ? kRes6 : kRes4);
    EXPECT_EQ(ip->dst, src);
    EXPECT_GT(ip->ttl, 1);
    ASSERT_EQ(ip->l4.size(), 8 + data.size());
    EXPECT_EQ(ip->l4[0], v6 ? 129 : 0);
    EXPECT_EQ(ip->l4[1], 0);
    EXPECT_EQ(Bytes(ip->l4.begin() + 4, ip->l4.begin() + 8), (Bytes{0xbe, 0xef, 0, 42}));
    EXPECT_EQ(Bytes(ip->l4.begin() + 8, ip->l4.end()), data);
    // Padded to 16 like any transport payload, no further than the request was.
    EXPECT_EQ(plain->size() % 16, 0u);
  }
  EXPECT_EQ(core.events(WgStunEvent::kEchoAnswered), 2u);
}

// Every kind of junk inside the tunnel: no reply, exactly its own counter, and the client is
// still answered afterwards.
TEST_F(WgStun, JunkInsideTunnelIsDroppedAndCounted) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint outer = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(c, outer));
  const Bytes req = binding_request();
  struct Case {
    const char* name;
    Bytes inner;
    WgStunDrop want;
  };
  std::vector<Case> cases;
  const Bytes good4 = udp_packet(kSrc4, kRes4, 40000, 3478, req);
  const Bytes good6 = udp_packet(kSrc6, kRes6, 40000, 3478, req);
  auto mutate = [](Bytes b, size_t at, uint8_t x) {
    b[at] ^= x;
    return b;
  };
  cases.push_back({"not IP", Bytes(60, 0x25), WgStunDrop::kBadInnerPacket});
  cases.push_back({"short IPv4", Bytes(good4.begin(), good4.begin() + 19), WgStunDrop::kBadInnerPacket});
  cases.push_back({"IPv4 header checksum", mutate(good4, 10, 0x01), WgStunDrop::kBadInnerPacket});
  {
    Bytes b = good4;  // total length longer than the packet; header sum fixed up
    b[3] += 100;
    b[10] = b[11] = 0;
    const uint16_t s = naive_csum(Bytes(b.begin(), b.begin() + 20));
    b[10] = uint8_t(s >> 8);
    b[11] = uint8_t(s);
    cases.push_back({"IPv4 total length lies", b, WgStunDrop::kBadInnerPacket});
  }
  {
    Bytes b = good4;  // more-fragments flag
    b[6] = 0x20;
    b[10] = b[11] = 0;
    const uint16_t s = naive_csum(Bytes(b.begin(), b.begin() + 20));
    b[10] = uint8_t(s >> 8);
    b[11] = uint8_t(s);
    cases.push_back({"IPv4 fragment", b, WgStunDrop::kInnerFragment});
  }
  cases.push_back({"IPv6 payload length lies", mutate(good6, 5, 0x40), WgStunDrop::kBadInnerPacket});
  cases.push_back({"other IPv4 destination",
                   udp_packet(kSrc4, {100, 100, 100, 101}, 40000, 3478, req), WgStunDrop::kNotReserved});
  cases.push_back({"other IPv6 destination",
                   udp_packet(kSrc6, mutate(kRes6, 15, 3), 40000, 3478, req), WgStunDrop::kNotReserved});
  cases.push_back({"wrong UDP port", udp_packet(kSrc4, kRes4, 40000, 3479, req), WgStunDrop::kWrongPort});
  cases.push_back({"wrong UDP port v6", udp_packet(kSrc6, kRes6, 40000, 53, req), WgStunDrop::kWrongPort});
  cases.push_back({"UDP checksum", mutate(good4, 40, 0x10), WgStunDrop::kBadInnerChecksum});
  {
    Bytes b = good6;  // zero UDP checksum is not allowed over IPv6
    b[46] = b[47] = 0;
    cases.push_back({"zero UDP checksum over IPv6", b, WgStunDrop::kBadInnerChecksum});
  }
  {
    Bytes b = good4;
    b[24] = 0;  // UDP length field lies
    b[25] = 9;
    cases.push_back({"UDP length lies", b, WgStunDrop::kBadInnerPacket});
  }
  cases.push_back({"TCP", ip_packet(kSrc4, kRes4, 6, Bytes(20, 0)), WgStunDrop::kUnsupportedProtocol});
  cases.push_back({"IPv6 hop-by-hop header", ip_packet(kSrc6, kRes6, 0, Bytes(16, 0)),
                   WgStunDrop::kUnsupportedProtocol});
  cases.push_back({"IPv6 fragment header", ip_packet(kSrc6, kRes6, 44, Bytes(16, 0)),
                   WgStunDrop::kInnerFragment});
  {
    Bytes echo_reply = echo_request(kSrc4, kRes4, 1, 1, Bytes(8, 1));
    echo_reply[20] = 0;  // type 0: a reply, not a request; fix the ICMP sum
    echo_reply[22] = echo_reply[23] = 0;
    const uint16_t s = naive_csum(Bytes(echo_reply.begin() + 20, echo_reply.end()));
    echo_reply[22] = uint8_t(s >> 8);
    echo_reply[23] = uint8_t(s);
    cases.push_back({"ICMP echo reply", echo_reply, WgStunDrop::kNotEchoRequest});
  }
  cases.push_back({"ICMP checksum", mutate(echo_request(kSrc4, kRes4, 1, 1, Bytes(8, 1)), 30, 1),
                   WgStunDrop::kBadInnerChecksum});
  cases.push_back({"ICMPv6 checksum", mutate(echo_request(kSrc6, kRes6, 1, 1, Bytes(8, 1)), 50, 1),
                   WgStunDrop::kBadInnerChecksum});
  cases.push_back({"STUN response inside",
                   udp_packet(kSrc4, kRes4, 40000, 3478,
                              stun_encode_binding_success(stun_new_txid(), outer)),
                   WgStunDrop::kStunNotRequest});
  cases.push_back({"not STUN inside", udp_packet(kSrc4, kRes4, 40000, 3478, Bytes(24, 0xee)),
                   WgStunDrop::kStunMalformed});

  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const uint64_t before = core.drops(k.want);
    std::array<uint64_t, size_t(WgStunDrop::kCount)> all{};
    for (size_t i = 0; i < all.size(); ++i) all[i] = core.drops(WgStunDrop(i));
    EXPECT_TRUE(core.deliver(c.seal(k.inner), outer).empty());
    EXPECT_EQ(core.drops(k.want), before + 1);
    for (size_t i = 0; i < all.size(); ++i) {
      if (WgStunDrop(i) == k.want) continue;
      EXPECT_EQ(core.drops(WgStunDrop(i)), all[i]) << wgstun_drop_name(WgStunDrop(i));
    }
  }
  EXPECT_EQ(core.events(WgStunEvent::kStunAnswered), 0u);
  EXPECT_EQ(core.events(WgStunEvent::kEchoAnswered), 0u);
  const auto m = core.stun(c, outer);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), "198.51.100.7:40123");
}

// ---- WireGuard rules ----

TEST_F(WgStun, TransportChecks) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint outer = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(c, outer));
  const Bytes pkt = c.seal(echo_request(kSrc4, kRes4, 1, 1, {}));
  EXPECT_EQ(core.deliver(pkt, outer).size(), 1u);
  EXPECT_TRUE(core.deliver(pkt, outer).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kReplayed), 1u);

  Bytes bad = c.seal(echo_request(kSrc4, kRes4, 1, 2, {}));
  bad.back() ^= 0x80;
  EXPECT_TRUE(core.deliver(bad, outer).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kDecryptFailed), 1u);

  Bytes other = c.seal(echo_request(kSrc4, kRes4, 1, 3, {}));
  other[4] ^= 0x55;  // receiver index
  EXPECT_TRUE(core.deliver(other, outer).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kUnknownIndex), 1u);

  EXPECT_TRUE(core.deliver(c.seal_with({}, dataplane::kRejectAfterMessages), outer).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kKeypairExpired), 1u);

  // Out of order but inside the window is fine.
  const Bytes late = c.seal(echo_request(kSrc4, kRes4, 1, 4, {}));
  const Bytes early = c.seal(echo_request(kSrc4, kRes4, 1, 5, {}));
  EXPECT_EQ(core.deliver(early, outer).size(), 1u);
  EXPECT_EQ(core.deliver(late, outer).size(), 1u);

  // REJECT_AFTER_TIME: the session is dead, nothing is answered.
  core.now += dataplane::kRejectAfterTime;
  EXPECT_TRUE(core.deliver(c.seal(echo_request(kSrc4, kRes4, 1, 6, {})), outer).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kKeypairExpired), 2u);
}

TEST_F(WgStun, SessionUsableOnlyAfterFirstTransport) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint outer = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(c, outer, /*confirm=*/false));
  EXPECT_EQ(core.events(WgStunEvent::kSessionsConfirmed), 0u);
  // The first transport packet (here a STUN request, no keepalive before it) confirms the
  // session and is answered on it.
  const auto m = core.stun(c, outer);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(core.events(WgStunEvent::kSessionsConfirmed), 1u);

  // A new handshake: the old session keeps working until the new one is used; the client
  // (the initiator) switches at once, so its packets arrive on the new one.
  core.now += 1s;
  const auto out = core.deliver(c.initiation(core.now), outer);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(c.consume_response(out[0].data));
  EXPECT_EQ(core.events(WgStunEvent::kSessionsConfirmed), 1u);
  ASSERT_TRUE(core.stun(c, outer));
  EXPECT_EQ(core.events(WgStunEvent::kSessionsConfirmed), 2u);
  EXPECT_EQ(core.r->clients(), 1u);
}

TEST_F(WgStun, InitiationReplayAndRate) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint outer = ep("198.51.100.7:40123");
  const Bytes init = c.initiation(core.now);
  ASSERT_EQ(core.deliver(init, outer).size(), 1u);
  core.now += 1s;
  EXPECT_TRUE(core.deliver(init, outer).empty());  // same timestamp: replay
  EXPECT_EQ(core.drops(WgStunDrop::kHandshakeFailed), 1u);
  EXPECT_EQ(core.deliver(c.initiation(core.now), outer).size(), 1u);
  core.now += 5ms;
  EXPECT_TRUE(core.deliver(c.initiation(core.now), outer).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kHandshakeTooFast), 1u);
  core.now += 30ms;
  EXPECT_EQ(core.deliver(c.initiation(core.now), outer).size(), 1u);
  EXPECT_EQ(core.r->clients(), 1u);
  EXPECT_EQ(core.events(WgStunEvent::kHandshakes), 3u);
}

TEST_F(WgStun, MalformedAndUnexpectedMessages) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint from = ep("198.51.100.7:40123");
  std::mt19937 rng(12345);
  size_t sent = 0;
  for (int i = 0; i < 500; ++i) {
    Bytes d(rng() % 300);
    for (auto& b : d) b = uint8_t(rng());
    if (d.size() >= 4 && i % 3 == 0) {  // a known type word at a wrong size
      dataplane::store_le32(d.data(), 1 + rng() % 3);
      if (d.size() == 148 || d.size() == 92 || d.size() == 64) d.push_back(0);
    }
    if (dataplane::classify(d.data(), d.size()) != 0) continue;  // (random transport sizes)
    EXPECT_TRUE(core.deliver(d, from).empty());
    ++sent;
  }
  Bytes reserved = c.initiation(core.now);
  reserved[1] = 1;  // reserved bytes must be zero
  EXPECT_TRUE(core.deliver(reserved, from).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kMalformed), sent + 1);

  Bytes bad_mac = c.initiation(core.now);
  bad_mac[116] ^= 1;
  EXPECT_TRUE(core.deliver(bad_mac, from).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kInvalidMac1), 1u);

  // A response (with a valid mac1 for us, even): we never initiate.
  Bytes resp(92, 0);
  resp[0] = 2;
  EXPECT_TRUE(core.deliver(resp, from).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kUnexpectedResponse), 1u);
  Bytes cookie(64, 0);
  cookie[0] = 3;
  EXPECT_TRUE(core.deliver(cookie, from).empty());
  EXPECT_EQ(core.drops(WgStunDrop::kCookieReplyUnknown), 1u);
  EXPECT_TRUE(core.deliver(Bytes{4, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0,
                                 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                           from)
                  .empty());
  EXPECT_EQ(core.drops(WgStunDrop::kUnknownIndex), 1u);
  EXPECT_EQ(core.r->clients(), 0u);
  EXPECT_EQ(core.events(WgStunEvent::kHandshakes), 0u);
}

TEST_F(WgStun, UnderLoadCookiesThenRateLimit) {
  WgStunOptions opt;
  opt.load_initiations_per_second = 4;
  Core core(opt);
  // Four fresh clients within a second are answered; the fifth tips the server over.
  for (int i = 0; i < 4; ++i) {
    TestClient c(core.r->public_key());
    EXPECT_EQ(core.deliver(c.initiation(core.now), ep("198.51.100.1:1000")).size(), 1u);
    EXPECT_EQ(core.sink.sent.at(0).data.size(), dataplane::kResponseSize);
  }
  EXPECT_FALSE(core.r->under_load(core.now));
  TestClient c(core.r->public_key());
  const Endpoint from = ep("198.51.100.2:2000");
  auto out = core.deliver(c.initiation(core.now), from);
  EXPECT_TRUE(core.r->under_load(core.now));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].data.size(), dataplane::kCookieReplySize);
  EXPECT_EQ(core.drops(WgStunDrop::kCookieSent), 1u);
  ASSERT_TRUE(c.consume_cookie(out[0].data, core.now));
  // With the cookie (mac2 bound to this source) the initiation goes through under load.
  core.now += 30ms;
  out = core.deliver(c.initiation(core.now), from);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data.size(), dataplane::kResponseSize);
  EXPECT_TRUE(c.consume_response(out[0].data));
  // The cookie is worth nothing from another source.
  core.now += 30ms;
  out = core.deliver(c.initiation(core.now), ep("198.51.100.3:2000"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data.size(), dataplane::kCookieReplySize);
  // Per-source rate limit (burst 5, 20/s) on top of mac2.
  size_t answered = 0;
  for (int i = 0; i < 20; ++i) {
    core.now += 21ms;  // past the per-client 20 ms limit, well under 20/s
    out = core.deliver(c.initiation(core.now), from);
    if (out.size() == 1 && out[0].data.size() == dataplane::kResponseSize) ++answered;
  }
  EXPECT_GT(core.drops(WgStunDrop::kRateLimited), 0u);
  EXPECT_LT(answered, 20u);
  // A second after the flood, not under load any more: no mac2 needed.
  core.now += 2s;
  EXPECT_FALSE(core.r->under_load(core.now));
  TestClient late(core.r->public_key());
  out = core.deliver(late.initiation(core.now), ep("198.51.100.9:9"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data.size(), dataplane::kResponseSize);
}

// ---- state bounds ----

TEST_F(WgStun, FreshKeyFloodKeepsBoundAndEstablishedClient) {
  WgStunOptions opt;
  opt.max_clients = 8;
  opt.load_initiations_per_second = 1000000;  // this test is about the table, not cookies
  Core core(opt);
  TestClient a(core.r->public_key());
  const Endpoint a_ep = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(a, a_ep));
  for (int i = 0; i < 100; ++i) {
    core.now += 1ms;
    TestClient f(core.r->public_key());
    const std::string src = "203.0.113." + std::to_string(i % 200) + ":" + std::to_string(1000 + i);
    EXPECT_EQ(core.deliver(f.initiation(core.now), ep(src.c_str())).size(), 1u);
    ASSERT_LE(core.r->clients(), opt.max_clients);
  }
  EXPECT_EQ(core.r->clients(), opt.max_clients);
  EXPECT_EQ(core.events(WgStunEvent::kClientsEvicted), 100u + 1 - opt.max_clients);
  // The established client kept its session: answered without a new handshake.
  const auto m = core.stun(a, a_ep);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), "198.51.100.7:40123");
}

TEST_F(WgStun, ConfirmedFloodEvictsLruAndClientRehandshakes) {
  WgStunOptions opt;
  opt.max_clients = 4;
  opt.load_initiations_per_second = 1000000;
  Core core(opt);
  TestClient a(core.r->public_key());
  const Endpoint a_ep = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(a, a_ep));
  for (int i = 0; i < 20; ++i) {
    core.now += 1ms;
    TestClient f(core.r->public_key());
    ASSERT_TRUE(core.connect(f, ep("203.0.113.5:7000")));
    ASSERT_LE(core.r->clients(), opt.max_clients);
  }
  EXPECT_FALSE(core.r->client_endpoint(a.pub()));
  const uint64_t unknown = core.drops(WgStunDrop::kUnknownIndex);
  EXPECT_FALSE(core.stun(a, a_ep));
  EXPECT_EQ(core.drops(WgStunDrop::kUnknownIndex), unknown + 1);
  core.now += 1s;
  ASSERT_TRUE(core.connect(a, a_ep));
  const auto m = core.stun(a, a_ep);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), "198.51.100.7:40123");
  EXPECT_LE(core.r->clients(), opt.max_clients);
}

// The table against a deliberately naive model: two vectors of (key, last active), evicting
// the oldest unconfirmed entry, else the oldest confirmed one.
TEST_F(WgStun, LruMatchesNaiveModel) {
  WgStunOptions opt;
  opt.max_clients = 6;
  opt.load_initiations_per_second = 1000000;
  Core core(opt);
  struct ModelEntry {
    size_t client;
    bool confirmed;
    int64_t last;
  };
  std::vector<ModelEntry> model;
  std::vector<std::unique_ptr<TestClient>> clients;
  std::vector<bool> has_session;
  const Endpoint from = ep("198.51.100.7:40123");
  std::mt19937 rng(777);
  int64_t t = 0;
  auto find = [&](size_t k) {
    return std::find_if(model.begin(), model.end(), [&](const ModelEntry& e) { return e.client == k; });
  };
  for (int step = 0; step < 400; ++step) {
    ++t;
    core.now += 25ms;
    const unsigned op = rng() % 3;
    if (op == 0 || clients.empty()) {  // a new client's initiation, or a known one re-initiating
      size_t k;
      if (!clients.empty() && rng() % 4 == 0) {
        k = rng() % clients.size();
      } else {
        clients.push_back(std::make_unique<TestClient>(core.r->public_key()));
        has_session.push_back(false);
        k = clients.size() - 1;
      }
      const auto out = core.deliver(clients[k]->initiation(core.now), from);
      ASSERT_EQ(out.size(), 1u);
      ASSERT_TRUE(clients[k]->consume_response(out[0].data));
      has_session[k] = true;
      if (auto it = find(k); it != model.end()) {
        it->last = t;
      } else {
        if (model.size() == opt.max_clients) {
          auto victim = model.end();
          for (bool conf : {false, true}) {
            for (auto e = model.begin(); e != model.end(); ++e)
              if (e->confirmed == conf && (victim == model.end() || e->last < victim->last)) victim = e;
            if (victim != model.end()) break;
          }
          model.erase(victim);
        }
        model.push_back({k, false, t});
      }
    } else {  // a keepalive from some client that has a session (confirms it)
      const size_t k = rng() % clients.size();
      if (!has_session[k]) continue;
      const bool known = find(k) != model.end();
      EXPECT_TRUE(core.deliver(clients[k]->keepalive(), from).empty());
      if (known) {
        find(k)->last = t;
        find(k)->confirmed = true;
      }
    }
    ASSERT_EQ(core.r->clients(), model.size()) << "step " << step;
    for (size_t k = 0; k < clients.size(); ++k)
      ASSERT_EQ(core.r->client_endpoint(clients[k]->pub()).has_value(), find(k) != model.end())
          << "step " << step << " client " << k;
  }
  EXPECT_GT(core.events(WgStunEvent::kClientsEvicted), 20u);
}

TEST_F(WgStun, IdleClientsExpire) {
  Core core;  // unconfirmed 30 s, confirmed 180 s
  TestClient pending(core.r->public_key());
  TestClient active(core.r->public_key());
  TestClient idle(core.r->public_key());
  const Endpoint from = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(pending, from, false));
  ASSERT_TRUE(core.connect(active, from));
  ASSERT_TRUE(core.connect(idle, from));
  EXPECT_EQ(core.r->clients(), 3u);
  core.now += 29s;
  core.tick();
  EXPECT_EQ(core.r->clients(), 3u);
  core.now += 2s;
  core.tick();
  EXPECT_EQ(core.r->clients(), 2u);
  EXPECT_FALSE(core.r->client_endpoint(pending.pub()));
  for (int i = 0; i < 20; ++i) {  // `active` keeps sending keepalives every 10 s
    core.now += 10s;
    core.deliver(active.keepalive(), from);
    core.tick();
  }
  EXPECT_TRUE(core.r->client_endpoint(active.pub()));
  EXPECT_FALSE(core.r->client_endpoint(idle.pub()));
  EXPECT_EQ(core.events(WgStunEvent::kClientsExpired), 2u);
}

TEST_F(WgStun, PassiveKeepaliveAfterUnansweredData) {
  Core core;
  TestClient c(core.r->public_key());
  const Endpoint from = ep("198.51.100.7:40123");
  ASSERT_TRUE(core.connect(c, from));
  // Answered data: nothing more is due.
  ASSERT_TRUE(core.stun(c, from));
  core.now += 11s;
  EXPECT_TRUE(core.tick().empty());
  // Data that is dropped inside: a keepalive after KEEPALIVE_TIMEOUT, once.
  EXPECT_TRUE(core.deliver(c.seal(udp_packet(kSrc4, kRes4, 1, 9, {})), from).empty());
  core.now += 9s;
  EXPECT_TRUE(core.tick().empty());
  core.now += 1s;
  const auto out = core.tick();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data.size(), dataplane::kKeepaliveSize);
  const auto plain = c.open(out[0].data);
  ASSERT_TRUE(plain);
  EXPECT_TRUE(plain->empty());
  core.now += 10s;
  EXPECT_TRUE(core.tick().empty());
  EXPECT_EQ(core.events(WgStunEvent::kKeepalivesSent), 1u);
}

// ---- over real UDP sockets on loopback ----

using testing::local_endpoint;
using testing::udp_socket;

std::optional<Bytes> recv_within(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, ms) <= 0) return std::nullopt;
  Bytes b(65536);
  const ssize_t n = ::recv(fd, b.data(), b.size(), MSG_DONTWAIT);
  if (n < 0) return std::nullopt;
  b.resize(size_t(n));
  return b;
}

class Loopback {
 public:
  explicit Loopback(const char* server_addr, int family, const char* client_addr,
                    WgStunOptions opt = {}) {
    crypto::Key k;
    crypto::x25519_generate(k.span());
    server = std::make_unique<WgStunServer>(k.span(), opt);
    std::string err;
    Endpoint bind = ep(server_addr);
    ok = server->open(bind, err);
    if (!ok) return;
    fd = udp_socket(family, client_addr);
    ok = fd >= 0;
  }
  ~Loopback() {
    if (fd >= 0) ::close(fd);
  }
  // Sends d from the client socket and lets the server handle everything queued.
  void send(const Bytes& d) {
    const Endpoint& to = server->local();
    EXPECT_EQ(::sendto(fd, d.data(), d.size(), 0, &to.addr.sa, to.socklen()), ssize_t(d.size()));
    pollfd p{server->fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 2000), 1);
    while (server->on_readable(std::chrono::steady_clock::now()) > 0) {
    }
  }
  std::optional<Bytes> exchange(const Bytes& d, int wait_ms = 1000) {
    send(d);
    return recv_within(fd, wait_ms);
  }
  bool connect(TestClient& c) {
    const auto resp = exchange(c.initiation(std::chrono::steady_clock::now()));
    if (!resp || !c.consume_response(*resp)) return false;
    send(c.keepalive());
    return true;
  }

  std::unique_ptr<WgStunServer> server;
  int fd = -1;
  bool ok = false;
};

TEST_F(WgStun, LoopbackStunReportsClientSocketAddress) {
  Loopback lb("127.0.0.1:0", AF_INET, "127.0.0.1");
  ASSERT_TRUE(lb.ok);
  TestClient c(lb.server->responder().public_key());
  ASSERT_TRUE(lb.connect(c));
  const Endpoint me = local_endpoint(lb.fd);
  for (const bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "inner IPv6" : "inner IPv4");
    const Bytes& src = v6 ? kSrc6 : kSrc4;
    StunTxid txid;
    const auto reply =
        lb.exchange(c.seal(udp_packet(src, v6 ? kRes6 : kRes4, 33333, 3478, binding_request(&txid))));
    ASSERT_TRUE(reply);
    const auto plain = c.open(*reply);
    ASSERT_TRUE(plain);
    const auto m = stun_in(*plain, src, 33333);
    ASSERT_TRUE(m && m->xor_mapped);
    EXPECT_EQ(m->txid, txid);
    EXPECT_EQ(m->xor_mapped->str(), me.str());
    EXPECT_NE(m->xor_mapped->port(), 33333);
  }
  // Echo through the real socket too.
  const auto reply = lb.exchange(c.seal(echo_request(kSrc4, kRes4, 7, 8, Bytes(56, 0xab))));
  ASSERT_TRUE(reply);
  const auto ip = parse_ip(c.open(*reply).value_or(Bytes{}));
  ASSERT_TRUE(ip);
  EXPECT_EQ(ip->l4.at(0), 0);
  EXPECT_TRUE(ip->l4_sum_ok);
  EXPECT_EQ(lb.server->responder().events(WgStunEvent::kStunAnswered), 2u);
  EXPECT_EQ(lb.server->responder().events(WgStunEvent::kEchoAnswered), 1u);
}

TEST_F(WgStun, LoopbackIpv6Outer) {
  Loopback lb("[::1]:0", AF_INET6, "::1");
  if (!lb.ok) GTEST_SKIP() << "no ::1 on this host";
  TestClient c(lb.server->responder().public_key());
  ASSERT_TRUE(lb.connect(c));
  const auto reply = lb.exchange(c.seal(udp_packet(kSrc4, kRes4, 1234, 3478, binding_request())));
  ASSERT_TRUE(reply);
  const auto m = stun_in(c.open(*reply).value_or(Bytes{}), kSrc4, 1234);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), local_endpoint(lb.fd).str());
}

TEST_F(WgStun, LoopbackDualStackReportsIpv4) {
  Loopback lb("[::]:0", AF_INET, "127.0.0.1");
  if (!lb.ok) GTEST_SKIP() << "no IPv6 sockets on this host";
  // The server socket is [::]:port; reach it over 127.0.0.1.
  Endpoint to = ep("127.0.0.1:1");
  to.addr.in4.sin_port = lb.server->local().addr.in6.sin6_port;
  TestClient c(lb.server->responder().public_key());
  const Bytes init = c.initiation(std::chrono::steady_clock::now());
  ASSERT_EQ(::sendto(lb.fd, init.data(), init.size(), 0, &to.addr.sa, to.socklen()), ssize_t(init.size()));
  pollfd p{lb.server->fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  lb.server->on_readable(std::chrono::steady_clock::now());
  const auto resp = recv_within(lb.fd, 1000);
  ASSERT_TRUE(resp && c.consume_response(*resp));
  const Bytes req = c.seal(udp_packet(kSrc4, kRes4, 1, 3478, binding_request()));
  ASSERT_EQ(::sendto(lb.fd, req.data(), req.size(), 0, &to.addr.sa, to.socklen()), ssize_t(req.size()));
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  lb.server->on_readable(std::chrono::steady_clock::now());
  const auto reply = recv_within(lb.fd, 1000);
  ASSERT_TRUE(reply);
  const auto m = stun_in(c.open(*reply).value_or(Bytes{}), kSrc4, 1);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), local_endpoint(lb.fd).str());  // 127.0.0.1:port, not ::ffff:
}

TEST_F(WgStun, LoopbackJunkAndFloodLeaveClientAnswered) {
  WgStunOptions opt;
  opt.max_clients = 16;
  opt.load_initiations_per_second = 1000000;
  Loopback lb("127.0.0.1:0", AF_INET, "127.0.0.1", opt);
  ASSERT_TRUE(lb.ok);
  const WgStunResponder& r = lb.server->responder();
  TestClient c(r.public_key());
  ASSERT_TRUE(lb.connect(c));
  // Junk: random bytes of random sizes, none of them a well-formed message.
  std::mt19937 rng(99);
  uint64_t junk = 0;
  for (int i = 0; i < 300; ++i) {
    Bytes d(1 + rng() % 200);
    for (auto& b : d) b = uint8_t(rng());
    d[0] = uint8_t(5 + rng() % 250);  // never a valid type word
    lb.send(d);
    ++junk;
  }
  EXPECT_EQ(r.drops(WgStunDrop::kMalformed), junk);
  // A flood of initiations from fresh keys, more than the table holds, all answered.
  int responses = 0;
  for (int i = 0; i < 60; ++i) {
    TestClient f(r.public_key());
    const auto resp = lb.exchange(f.initiation(std::chrono::steady_clock::now()));
    if (resp && f.consume_response(*resp)) ++responses;
    ASSERT_LE(r.clients(), opt.max_clients);
  }
  EXPECT_EQ(responses, 60);
  EXPECT_FALSE(recv_within(lb.fd, 50));  // junk got no answers
  const auto reply = lb.exchange(c.seal(udp_packet(kSrc4, kRes4, 4242, 3478, binding_request())));
  ASSERT_TRUE(reply);
  const auto m = stun_in(c.open(*reply).value_or(Bytes{}), kSrc4, 4242);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), local_endpoint(lb.fd).str());
}

// ---- plain STUN server ----

// Runs a StunServer's poll loop on a thread until destroyed.
class StunServerThread {
 public:
  explicit StunServerThread(const char* bind) {
    std::string err;
    ok_ = server_.open(ep(bind), err);
    efd_ = ::eventfd(0, EFD_CLOEXEC);
    if (!ok_ || efd_ < 0) return;
    thread_ = std::thread([this] {
      for (;;) {
        pollfd p[2] = {{efd_, POLLIN, 0}, {server_.fd(), POLLIN, 0}};
        if (::poll(p, 2, 10000) <= 0 || (p[0].revents & POLLIN)) return;
        server_.on_readable();
      }
    });
  }
  ~StunServerThread() {
    if (thread_.joinable()) {
      const uint64_t one = 1;
      EXPECT_EQ(::write(efd_, &one, sizeof(one)), ssize_t(sizeof(one)));
      thread_.join();
    }
    if (efd_ >= 0) ::close(efd_);
  }
  bool ok() const { return ok_; }
  StunServer& server() { return server_; }

 private:
  StunServer server_;
  bool ok_ = false;
  int efd_ = -1;
  std::thread thread_;
};

TEST_F(WgStun, PlainStunAnswersStunQuery) {
  StunServerThread t("127.0.0.1:0");
  ASSERT_TRUE(t.ok());
  const int fd = udp_socket(AF_INET, "127.0.0.1");
  ASSERT_GE(fd, 0);
  const StunQueryOptions opt{.retransmit = {.rto = 100ms, .rc = 3, .rm = 4}};
  const StunQueryResult r = stun_query(t.server().local(), fd, opt);
  EXPECT_EQ(r.error, StunQueryError::kOk) << stun_query_error_name(r.error);
  EXPECT_EQ(r.mapped.str(), local_endpoint(fd).str());
  ::close(fd);
  // A fresh socket of stun_query's own, and IPv6 where there is ::1.
  EXPECT_TRUE(stun_query(t.server().local(), -1, opt).ok());
  StunServerThread t6("[::1]:0");
  if (t6.ok()) {
    const int fd6 = udp_socket(AF_INET6, "::1");
    ASSERT_GE(fd6, 0);
    const StunQueryResult r6 = stun_query(t6.server().local(), fd6, opt);
    EXPECT_EQ(r6.error, StunQueryError::kOk) << stun_query_error_name(r6.error);
    EXPECT_EQ(r6.mapped.str(), local_endpoint(fd6).str());
    ::close(fd6);
  }
  EXPECT_GE(t.server().count(StunServerCounter::kSuccess), 2u);
}

TEST_F(WgStun, PlainStun420AndIgnores) {
  StunServerThread t("127.0.0.1:0");
  ASSERT_TRUE(t.ok());
  const int fd = udp_socket(AF_INET, "127.0.0.1");
  ASSERT_GE(fd, 0);
  const Endpoint& to = t.server().local();
  auto send = [&](const Bytes& d) {
    EXPECT_EQ(::sendto(fd, d.data(), d.size(), 0, &to.addr.sa, to.socklen()), ssize_t(d.size()));
  };
  // Request with two unknown comprehension-required attributes (and one optional).
  Bytes req = {0x00, 0x01, 0x00, 0x18, 0x21, 0x12, 0xa4, 0x42};
  for (int i = 0; i < 12; ++i) req.push_back(uint8_t(0xa0 + i));
  req.insert(req.end(), {0x00, 0x31, 0x00, 0x01, 9, 0, 0, 0});
  req.insert(req.end(), {0x80, 0x99, 0x00, 0x04, 1, 2, 3, 4});  // optional: skipped
  req.insert(req.end(), {0x7f, 0xfe, 0x00, 0x00});
  req.insert(req.end(), {0x00, 0x31, 0x00, 0x00});  // repeated: reported once
  send(req);
  const auto ans = recv_within(fd, 2000);
  ASSERT_TRUE(ans);
  StunDecodeFailure fail;
  const auto m = stun_decode(*ans, fail);
  ASSERT_TRUE(m) << stun_error_name(fail.error);
  EXPECT_EQ(m->cls, StunClass::kError);
  EXPECT_EQ(m->txid, (StunTxid{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab}));
  ASSERT_TRUE(m->error);
  EXPECT_EQ(m->error->code, 420);
  EXPECT_EQ(m->unknown_attributes, (std::vector<uint16_t>{0x0031, 0x7ffe}));
  EXPECT_TRUE(m->fingerprint);

  // Ignored: a success response, an indication, junk, a request cut short.
  send(stun_encode_binding_success(stun_new_txid(), ep("1.2.3.4:5")));
  Bytes ind = binding_request();
  ind[1] = 0x11;  // Binding indication
  send(ind);
  send(Bytes(40, 0x55));
  Bytes cut = binding_request();
  cut.resize(cut.size() - 4);
  send(cut);
  EXPECT_FALSE(recv_within(fd, 200));
  // A good request still works after all that.
  send(binding_request());
  const auto ok = recv_within(fd, 2000);
  ASSERT_TRUE(ok);
  const auto m2 = stun_decode(*ok, fail);
  ASSERT_TRUE(m2 && m2->xor_mapped);
  EXPECT_EQ(m2->xor_mapped->str(), local_endpoint(fd).str());
  ::close(fd);
  EXPECT_EQ(t.server().count(StunServerCounter::kUnknownAttributes), 1u);
  EXPECT_EQ(t.server().count(StunServerCounter::kNotRequest), 2u);
  EXPECT_EQ(t.server().count(StunServerCounter::kMalformed), 2u);
  EXPECT_EQ(t.server().malformed(StunError::kNotStun) + t.server().malformed(StunError::kBadCookie), 1u);
  EXPECT_EQ(t.server().malformed(StunError::kLengthMismatch), 1u);
  EXPECT_EQ(t.server().count(StunServerCounter::kSuccess), 1u);
}

TEST_F(WgStun, StunServerAnswerIsSansIo) {
  const Endpoint mapped_v6 = ep("[::ffff:192.0.2.1]:7");
  StunTxid txid;
  const StunServerReply r = stun_server_answer(binding_request(&txid), mapped_v6, "");
  EXPECT_EQ(r.outcome, StunServerCounter::kSuccess);
  StunDecodeFailure fail;
  const auto m = stun_decode(r.datagram, fail);
  ASSERT_TRUE(m && m->xor_mapped);
  EXPECT_EQ(m->xor_mapped->str(), "192.0.2.1:7");
  EXPECT_FALSE(m->software);
  EXPECT_EQ(m->txid, txid);
  EXPECT_TRUE(stun_server_answer(Bytes{}, mapped_v6, "x").datagram.empty());
}

}  // namespace
}  // namespace meshwg::control
