// Tests for tun/offload: the virtio-net header codec, gso_split and GroTable.
//
// Expected packets come from an independent builder in this file (its own byte layout and a
// deliberately naive checksum over a materialized pseudo-header), never from the code under
// test, so a wrong field or checksum in offload.cc shows up as a byte difference.
#include "tun/offload.h"

#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace meshwg::tun {
namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint8_t kFin = 0x01, kSyn = 0x02, kPsh = 0x08, kAck = 0x10, kCwr = 0x80;

// ---- the independent reference ----

// RFC 1071 the slow way: 16-bit big-endian words, odd byte padded, folded, complemented.
uint16_t ref_checksum(const Bytes& b) {
  uint32_t s = 0;
  for (size_t i = 0; i < b.size(); i += 2) {
    s += uint32_t(b[i]) << 8;
    if (i + 1 < b.size()) s += b[i + 1];
  }
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(~s);
}

// Pseudo-header bytes followed by the L4 bytes, as RFC 793 / RFC 8200 §8.1 draw them.
Bytes ref_pseudo(const Bytes& ip, bool v6, uint8_t proto, size_t l4_off) {
  const size_t l4_len = ip.size() - l4_off;
  if (!v6) {
    return {ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19],
            0, proto, uint8_t(l4_len >> 8), uint8_t(l4_len)};
  }
  Bytes ph(ip.begin() + 8, ip.begin() + 40);  // source and destination
  for (uint8_t b : {uint8_t(l4_len >> 24), uint8_t(l4_len >> 16), uint8_t(l4_len >> 8),
                    uint8_t(l4_len), uint8_t(0), uint8_t(0), uint8_t(0), proto})
    ph.push_back(b);
  return ph;
}

uint16_t ref_l4_checksum(const Bytes& ip, bool v6, uint8_t proto, size_t l4_off) {
  Bytes all = ref_pseudo(ip, v6, proto, l4_off);
  all.insert(all.end(), ip.begin() + l4_off, ip.end());
  return ref_checksum(all);
}

// The value the kernel expects in the L4 field with NEEDS_CSUM: the folded pseudo-header
// sum, not complemented.
uint16_t ref_partial(const Bytes& ip, bool v6, uint8_t proto, size_t l4_off) {
  return uint16_t(~ref_checksum(ref_pseudo(ip, v6, proto, l4_off)));
}

struct Spec {
  bool v6 = false;
  bool tcp = true;
  uint8_t src4[4] = {10, 0, 0, 1}, dst4[4] = {10, 0, 0, 2};
  uint8_t src6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  uint8_t dst6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  uint16_t sport = 40000, dport = 5201;
  uint32_t seq = 0xfffff000;  // wraps inside the big tests
  uint32_t ack = 0x01020304;
  uint8_t flags = kAck;
  uint16_t window = 502;
  Bytes options;
  uint8_t ttl = 64, tos = 0x10;
  uint16_t id = 0xfff0;  // wraps too
  uint32_t flow_label = 0x12345;
  Bytes payload;
};

size_t iph_len(const Spec& s) { return s.v6 ? 40 : 20; }
size_t l4h_len(const Spec& s) { return s.tcp ? 20 + s.options.size() : 8; }

Bytes build(const Spec& s) {
  const size_t iph = iph_len(s), l4h = l4h_len(s);
  const size_t total = iph + l4h + s.payload.size();
  Bytes p(total, 0);
  const uint8_t proto = s.tcp ? 6 : 17;
  if (!s.v6) {
    p[0] = 0x45;
    p[1] = s.tos;
    p[2] = uint8_t(total >> 8), p[3] = uint8_t(total);
    p[4] = uint8_t(s.id >> 8), p[5] = uint8_t(s.id);
    p[6] = 0x40;  // DF
    p[8] = s.ttl;
    p[9] = proto;
    std::memcpy(&p[12], s.src4, 4);
    std::memcpy(&p[16], s.dst4, 4);
    const uint16_t c = ref_checksum(Bytes(p.begin(), p.begin() + 20));
    p[10] = uint8_t(c >> 8), p[11] = uint8_t(c);
  } else {
    p[0] = uint8_t(0x60 | s.tos >> 4);
    p[1] = uint8_t(s.tos << 4 | (s.flow_label >> 16 & 0xf));
    p[2] = uint8_t(s.flow_label >> 8), p[3] = uint8_t(s.flow_label);
    const size_t pl = total - 40;
    p[4] = uint8_t(pl >> 8), p[5] = uint8_t(pl);
    p[6] = proto;
    p[7] = s.ttl;
    std::memcpy(&p[8], s.src6, 16);
    std::memcpy(&p[24], s.dst6, 16);
  }
  uint8_t* l4 = &p[iph];
  l4[0] = uint8_t(s.sport >> 8), l4[1] = uint8_t(s.sport);
  l4[2] = uint8_t(s.dport >> 8), l4[3] = uint8_t(s.dport);
  size_t csum_at;
  if (s.tcp) {
    for (int i = 0; i < 4; ++i) l4[4 + i] = uint8_t(s.seq >> (24 - 8 * i));
    for (int i = 0; i < 4; ++i) l4[8 + i] = uint8_t(s.ack >> (24 - 8 * i));
    l4[12] = uint8_t(l4h / 4 << 4);
    l4[13] = s.flags;
    l4[14] = uint8_t(s.window >> 8), l4[15] = uint8_t(s.window);
    std::copy(s.options.begin(), s.options.end(), l4 + 20);
    csum_at = 16;
  } else {
    const size_t ul = l4h + s.payload.size();
    l4[4] = uint8_t(ul >> 8), l4[5] = uint8_t(ul);
    csum_at = 6;
  }
  std::copy(s.payload.begin(), s.payload.end(), l4 + l4h);
  uint16_t c = ref_l4_checksum(p, s.v6, proto, iph);
  if (!s.tcp && c == 0) c = 0xffff;
  p[iph + csum_at] = uint8_t(c >> 8), p[iph + csum_at + 1] = uint8_t(c);
  return p;
}

