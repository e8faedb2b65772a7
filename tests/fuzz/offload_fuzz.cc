// libFuzzer target for tun/offload: gso_split on arbitrary virtio-net headers and packets, and
// GroTable::coalesce on arbitrary and on structured batches. Every check uses this file's own
// naive checksum and parsing, not offload.cc's helpers.
//
// Input: byte 0 picks the mode (mod 3), the rest is the mode's data.
//   0 split:      1 byte output buffer count (1..64), 1 byte buffer size class, 10 bytes
//                 virtio-net header, then the packet. Buffers are heap blocks of exactly their
//                 size, so ASan sees any overrun.
//                 Checks, when accepted: GSO_NONE gives the input back with only the checksum
//                 field changed and that checksum valid; a GSO type gives packets whose IP
//                 lengths match, whose IPv4 and L4 checksums verify, and whose payloads,
//                 concatenated, are the input's payload.
//   1 raw GRO:    up to 64 packets, each as 2 bytes length, 1 byte spare-room class, bytes.
//   2 built GRO:  1 byte of batch options, then 3 bytes per packet that choose a flow, a
//                 size, seq gaps, flags, header tweaks and corruption; packets are built with
//                 valid checksums so that merges actually happen.
//   Checks for both GRO modes: out indices increase; a written packet is <= 65535 bytes and
//   either carries a zero header and is unchanged, or carries a GSO header, becomes valid
//   once its checksum is completed as the kernel does, and splits back into segments; the
//   multiset of input packets equals the multiset of written-or-split packets (IPv4 id and
//   header checksum ignored, as merging keeps only the first id), so every input byte is
//   written exactly once.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "tun/offload.h"

using meshwg::tun::GroTable;
using meshwg::tun::gso_split;
using meshwg::tun::kVnetHdrLen;
using meshwg::tun::VirtioNetHdr;
using Bytes = std::vector<uint8_t>;