// Independently checks every checksum of a built-or-produced packet (no options, no
// extension headers, as everything in these tests).
bool ref_valid(const Bytes& p) {
  if (p.size() < 20) return false;
  const bool v6 = p[0] >> 4 == 6;
  const size_t iph = v6 ? 40 : size_t(p[0] & 0xf) * 4;
  if (!v6 && ref_checksum(Bytes(p.begin(), p.begin() + long(iph))) != 0) return false;
  const uint8_t proto = v6 ? p[6] : p[9];
  return ref_l4_checksum(p, v6, proto, iph) == 0;
}

Bytes pattern(size_t n, uint32_t seed) {
  Bytes b(n);
  std::mt19937 rng(seed);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

const Bytes kTimestamps = {1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78};

// The header a kernel would put on a super-packet built from s.
VirtioNetHdr kernel_hdr(const Spec& s, uint8_t type, uint16_t gso_size) {
  VirtioNetHdr h;
  h.flags = VirtioNetHdr::kFlagNeedsCsum;
  h.gso_type = type;
  h.hdr_len = uint16_t(iph_len(s) + l4h_len(s));
  h.gso_size = gso_size;
  h.csum_start = uint16_t(iph_len(s));
  h.csum_offset = s.tcp ? 16 : 6;
  return h;
}

// Super-packet as the kernel hands it over: L4 field = partial pseudo-header sum.
Bytes kernel_super(const Spec& s) {
  Bytes p = build(s);
  const size_t at = iph_len(s) + (s.tcp ? 16 : 6);
  const uint16_t c = ref_partial(p, s.v6, s.tcp ? 6 : 17, iph_len(s));
  p[at] = uint8_t(c >> 8), p[at + 1] = uint8_t(c);
  return p;
}

struct Out {
  std::vector<Bytes> store;
  std::vector<std::span<uint8_t>> bufs;
  std::vector<size_t> lens;
  explicit Out(size_t n, size_t cap = 65535) : store(n, Bytes(cap)), lens(n) {
    for (auto& b : store) bufs.emplace_back(b);
  }
  Bytes pkt(size_t i) const { return Bytes(store[i].begin(), store[i].begin() + long(lens[i])); }
};

int split(const Bytes& in, const VirtioNetHdr& h, Out& o) {
  return gso_split(in, h, o.bufs, o.lens);
}

// ---- header codec and checksum helpers ----

TEST(VirtioNetHdr, LittleEndianLayout) {
  const uint8_t wire[10] = {0x01, 0x81, 0x34, 0x00, 0x78, 0x05, 0x14, 0x00, 0x10, 0x00};
  const auto h = VirtioNetHdr::parse(wire);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->flags, 1);
  EXPECT_EQ(h->gso_type, 0x81);
  EXPECT_EQ(h->hdr_len, 0x34);
  EXPECT_EQ(h->gso_size, 1400);
  EXPECT_EQ(h->csum_start, 20);
  EXPECT_EQ(h->csum_offset, 16);
  uint8_t back[10];
  h->serialize(back);
  EXPECT_EQ(0, std::memcmp(back, wire, 10));
  EXPECT_FALSE(VirtioNetHdr::parse(std::span<const uint8_t>(wire, 9)).has_value());
}

TEST(Checksum, MatchesNaiveForAllLengthsAndChaining) {
  for (size_t n = 0; n < 300; ++n) {
    const Bytes b = pattern(n, uint32_t(n));
    ASSERT_EQ(checksum_finish(checksum_sum(b)), ref_checksum(b)) << n;
    const size_t cut = (n / 3) & ~size_t(1);  // chained regions must split at even offsets
    const uint16_t s1 = checksum_sum(std::span(b).first(cut));
    ASSERT_EQ(checksum_finish(checksum_sum(std::span(b).subspan(cut), s1)), ref_checksum(b));
  }
  const Bytes ones(70000, 0xff);  // large sums exercise every fold
  EXPECT_EQ(checksum_finish(checksum_sum(ones)), ref_checksum(ones));
}

TEST(Checksum, PseudoHeader) {
  Spec s;
  s.payload = pattern(33, 1);
  for (bool v6 : {false, true}) {
    s.v6 = v6;
    const Bytes p = build(s);
    const size_t iph = iph_len(s);
    const auto src = v6 ? std::span(p).subspan(8, 16) : std::span(p).subspan(12, 4);
    const auto dst = v6 ? std::span(p).subspan(24, 16) : std::span(p).subspan(16, 4);
    EXPECT_EQ(pseudo_header_sum(src, dst, 6, uint32_t(p.size() - iph)),
              ref_partial(p, v6, 6, iph));
  }
}

// ---- split ----

void expect_tcp_split(bool v6) {
  Spec s;
  s.v6 = v6;
  s.options = kTimestamps;
  s.flags = kAck | kPsh | kFin | kCwr;
  s.payload = pattern(10 * 1400 + 700, 7);
  const Bytes super = kernel_super(s);
  const auto h = kernel_hdr(s, v6 ? VirtioNetHdr::kGsoTcpV6 : VirtioNetHdr::kGsoTcpV4, 1400);
  Out o(16, 1600);
  ASSERT_EQ(split(super, h, o), 11);
  for (size_t i = 0; i < 11; ++i) {
    Spec e = s;
    e.seq = s.seq + uint32_t(1400 * i);
    e.id = uint16_t(s.id + i);
    e.flags = kAck;
    if (i == 0) e.flags |= kCwr;
    if (i == 10) e.flags |= kPsh | kFin;
    e.payload.assign(s.payload.begin() + long(1400 * i),
                     s.payload.begin() + long(std::min<size_t>(1400 * (i + 1), s.payload.size())));
    const Bytes got = o.pkt(i);
    EXPECT_EQ(got, build(e)) << "segment " << i;
    EXPECT_TRUE(ref_valid(got)) << "segment " << i;
  }
  EXPECT_EQ(o.lens[10], iph_len(s) + 32 + 700);
}

TEST(GsoSplit, TcpV4WithTimestamps) { expect_tcp_split(false); }
TEST(GsoSplit, TcpV6WithTimestamps) { expect_tcp_split(true); }

TEST(GsoSplit, TcpEcnTypeAccepted) {
  Spec s;
  s.flags = kAck | kCwr;
  s.payload = pattern(3000, 2);
  const Bytes super = kernel_super(s);
  Out o(4, 1600);
  ASSERT_EQ(split(super, kernel_hdr(s, VirtioNetHdr::kGsoTcpV4 | VirtioNetHdr::kGsoEcn, 1448), o),
            3);
  EXPECT_EQ(o.pkt(0)[20 + 13], kAck | kCwr);
  EXPECT_EQ(o.pkt(1)[20 + 13], kAck);
}

TEST(GsoSplit, UdpL4) {
  for (bool v6 : {false, true}) {
    Spec s;
    s.v6 = v6;
    s.tcp = false;
    s.payload = pattern(3 * 1200 + 100, 9);
    const Bytes super = kernel_super(s);
    Out o(8, 1600);
    ASSERT_EQ(split(super, kernel_hdr(s, VirtioNetHdr::kGsoUdpL4, 1200), o), 4) << v6;
    for (size_t i = 0; i < 4; ++i) {
      Spec e = s;
      e.id = uint16_t(s.id + i);
      const size_t end = std::min<size_t>(1200 * (i + 1), s.payload.size());
      e.payload.assign(s.payload.begin() + long(1200 * i), s.payload.begin() + long(end));
      EXPECT_EQ(o.pkt(i), build(e)) << "v6 " << v6 << " segment " << i;
      EXPECT_TRUE(ref_valid(o.pkt(i)));
    }
  }
}

TEST(GsoSplit, KernelHdrLenLargerThanHeadersIsIgnored) {
  // On the forwarding path hdr_len can be skb_headlen(): the whole first segment.
  Spec s;
  s.payload = pattern(2800, 3);
  const Bytes super = kernel_super(s);
  auto h = kernel_hdr(s, VirtioNetHdr::kGsoTcpV4, 1400);
  h.hdr_len = 40 + 1400;
  Out o(4, 1600);
  ASSERT_EQ(split(super, h, o), 2);
  EXPECT_TRUE(ref_valid(o.pkt(0)));
  EXPECT_EQ(o.lens[0], 1440u);
}