namespace {

#define CHECK(c)                                                             \
  do {                                                                       \
    if (!(c)) {                                                              \
      std::fprintf(stderr, "offload_fuzz: %s:%d: %s\n", __FILE__, __LINE__, #c); \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

// The harness's byte loops are kept out of coverage feedback: they say nothing about the
// code under test and instrumenting them made the fuzzer several times slower.
#define NO_COVERAGE __attribute__((no_sanitize("coverage"), noinline))

NO_COVERAGE uint32_t ref_sum(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i < n; i += 2) s += uint32_t(p[i]) << 8 | (i + 1 < n ? p[i + 1] : 0);
  return s;
}
NO_COVERAGE uint16_t ref_fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(s);
}

struct Hdrs {
  bool v6 = false;
  size_t iph = 0, l4h = 0;
  uint8_t proto = 0;
};

// The IP and TCP/UDP header lengths, or false.
bool ref_parse(const uint8_t* p, size_t n, Hdrs& h) {
  if (n < 1) return false;
  if (p[0] >> 4 == 4) {
    if (n < 20) return false;
    h.iph = size_t(p[0] & 0xf) * 4;
    h.proto = p[9];
  } else if (p[0] >> 4 == 6) {
    if (n < 40) return false;
    h.v6 = true;
    h.iph = 40;
    h.proto = p[6];
  } else {
    return false;
  }
  if (h.iph < 20 || h.iph > n) return false;
  if (h.proto == 6) {
    if (n < h.iph + 20) return false;
    h.l4h = size_t(p[h.iph + 12] >> 4) * 4;
  } else if (h.proto == 17) {
    h.l4h = 8;
  } else {
    return false;
  }
  return h.l4h >= 8 && h.iph + h.l4h <= n;
}

// IPv4 header checksum and the L4 checksum over the pseudo-header both verify.
bool ref_valid(const uint8_t* p, size_t n) {
  Hdrs h;
  if (!ref_parse(p, n, h)) return false;
  if (!h.v6 && ref_fold(ref_sum(p, h.iph)) != 0xffff) return false;
  const size_t l4 = n - h.iph;
  uint32_t s = h.v6 ? ref_sum(p + 8, 32) : ref_sum(p + 12, 8);
  s += h.proto + uint32_t(l4 >> 16) + uint32_t(l4 & 0xffff);
  return ref_fold(ref_sum(p + h.iph, l4, s)) == 0xffff;
}

// ---- split ----

void fuzz_split(const uint8_t* d, size_t n) {
  if (n < 12) return;
  const size_t nbufs = 1 + d[0] % 64;
  const size_t cap = d[1] == 255 ? 65535 : 40 + size_t(d[1]) * 64;
  const auto h = *VirtioNetHdr::parse({d + 2, kVnetHdrLen});
  const Bytes in(d + 12, d + n);  // its own block: ASan bounds reads to exactly the packet

  std::vector<std::unique_ptr<uint8_t[]>> mem;
  std::vector<std::span<uint8_t>> bufs;
  std::vector<size_t> lens(nbufs, 0);
  for (size_t i = 0; i < nbufs; ++i) {
    mem.emplace_back(new uint8_t[cap]);
    bufs.emplace_back(mem.back().get(), cap);
  }
  const int r = gso_split(in, h, bufs, lens);
  if (r < 0) return;
  CHECK(r >= 1 && size_t(r) <= nbufs);
  for (int i = 0; i < r; ++i) CHECK(lens[size_t(i)] <= cap && lens[size_t(i)] <= 65535);

  if (h.gso_type == VirtioNetHdr::kGsoNone) {
    CHECK(r == 1 && lens[0] == in.size());
    const uint8_t* o = bufs[0].data();
    if (!(h.flags & VirtioNetHdr::kFlagNeedsCsum)) {
      CHECK(std::memcmp(o, in.data(), in.size()) == 0);
      return;
    }
    const size_t field = size_t(h.csum_start) + h.csum_offset;
    CHECK(field + 2 <= in.size());
    for (size_t i = 0; i < in.size(); ++i) CHECK(i == field || i == field + 1 || o[i] == in[i]);
    // The field held a partial sum P; the completed region plus P must sum to 0xffff.
    const uint32_t partial = uint32_t(in[field] << 8 | in[field + 1]);
    CHECK(ref_fold(ref_sum(o + h.csum_start, in.size() - h.csum_start, partial)) == 0xffff);
    return;
  }

  Hdrs ih;
  CHECK(ref_parse(in.data(), in.size(), ih));
  const size_t hdr = ih.iph + ih.l4h;
  Bytes payload;
  for (int i = 0; i < r; ++i) {
    const uint8_t* o = bufs[size_t(i)].data();
    const size_t len = lens[size_t(i)];
    Hdrs oh;
    CHECK(ref_parse(o, len, oh));
    CHECK(oh.v6 == ih.v6 && oh.iph == ih.iph && oh.l4h == ih.l4h && oh.proto == ih.proto);
    CHECK(ref_valid(o, len));
    if (!oh.v6) CHECK(size_t(o[2] << 8 | o[3]) == len);
    if (oh.v6) CHECK(size_t(o[4] << 8 | o[5]) + 40 == len);
    if (oh.proto == 17) CHECK(size_t(o[oh.iph + 4] << 8 | o[oh.iph + 5]) == len - oh.iph);
    CHECK(i + 1 == r || len - hdr == h.gso_size);
    payload.insert(payload.end(), o + hdr, o + len);
  }
  CHECK(payload.size() == in.size() - hdr);
  CHECK(std::equal(payload.begin(), payload.end(), in.begin() + long(hdr)));
}

// ---- coalesce ----

// The form of a packet that merging must preserve: IPv4 id and header checksum zeroed,
// and a TCP checksum of 0xffff written as its equivalent 0 (what a split computes).
Bytes normalize(const uint8_t* p, size_t n) {
  Bytes b(p, p + n);
  if (n >= 20 && p[0] >> 4 == 4) b[4] = b[5] = b[10] = b[11] = 0;
  Hdrs h;
  if (ref_parse(p, n, h) && h.proto == 6 && b[h.iph + 16] == 0xff && b[h.iph + 17] == 0xff)
    b[h.iph + 16] = b[h.iph + 17] = 0;
  return b;
}

struct Batch {
  std::vector<std::unique_ptr<uint8_t[]>> mem;
  std::vector<std::span<uint8_t>> bufs;
  std::vector<size_t> lens;
  std::vector<Bytes> inputs;

  void add(const uint8_t* p, size_t n, size_t spare) {
    const size_t cap = kVnetHdrLen + n + spare;
    mem.emplace_back(new uint8_t[cap]);
    std::memset(mem.back().get(), 0xa5, kVnetHdrLen);  // junk the coalescer must overwrite
    if (n != 0) std::memcpy(mem.back().get() + kVnetHdrLen, p, n);
    bufs.emplace_back(mem.back().get(), cap);
    lens.push_back(n);
    inputs.emplace_back(p, p + n);
  }
};

std::vector<std::unique_ptr<uint8_t[]>>& split_pool() {
  static std::vector<std::unique_ptr<uint8_t[]>> pool;
  if (pool.empty())
    for (int i = 0; i < 64; ++i) pool.emplace_back(new uint8_t[65535]);
  return pool;
}

void run_gro(Batch& b, GroTable::Options opt) {
  GroTable t(opt);
  std::vector<size_t> out(b.bufs.size(), ~size_t{0});
  const int r = t.coalesce(b.bufs, b.lens, out);
  CHECK(r >= 0 && size_t(r) <= b.bufs.size());
  CHECK(b.bufs.empty() || r >= 1);

  std::vector<Bytes> want, got;
  for (const auto& in : b.inputs) want.push_back(normalize(in.data(), in.size()));
  for (int k = 0; k < r; ++k) {
    const size_t i = out[size_t(k)];
    CHECK(i < b.bufs.size() && (k == 0 || i > out[size_t(k) - 1]));
    CHECK(b.lens[i] <= 65535 && kVnetHdrLen + b.lens[i] <= b.bufs[i].size());
    const auto h = *VirtioNetHdr::parse(b.bufs[i]);
    uint8_t* p = b.bufs[i].data() + kVnetHdrLen;
    const size_t len = b.lens[i];
    if (h == VirtioNetHdr{}) {
      CHECK(len == b.inputs[i].size() && std::equal(p, p + len, b.inputs[i].begin()));
      got.push_back(normalize(p, len));
      continue;
    }
    CHECK(h.flags == VirtioNetHdr::kFlagNeedsCsum);
    const bool tcp = (h.gso_type & 0x7f) == VirtioNetHdr::kGsoTcpV4 ||
                     (h.gso_type & 0x7f) == VirtioNetHdr::kGsoTcpV6;
    CHECK(tcp || h.gso_type == VirtioNetHdr::kGsoUdpL4);
    CHECK(tcp ? opt.tcp : opt.udp);
    CHECK(h.csum_offset == (tcp ? 16 : 6) && size_t(h.csum_start) + h.csum_offset + 2 <= len);
    // Complete the checksum as the kernel would, with the naive sum.
    Bytes full(p, p + len);
    full[h.csum_start + h.csum_offset] = full[h.csum_start + h.csum_offset + 1] = 0;
    const uint16_t partial = uint16_t(p[h.csum_start + h.csum_offset] << 8 |
                                      p[h.csum_start + h.csum_offset + 1]);
    const uint16_t c = uint16_t(~ref_fold(ref_sum(full.data() + h.csum_start,
                                                  len - h.csum_start, partial)));
    full[h.csum_start + h.csum_offset] = uint8_t(c >> 8);
    full[h.csum_start + h.csum_offset + 1] = uint8_t(c);
    CHECK(ref_valid(full.data(), len));
    Hdrs fh;
    CHECK(ref_parse(full.data(), len, fh) && fh.iph == h.csum_start &&
          fh.iph + fh.l4h == h.hdr_len);
    CHECK(h.gso_size > 0 && len - h.hdr_len > h.gso_size);  // really more than one segment

    auto& pool = split_pool();
    std::vector<std::span<uint8_t>> seg_bufs;
    std::vector<size_t> seg_lens(pool.size());
    for (auto& m : pool) seg_bufs.emplace_back(m.get(), 65535);
    const int s = gso_split({p, len}, h, seg_bufs, seg_lens);
    CHECK(s >= 2);
    for (size_t j = 0; j < size_t(s); ++j)
      got.push_back(normalize(seg_bufs[j].data(), seg_lens[j]));
  }
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  CHECK(want == got);
}

void fuzz_gro_raw(const uint8_t* d, size_t n) {
  Batch b;
  while (n >= 3 && b.bufs.size() < 64) {
    size_t len = size_t(d[0]) << 8 | d[1];
    const size_t spare = d[2] == 255 ? 65535 : size_t(d[2]) * 16;
    d += 3, n -= 3;
    len = std::min(len, n);
    b.add(d, len, spare);
    d += len, n -= len;
  }
  run_gro(b, {.tcp = true, .udp = true});
}

NO_COVERAGE void fill(uint8_t* p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; ++i) p[i] = uint8_t(i * 31 + seed);
}

// Builds IPv4/IPv6 TCP/UDP packets with valid checksums from a few choices per packet.
void fuzz_gro_built(const uint8_t* d, size_t n) {
  if (n < 1) return;
  const uint8_t opts = d[0];
  ++d, --n;
  const bool v6 = opts & 1, udp = opts & 2;
  const GroTable::Options gopt{.tcp = !(opts & 4), .udp = !(opts & 8)};
  const bool timestamps = opts & 16;
  const size_t iph = v6 ? 40 : 20;
  const size_t l4h = udp ? 8 : timestamps ? 32 : 20;
  struct FlowState {
    uint32_t seq = 1000;
    uint16_t id = 1;
  } flows[4];
  static const size_t kSizes[8] = {0, 1, 99, 100, 1000, 1399, 1400, 1401};
  static const uint8_t kFlags[8] = {0x10, 0x18, 0x11, 0x90, 0x50, 0x02, 0x10, 0x10};
  Batch b;
  Bytes p;
  while (n >= 3 && b.bufs.size() < 64) {
    const uint8_t a = d[0], s = d[1], c = d[2];
    d += 3, n -= 3;
    const size_t f = a & 3;
    const size_t payload = s != 255 ? kSizes[s & 7] : 65535 - iph - l4h;
    const size_t len = iph + l4h + payload;
    p.assign(len, 0);
    const uint8_t proto = udp ? 17 : 6;
    if (!v6) {
      p[0] = 0x45;
      p[2] = uint8_t(len >> 8), p[3] = uint8_t(len);
      p[4] = uint8_t(flows[f].id >> 8), p[5] = uint8_t(flows[f].id);
      p[6] = 0x40;
      p[8] = (a & 0x80) ? 63 : 64;
      p[9] = proto;
      p[12] = 10, p[15] = 1, p[16] = 10, p[19] = uint8_t(2 + f);
    } else {
      p[0] = 0x60;
      p[3] = (a & 0x80) ? 1 : 0;
      p[4] = uint8_t((len - 40) >> 8), p[5] = uint8_t(len - 40);
      p[6] = proto;
      p[7] = 64;
      p[8] = 0xfd, p[23] = 1, p[24] = 0xfd, p[39] = uint8_t(2 + f);
    }
    uint8_t* l4 = &p[iph];
    l4[0] = 0x9c, l4[1] = 0x40, l4[2] = 0x14, l4[3] = 0x51;
    if (!udp) {
      const uint32_t seq = flows[f].seq + ((a & 0x20) ? 7 : 0);
      for (int i = 0; i < 4; ++i) l4[4 + i] = uint8_t(seq >> (24 - 8 * i));
      l4[12] = uint8_t(l4h / 4 << 4);
      l4[13] = kFlags[a >> 2 & 7];
      l4[15] = (c & 1) ? 1 : 0;  // window
      if (timestamps) l4[20] = 1, l4[21] = 1, l4[22] = 8, l4[23] = 10, l4[31] = c & 2;
    } else {
      l4[4] = uint8_t((l4h + payload) >> 8), l4[5] = uint8_t(l4h + payload);
    }
    fill(l4 + l4h, payload, s);
    if (!v6) {
      const uint16_t ipc = uint16_t(~ref_fold(ref_sum(p.data(), 20)));
      p[10] = uint8_t(ipc >> 8), p[11] = uint8_t(ipc);
    }
    uint32_t ps = v6 ? ref_sum(&p[8], 32) : ref_sum(&p[12], 8);
    const size_t l4len = len - iph;
    ps += proto + uint32_t(l4len >> 16) + uint32_t(l4len & 0xffff);
    uint16_t cs = uint16_t(~ref_fold(ref_sum(l4, l4len, ps)));
    if (udp && cs == 0) cs = 0xffff;
    if (udp && (c & 8)) cs = 0;  // no UDP checksum (invalid for IPv6: must not merge)
    const size_t at = udp ? 6 : 16;
    l4[at] = uint8_t(cs >> 8), l4[at + 1] = uint8_t(cs);
    if (c & 4) p[(size_t(c) * 7) % len] ^= uint8_t(1 + (c >> 4));  // corruption
    // Room to grow: none, some, or the full 64 KiB (big blocks slow the fuzzer down).
    b.add(p.data(), len, (c & 0x40) ? 0 : (c & 0x20) ? 65535 - len : 8192);
    flows[f].seq += uint32_t(payload) + ((a & 0x20) ? 7 : 0);
    ++flows[f].id;
  }
  run_gro(b, gopt);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  switch (data[0] % 3) {
    case 0: fuzz_split(data + 1, size - 1); break;
    case 1: fuzz_gro_raw(data + 1, size - 1); break;
    default: fuzz_gro_built(data + 1, size - 1); break;
  }
  return 0;
}