TEST(GsoSplit, NeedsCsumWithoutGso) {
  for (bool tcp : {true, false}) {
    Spec s;
    s.tcp = tcp;
    s.payload = pattern(301, 4);  // odd length
    const Bytes want = build(s);
    const Bytes in = kernel_super(s);
    ASSERT_NE(in, want);
    VirtioNetHdr h = kernel_hdr(s, VirtioNetHdr::kGsoNone, 0);
    Out o(1, 1600);
    ASSERT_EQ(split(in, h, o), 1);
    EXPECT_EQ(o.pkt(0), want);
    // In place, the zero-copy path.
    Bytes inplace = in;
    ASSERT_TRUE(complete_checksum(inplace, h));
    EXPECT_EQ(inplace, want);
  }
}

TEST(GsoSplit, PlainCopyWithoutFlags) {
  const Bytes in = pattern(99, 5);  // not even IP: GSO_NONE without NEEDS_CSUM is opaque
  Out o(1, 100);
  ASSERT_EQ(split(in, VirtioNetHdr{}, o), 1);
  EXPECT_EQ(o.pkt(0), in);
}

TEST(GsoSplit, UdpChecksumZeroBecomesFfff) {
  // Two payload bytes equal to the checksum of the packet without them make the sum
  // 0xffff, hence a computed checksum of 0, which UDP must send as 0xffff.
  Spec s;
  s.tcp = false;
  s.payload = pattern(40, 6);
  s.payload.push_back(0);
  s.payload.push_back(0);
  Bytes p = build(s);  // checksum field holds c for payload ...00
  const uint16_t c = uint16_t(p[26] << 8 | p[27]);
  s.payload[40] = uint8_t(c >> 8), s.payload[41] = uint8_t(c);
  const Bytes in = kernel_super(s);
  Out o(1, 1600);
  ASSERT_EQ(split(in, kernel_hdr(s, VirtioNetHdr::kGsoNone, 0), o), 1);
  EXPECT_EQ(o.pkt(0)[26], 0xff);
  EXPECT_EQ(o.pkt(0)[27], 0xff);
  EXPECT_TRUE(ref_valid(o.pkt(0)));
  // The same through the segmentation path (one USO segment).
  ASSERT_EQ(split(in, kernel_hdr(s, VirtioNetHdr::kGsoUdpL4, 1000), o), 1);
  EXPECT_EQ(o.pkt(0)[26], 0xff);
  EXPECT_EQ(o.pkt(0)[27], 0xff);
}

TEST(GsoSplit, NoPayloadGivesOnePacket) {
  Spec s;
  const Bytes super = kernel_super(s);
  Out o(2, 100);
  ASSERT_EQ(split(super, kernel_hdr(s, VirtioNetHdr::kGsoTcpV4, 1400), o), 1);
  EXPECT_EQ(o.pkt(0), build(s));
}

TEST(GsoSplit, Malformed) {
  Spec s;
  s.payload = pattern(2000, 8);
  const Bytes good = kernel_super(s);
  const auto h = kernel_hdr(s, VirtioNetHdr::kGsoTcpV4, 1000);
  Out o(4, 1600);
  ASSERT_EQ(split(good, h, o), 2);  // the baseline the cases below break one way each

  auto hb = h;
  hb.hdr_len = uint16_t(good.size() + 1);
  EXPECT_EQ(split(good, hb, o), -1) << "hdr_len beyond data";
  hb = h;
  hb.gso_size = 0;
  EXPECT_EQ(split(good, hb, o), -1) << "gso_size 0";
  EXPECT_EQ(split(Bytes(good.begin(), good.begin() + 15), h, o), -1) << "truncated IP header";
  EXPECT_EQ(split(Bytes(good.begin(), good.begin() + 30), h, o), -1) << "truncated TCP header";
  Bytes bad = good;
  bad[0] = 0x44;
  EXPECT_EQ(split(bad, h, o), -1) << "IHL < 5";
  bad[28] = 0x50;  // a plausible TCP data offset 16 bytes in, and no csum_start to check:
  hb = h;          // only the IHL itself is wrong
  hb.flags = 0;
  EXPECT_EQ(split(bad, hb, o), -1) << "IHL < 5 with the rest parseable";
  bad = good;
  bad[0] = 0x4f;  // IHL 15: csum_start (20) no longer points at the L4 header
  EXPECT_EQ(split(bad, h, o), -1) << "IHL beyond the real IP header";
  hb = h;
  hb.csum_start = 24;
  EXPECT_EQ(split(good, hb, o), -1) << "csum_start is not the L4 header";
  bad = good;
  bad[20 + 12] = 0x40;
  EXPECT_EQ(split(bad, h, o), -1) << "TCP data offset < 5";
  bad = good;
  bad[6] = 0x20;  // MF
  EXPECT_EQ(split(bad, h, o), -1) << "fragment";
  bad = good;
  bad[9] = 17;
  EXPECT_EQ(split(bad, h, o), -1) << "UDP under a TCP GSO type";
  hb = h;
  hb.gso_size = 400;  // 5 segments, 4 buffers (of 8 real ones: an overrun would succeed)
  Out eight(8, 1600);
  EXPECT_EQ(gso_split(good, hb, std::span(eight.bufs).first(4), eight.lens), -1)
      << "too many segments for the buffers";
  EXPECT_EQ(gso_split(good, hb, eight.bufs, std::span(eight.lens).first(4)), -1)
      << "too many segments for the lengths";
  EXPECT_EQ(gso_split(good, hb, eight.bufs, eight.lens), 5);
  Out small(4, 1000);
  EXPECT_EQ(split(good, h, small), -1) << "segment longer than its buffer";
  hb = h;
  hb.gso_type = VirtioNetHdr::kGsoUdp;
  EXPECT_EQ(split(good, hb, o), -1) << "UFO";
  hb.gso_type = VirtioNetHdr::kGsoTcpV6;
  EXPECT_EQ(split(good, hb, o), -1) << "TCPV6 on an IPv4 packet";
  hb.gso_type = 9;
  EXPECT_EQ(split(good, hb, o), -1) << "unknown type";
  hb = h;
  hb.csum_offset = 6;
  EXPECT_EQ(split(good, hb, o), -1) << "csum_offset not the TCP checksum";
  EXPECT_EQ(split(Bytes{}, h, o), -1) << "empty";

  Spec s6 = s;
  s6.v6 = true;
  Bytes v6 = kernel_super(s6);
  const auto h6 = kernel_hdr(s6, VirtioNetHdr::kGsoTcpV6, 1000);
  ASSERT_EQ(split(v6, h6, o), 2);
  v6[6] = 0;  // hop-by-hop extension header
  EXPECT_EQ(split(v6, h6, o), -1) << "IPv6 extension header";

  VirtioNetHdr none;
  none.flags = VirtioNetHdr::kFlagNeedsCsum;
  none.csum_start = uint16_t(good.size() - 1);
  none.csum_offset = 0;
  EXPECT_EQ(split(good, none, o), -1) << "checksum field beyond data";
  Bytes tmp = good;
  EXPECT_FALSE(complete_checksum(tmp, none));
  EXPECT_EQ(tmp, good);
  none.csum_start = 20;
  none.csum_offset = 7;
  EXPECT_EQ(split(good, none, o), -1) << "odd checksum offset";
  none.csum_offset = 16;
  Out whole(1, good.size());
  EXPECT_EQ(split(good, none, whole), 1) << "the same header with offset 16 is fine";
}

// ---- coalesce ----

struct Batch {
  std::vector<Bytes> store;
  std::vector<std::span<uint8_t>> bufs;
  std::vector<size_t> lens;
  std::vector<size_t> out;

  void add(const Bytes& p, size_t cap = kVnetHdrLen + 65535) {
    Bytes b(std::max(cap, kVnetHdrLen + p.size()), 0xee);  // junk header: must be rewritten
    std::copy(p.begin(), p.end(), b.begin() + kVnetHdrLen);
    store.push_back(std::move(b));
    lens.push_back(p.size());
  }
  int run(GroTable::Options opt = {}) {
    bufs.clear();
    for (auto& b : store) bufs.emplace_back(b);
    out.assign(store.size(), ~size_t{0});
    GroTable t(opt);
    const int n = t.coalesce(bufs, lens, out);
    if (n >= 0) out.resize(size_t(n));
    return n;
  }
  VirtioNetHdr hdr(size_t i) const { return *VirtioNetHdr::parse(store[i]); }
  Bytes pkt(size_t i) const {
    return Bytes(store[i].begin() + kVnetHdrLen, store[i].begin() + long(kVnetHdrLen + lens[i]));
  }
  // What the kernel does with NEEDS_CSUM, done with the reference checksum.
  Bytes completed(size_t i) const {
    Bytes p = pkt(i);
    const VirtioNetHdr h = hdr(i);
    if (h.flags & VirtioNetHdr::kFlagNeedsCsum) {
      const uint16_t c = ref_checksum(Bytes(p.begin() + h.csum_start, p.end()));
      p[h.csum_start + h.csum_offset] = uint8_t(c >> 8);
      p[h.csum_start + h.csum_offset + 1] = uint8_t(c);
    }
    return p;
  }
};

// n consecutive segments of payload sizes[i] starting at base.seq.
std::vector<Spec> segments(const Spec& base, const std::vector<size_t>& sizes) {
  std::vector<Spec> v;
  uint32_t seq = base.seq;
  uint16_t id = base.id;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Spec s = base;
    s.seq = seq;
    s.id = id++;
    s.payload = pattern(sizes[i], uint32_t(100 + i));
    seq += uint32_t(sizes[i]);
    v.push_back(s);
  }
  return v;
}

// The packet the merged segments must become: one packet with all payloads.
Spec merged(const std::vector<Spec>& segs, size_t from, size_t to) {
  Spec m = segs[from];
  for (size_t i = from + 1; i < to; ++i) {
    m.payload.insert(m.payload.end(), segs[i].payload.begin(), segs[i].payload.end());
    m.flags |= segs[i].flags & kPsh;
  }
  return m;
}

TEST(Gro, InOrderTcpMerges) {
  Spec base;
  base.options = kTimestamps;
  const auto segs = segments(base, {1000, 1000, 1000, 1000});
  Batch b;
  for (const auto& s : segs) b.add(build(s));
  ASSERT_EQ(b.run(), 1);
  ASSERT_EQ(b.out, std::vector<size_t>{0});
  const VirtioNetHdr h = b.hdr(0);
  EXPECT_EQ(h.flags, VirtioNetHdr::kFlagNeedsCsum);
  EXPECT_EQ(h.gso_type, VirtioNetHdr::kGsoTcpV4);
  EXPECT_EQ(h.hdr_len, 20 + 32);
  EXPECT_EQ(h.gso_size, 1000);
  EXPECT_EQ(h.csum_start, 20);
  EXPECT_EQ(h.csum_offset, 16);
  ASSERT_EQ(b.lens[0], 52u + 4000);
  const Bytes want = build(merged(segs, 0, 4));
  const Bytes got = b.pkt(0);
  EXPECT_EQ(uint16_t(got[36] << 8 | got[37]), ref_partial(want, false, 6, 20));
  EXPECT_EQ(b.completed(0), want);
}

TEST(Gro, OutOfOrderDoesNotMerge) {
  const auto segs = segments(Spec{}, {1000, 1000, 1000});
  Batch b;
  for (size_t i : {0, 2, 1}) b.add(build(segs[i]));
  ASSERT_EQ(b.run(), 3);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(b.hdr(i), VirtioNetHdr{});
    EXPECT_EQ(b.pkt(i), build(segs[i == 0 ? 0 : i == 1 ? 2 : 1]));
  }
}

TEST(Gro, FlowsMergeSeparately) {
  Spec a, c;
  c.sport = 40001;  // only the port differs
  const auto sa = segments(a, {1000, 1000}), sc = segments(c, {1000, 1000});
  Batch b;
  b.add(build(sa[0]));
  b.add(build(sc[0]));
  b.add(build(sa[1]));
  b.add(build(sc[1]));
  ASSERT_EQ(b.run(), 2);
  EXPECT_EQ(b.out, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(b.completed(0), build(merged(sa, 0, 2)));
  EXPECT_EQ(b.completed(1), build(merged(sc, 0, 2)));
}

TEST(Gro, PshEndsTheRun) {
  auto segs = segments(Spec{}, {1000, 1000, 1000});
  segs[1].flags |= kPsh;
  Batch b;
  for (const auto& s : segs) b.add(build(s));
  ASSERT_EQ(b.run(), 2);
  EXPECT_EQ(b.out, (std::vector<size_t>{0, 2}));
  const Bytes m = b.completed(0);
  EXPECT_EQ(m[33], kAck | kPsh);
  EXPECT_EQ(m, build(merged(segs, 0, 2)));
  EXPECT_EQ(b.pkt(2), build(segs[2]));
}

TEST(Gro, FinSynAndPureAckNotMerged) {
  for (uint8_t extra : {kFin, kSyn}) {
    auto segs = segments(Spec{}, {1000, 1000});
    segs[1].flags |= extra;
    Batch b;
    for (const auto& s : segs) b.add(build(s));
    ASSERT_EQ(b.run(), 2) << int(extra);
  }
  auto segs = segments(Spec{}, {1000, 0});
  Batch b;
  for (const auto& s : segs) b.add(build(s));
  EXPECT_EQ(b.run(), 2) << "no payload";
}

TEST(Gro, DifferentHeadersNotMerged) {
  using Tweak = void (*)(Spec&);
  const Tweak tweaks[] = {
      [](Spec& s) { s.options = {1, 1, 8, 10, 0, 0, 0x12, 0x35, 0, 0, 0x56, 0x78}; },
      [](Spec& s) { s.options = {}; },
      [](Spec& s) { s.ack += 1; },
      [](Spec& s) { s.window += 1; },
      [](Spec& s) { s.ttl -= 1; },
      [](Spec& s) { s.tos = 0; },
      [](Spec& s) { s.flags |= 0x40; },  // ECE
      [](Spec& s) { s.flags |= kCwr; },  // allowed on the first only
  };
  for (size_t t = 0; t < std::size(tweaks); ++t) {
    Spec base;
    base.options = kTimestamps;
    auto segs = segments(base, {1000, 1000});
    tweaks[t](segs[1]);
    Batch b;
    for (const auto& s : segs) b.add(build(s));
    EXPECT_EQ(b.run(), 2) << "tweak " << t;
    EXPECT_EQ(b.pkt(1), build(segs[1])) << "tweak " << t;
  }
}

TEST(Gro, CwrOnFirstSetsEcn) {
  auto segs = segments(Spec{}, {1000, 1000});
  segs[0].flags |= kCwr;
  Batch b;
  for (const auto& s : segs) b.add(build(s));
  ASSERT_EQ(b.run(), 1);
  EXPECT_EQ(b.hdr(0).gso_type, VirtioNetHdr::kGsoTcpV4 | VirtioNetHdr::kGsoEcn);
  EXPECT_EQ(b.completed(0), build(merged(segs, 0, 2)));
}

TEST(Gro, Ipv6) {
  Spec base;
  base.v6 = true;
  base.options = kTimestamps;
  const auto segs = segments(base, {1200, 1200, 1200});
  Batch b;
  for (const auto& s : segs) b.add(build(s));
  ASSERT_EQ(b.run(), 1);
  const VirtioNetHdr h = b.hdr(0);
  EXPECT_EQ(h.gso_type, VirtioNetHdr::kGsoTcpV6);
  EXPECT_EQ(h.hdr_len, 40 + 32);
  EXPECT_EQ(h.csum_start, 40);
  EXPECT_EQ(b.completed(0), build(merged(segs, 0, 3)));

  auto other = segs;
  other[1].flow_label ^= 1;
  Batch c;
  for (const auto& s : other) c.add(build(s));
  EXPECT_EQ(c.run(), 3) << "flow label differs";
}

TEST(Gro, ShortLastSegmentMergesAndEndsRun) {
  const auto segs = segments(Spec{}, {1000, 1000, 500, 1000, 1000});
  Batch b;
  for (const auto& s : segs) b.add(build(s));
  ASSERT_EQ(b.run(), 2);
  EXPECT_EQ(b.out, (std::vector<size_t>{0, 3}));
  EXPECT_EQ(b.hdr(0).gso_size, 1000);
  EXPECT_EQ(b.completed(0), build(merged(segs, 0, 3)));
  EXPECT_EQ(b.completed(3), build(merged(segs, 3, 5)));

  const auto bigger = segments(Spec{}, {1000, 1001});
  Batch c;
  for (const auto& s : bigger) c.add(build(s));
  EXPECT_EQ(c.run(), 2) << "a larger follower cannot merge";
}

TEST(Gro, BadChecksumLeftAlone) {
  for (int bad : {0, 1}) {
    const auto segs = segments(Spec{}, {1000, 1000, 1000});
    std::vector<Bytes> pk;
    for (const auto& s : segs) pk.push_back(build(s));
    pk[size_t(bad)][100] ^= 0x01;  // payload bit flip
    Batch b;
    for (const auto& p : pk) b.add(p);
    if (bad == 0) {
      // The corrupt first packet is written as is; the next two merge with each other.
      ASSERT_EQ(b.run(), 2);
      EXPECT_EQ(b.out, (std::vector<size_t>{0, 1}));
      EXPECT_EQ(b.pkt(0), pk[0]);
      EXPECT_EQ(b.hdr(0), VirtioNetHdr{});
      EXPECT_EQ(b.completed(1), build(merged(segs, 1, 3)));
    } else {
      // Nothing merges into or across the corrupt one.
      ASSERT_EQ(b.run(), 3);
      for (size_t i = 0; i < 3; ++i) EXPECT_EQ(b.pkt(i), pk[i]);
    }
  }
  // A bad IPv4 header checksum too.
  const auto segs = segments(Spec{}, {1000, 1000});
  Bytes p1 = build(segs[1]);
  p1[10] ^= 0x80;
  Batch b;
  b.add(build(segs[0]));
  b.add(p1);
  EXPECT_EQ(b.run(), 2);
  EXPECT_EQ(b.pkt(1), p1);
}

TEST(Gro, SplitThenCoalesceRoundTrip) {
  Spec s;
  s.options = kTimestamps;
  s.flags = kAck | kPsh;
  s.payload = pattern(10 * 1400 + 700, 11);
  const Bytes super = kernel_super(s);
  Batch b;
  for (int i = 0; i < 11; ++i) b.add({});
  std::vector<std::span<uint8_t>> seg_bufs;
  for (auto& st : b.store) {
    st.resize(kVnetHdrLen + 65535);
    seg_bufs.emplace_back(st.data() + kVnetHdrLen, 65535);
  }
  ASSERT_EQ(gso_split(super, kernel_hdr(s, VirtioNetHdr::kGsoTcpV4, 1400), seg_bufs, b.lens),
            11);
  ASSERT_EQ(b.run(), 1);
  EXPECT_EQ(b.hdr(0), kernel_hdr(s, VirtioNetHdr::kGsoTcpV4, 1400));
  EXPECT_EQ(b.pkt(0), super);  // same partial checksum as the kernel's
  EXPECT_EQ(b.completed(0), build(s));
}

TEST(Gro, UdpSameSize) {
  for (bool v6 : {false, true}) {
    Spec base;
    base.tcp = false;
    base.v6 = v6;
    const auto segs = segments(base, {1200, 1200, 1200, 700});
    Batch b;
    for (const auto& s : segs) b.add(build(s));
    ASSERT_EQ(b.run({.tcp = true, .udp = true}), 1) << v6;
    const VirtioNetHdr h = b.hdr(0);
    EXPECT_EQ(h.gso_type, VirtioNetHdr::kGsoUdpL4);
    EXPECT_EQ(h.gso_size, 1200);
    EXPECT_EQ(h.hdr_len, iph_len(base) + 8);
    EXPECT_EQ(h.csum_offset, 6);
    EXPECT_EQ(b.completed(0), build(merged(segs, 0, 4)));

    Batch off;  // UDP coalescing is off by default (needs USO on the TUN)
    for (const auto& s : segs) off.add(build(s));
    EXPECT_EQ(off.run(), 4);
  }
  const auto sizes = segments(Spec{.tcp = false}, {1200, 1300});
  Batch b;
  for (const auto& s : sizes) b.add(build(s));
  EXPECT_EQ(b.run({.udp = true}), 2) << "larger second datagram";

  auto nocsum = segments(Spec{.tcp = false}, {1200, 1200});
  Batch c;
  for (const auto& s : nocsum) {
    Bytes p = build(s);
    p[26] = p[27] = 0;  // IPv4 UDP without checksum
    c.add(p);
  }
  EXPECT_EQ(c.run({.udp = true}), 2) << "no UDP checksum";
}

TEST(Gro, UdpSegmentLimit) {
  const auto segs =
      segments(Spec{.tcp = false}, std::vector<size_t>(GroTable::kMaxUdpSegments + 1, 100));
  Batch b;
  for (const auto& s : segs) b.add(build(s));
  ASSERT_EQ(b.run({.udp = true}), 2);
  EXPECT_EQ(b.out, (std::vector<size_t>{0, GroTable::kMaxUdpSegments}));
}

TEST(Gro, SizeLimitAndBufferRoom) {
  // 46 * 1400 + 40 = 64440 fits in 65535; one more segment does not.
  const auto segs = segments(Spec{}, std::vector<size_t>(50, 1400));
  Batch b;
  for (const auto& s : segs) b.add(build(s));
  ASSERT_EQ(b.run(), 2);
  EXPECT_EQ(b.out, (std::vector<size_t>{0, 46}));
  EXPECT_EQ(b.lens[0], 40u + 46 * 1400);
  EXPECT_EQ(b.completed(0), build(merged(segs, 0, 46)));
  EXPECT_EQ(b.completed(46), build(merged(segs, 46, 50)));

  Batch tight;  // no spare room behind the first packet: nothing can be appended
  tight.add(build(segs[0]), 0);
  tight.add(build(segs[1]));
  EXPECT_EQ(tight.run(), 2);
  EXPECT_EQ(tight.pkt(0), build(segs[0]));
}

TEST(Gro, FlowLimit) {
  Batch b;
  std::vector<std::vector<Spec>> flows;
  for (size_t f = 0; f <= GroTable::kMaxFlows; ++f) {
    Spec s;
    s.sport = uint16_t(1000 + f);
    flows.push_back(segments(s, {500, 500}));
  }
  for (const auto& f : flows) b.add(build(f[0]));
  for (const auto& f : flows) b.add(build(f[1]));
  ASSERT_EQ(b.run(), int(GroTable::kMaxFlows + 2));
  for (size_t f = 0; f < GroTable::kMaxFlows; ++f)
    EXPECT_EQ(b.completed(f), build(merged(flows[f], 0, 2)));
  EXPECT_EQ(b.pkt(GroTable::kMaxFlows), build(flows.back()[0]));
}

TEST(Gro, OtherPacketsPassThroughAndKeepFlowOrder) {
  const auto segs = segments(Spec{}, {1000, 1000, 1000});
  Bytes with_opts = build(segs[1]);
  // An IPv4 option (NOP + EOL padding) makes segment 1 unmergeable but still of the flow:
  // segment 2 must not be appended to segment 0 and overtake it.
  with_opts.insert(with_opts.begin() + 20, {1, 1, 1, 0});
  with_opts[0] = 0x46;
  with_opts[2] = uint8_t(with_opts.size() >> 8);
  with_opts[3] = uint8_t(with_opts.size());
  Batch b;
  b.add(pattern(60, 1));  // junk
  b.add(build(segs[0]));
  b.add(with_opts);
  b.add(build(segs[2]));
  ASSERT_EQ(b.run(), 4);
  EXPECT_EQ(b.pkt(0), pattern(60, 1));
  EXPECT_EQ(b.hdr(0), VirtioNetHdr{});
  EXPECT_EQ(b.pkt(2), with_opts);
}

TEST(Gro, CallerBugsRejected) {
  Batch b;
  b.add(build(Spec{}));
  b.lens[0] = b.store[0].size();  // longer than the buffer after the headroom
  EXPECT_EQ(b.run(), -1);
  GroTable t;
  std::vector<std::span<uint8_t>> bufs(2);
  std::vector<size_t> lens(1), out(2);
  EXPECT_EQ(t.coalesce(bufs, lens, out), -1);
}

}  // namespace
}  // namespace meshwg::tun
