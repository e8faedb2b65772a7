// TUN offloads: virtio-net header codec, TSO/USO split, GRO coalesce. The kernel ABI these
// follow is written at the top of offload.h.
#include "tun/offload.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace meshwg::tun {
namespace {

constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr size_t kTcpCsumOffset = 16;
constexpr size_t kUdpCsumOffset = 6;

// TCP flag bits (byte 13 of the TCP header).
constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10,
                  kUrg = 0x20, kCwr = 0x80;

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
void put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
void put32(uint8_t* p, uint32_t v) {
  put16(p, uint16_t(v >> 16));
  put16(p + 2, uint16_t(v));
}
uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
void putle16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}

uint16_t add16(uint16_t a, uint16_t b) {  // one's-complement addition
  uint32_t s = uint32_t(a) + b;
  return uint16_t((s & 0xffff) + (s >> 16));
}

std::span<const uint8_t> ip_src(std::span<const uint8_t> ip) {
  return ip[0] >> 4 == 4 ? ip.subspan(12, 4) : ip.subspan(8, 16);
}
std::span<const uint8_t> ip_dst(std::span<const uint8_t> ip) {
  return ip[0] >> 4 == 4 ? ip.subspan(16, 4) : ip.subspan(24, 16);
}

// True if the L4 checksum (with pseudo-header) of an IP packet verifies, and for IPv4 the
// header checksum too. A valid sum folds to 0xffff; it cannot fold to 0 because the
// pseudo-header's protocol word is non-zero.
bool checksums_valid(std::span<const uint8_t> ip, size_t iph_len, uint8_t proto) {
  if (ip[0] >> 4 == 4 && checksum_sum(ip.first(iph_len)) != 0xffff) return false;
  const auto l4 = ip.subspan(iph_len);
  const uint16_t ph = pseudo_header_sum(ip_src(ip), ip_dst(ip), proto, uint32_t(l4.size()));
  return checksum_sum(l4, ph) == 0xffff;
}

}  // namespace

std::optional<VirtioNetHdr> VirtioNetHdr::parse(std::span<const uint8_t> in) {
  if (in.size() < kVnetHdrLen) return std::nullopt;
  VirtioNetHdr h;
  h.flags = in[0];
  h.gso_type = in[1];
  h.hdr_len = le16(&in[2]);
  h.gso_size = le16(&in[4]);
  h.csum_start = le16(&in[6]);
  h.csum_offset = le16(&in[8]);
  return h;
}

void VirtioNetHdr::serialize(std::span<uint8_t, kVnetHdrLen> out) const {
  out[0] = flags;
  out[1] = gso_type;
  putle16(&out[2], hdr_len);
  putle16(&out[4], gso_size);
  putle16(&out[6], csum_start);
  putle16(&out[8], csum_offset);
}

uint16_t checksum_sum(std::span<const uint8_t> data, uint16_t initial) {
  // Sums host-order 64-bit words into a 128-bit accumulator (add + adc per word; no carry
  // is ever lost). One's-complement sums do not depend on byte order (RFC 1071 §2(B)), so
  // the folded result is byte-swapped once at the end on little-endian hosts.
  const uint8_t* p = data.data();
  size_t n = data.size();
  unsigned __int128 acc = 0;
  while (n >= 32) {
    uint64_t w[4];
    std::memcpy(w, p, 32);
    acc += w[0];
    acc += w[1];
    acc += w[2];
    acc += w[3];
    p += 32;
    n -= 32;
  }
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    acc += w;
    p += 8;
    n -= 8;
  }
  uint64_t tail = 0;
  // Zero-padded: an odd last byte is the high byte of its big-endian word.
  if (n != 0) std::memcpy(&tail, p, n);
  acc += tail;
  // 2^64 = 1 (mod 2^16 - 1): the high half folds in as plain addition.
  uint64_t s = uint64_t(acc);
  const uint64_t hi = uint64_t(acc >> 64);
  s += hi;
  s += s < hi;
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  uint16_t sum = uint16_t(s);
  if constexpr (std::endian::native == std::endian::little) sum = uint16_t(sum << 8 | sum >> 8);
  return add16(sum, initial);
}

uint16_t pseudo_header_sum(std::span<const uint8_t> src, std::span<const uint8_t> dst,
                           uint8_t proto, uint32_t l4_len) {
  uint16_t s = checksum_sum(src);
  s = checksum_sum(dst, s);
  s = add16(s, proto);
  s = add16(s, uint16_t(l4_len >> 16));
  return add16(s, uint16_t(l4_len));
}

bool complete_checksum(std::span<uint8_t> pkt, const VirtioNetHdr& h) {
  if (!(h.flags & VirtioNetHdr::kFlagNeedsCsum)) return true;
  const size_t field = size_t(h.csum_start) + h.csum_offset;
  // At an odd offset the field would not be one of the summed 16-bit words, so no value
  // could make the sum verify; no protocol puts it there (TCP 16, UDP 6, ICMPv6 2).
  if (field + 2 > pkt.size() || h.csum_offset % 2 != 0) return false;
  uint16_t c = checksum_finish(checksum_sum(pkt.subspan(h.csum_start)));
  if (c == 0) c = 0xffff;  // as skb_checksum_help: 0 means "no checksum" to UDP over IPv4
  put16(&pkt[field], c);
  return true;
}

int gso_split(std::span<const uint8_t> in, const VirtioNetHdr& h,
              std::span<const std::span<uint8_t>> out_bufs, std::span<size_t> out_lens) {
  const size_t max_out = std::min(out_bufs.size(), out_lens.size());
  const uint8_t gso = h.gso_type & uint8_t(~VirtioNetHdr::kGsoEcn);
  const bool ecn = h.gso_type & VirtioNetHdr::kGsoEcn;

  if (h.gso_type == VirtioNetHdr::kGsoNone) {
    if (in.empty() || max_out < 1 || out_bufs[0].size() < in.size()) return -1;
    std::memcpy(out_bufs[0].data(), in.data(), in.size());
    out_lens[0] = in.size();
    return complete_checksum(out_bufs[0].first(in.size()), h) ? 1 : -1;
  }

  bool tcp;
  if (gso == VirtioNetHdr::kGsoTcpV4 || gso == VirtioNetHdr::kGsoTcpV6) {
    tcp = true;
  } else if (gso == VirtioNetHdr::kGsoUdpL4 && !ecn) {
    tcp = false;
  } else {
    return -1;  // UFO (GSO_UDP) is never offered by us, and ECN only makes sense for TCP
  }
  // hdr_len is only checked as a bound (see offload.h: it can exceed the real headers).
  if (h.gso_size == 0 || h.hdr_len > in.size() || in.empty()) return -1;

  size_t iph_len;
  uint8_t proto;
  const uint8_t version = in[0] >> 4;
  if (version == 4) {
    if (gso == VirtioNetHdr::kGsoTcpV6 || in.size() < 20) return -1;
    iph_len = size_t(in[0] & 0x0f) * 4;
    if (iph_len < 20 || iph_len > in.size()) return -1;
    if (be16(&in[6]) & 0x3fff) return -1;  // MF or a fragment offset: not a GSO packet
    proto = in[9];
  } else if (version == 6) {
    if (gso == VirtioNetHdr::kGsoTcpV4 || in.size() < 40) return -1;
    iph_len = 40;
    proto = in[6];  // extension headers are not supported: the L4 header must follow
  } else {
    return -1;
  }
  if (proto != (tcp ? kProtoTcp : kProtoUdp)) return -1;

  size_t l4h_len = 8;
  if (tcp) {
    if (in.size() < iph_len + 20) return -1;
    l4h_len = size_t(in[iph_len + 12] >> 4) * 4;
    if (l4h_len < 20) return -1;
  }
  if (iph_len + l4h_len > in.size()) return -1;
  if (h.flags & VirtioNetHdr::kFlagNeedsCsum) {
    if (h.csum_start != iph_len || h.csum_offset != (tcp ? kTcpCsumOffset : kUdpCsumOffset))
      return -1;
  }

  const size_t hdr_len = iph_len + l4h_len;
  const size_t payload = in.size() - hdr_len;
  const size_t nseg = payload == 0 ? 1 : (payload + h.gso_size - 1) / h.gso_size;
  if (nseg > max_out) return -1;

  const auto src = ip_src(in.first(iph_len));
  const auto dst = ip_dst(in.first(iph_len));
  const uint16_t id0 = version == 4 ? be16(&in[4]) : 0;
  const uint32_t seq0 = tcp ? be32(&in[iph_len + 4]) : 0;
  const uint8_t flags0 = tcp ? in[iph_len + 13] : 0;

  for (size_t i = 0; i < nseg; ++i) {
    const size_t off = i * h.gso_size;
    const size_t seg_payload = std::min<size_t>(h.gso_size, payload - off);
    const size_t total = hdr_len + seg_payload;
    if (total > kMaxIpPacket || total > out_bufs[i].size()) return -1;
    uint8_t* o = out_bufs[i].data();
    std::memcpy(o, in.data(), hdr_len);
    std::memcpy(o + hdr_len, in.data() + hdr_len + off, seg_payload);

    if (version == 4) {
      put16(o + 2, uint16_t(total));
      put16(o + 4, uint16_t(id0 + i));
      put16(o + 10, 0);
      put16(o + 10, checksum_finish(checksum_sum({o, iph_len})));
    } else {
      put16(o + 4, uint16_t(total - iph_len));
    }

    uint8_t* l4 = o + iph_len;
    const size_t l4_len = total - iph_len;
    size_t csum_field;
    if (tcp) {
      put32(l4 + 4, seq0 + uint32_t(off));
      uint8_t f = flags0;
      if (i + 1 != nseg) f &= uint8_t(~(kFin | kPsh));
      if (i != 0) f &= uint8_t(~kCwr);
      l4[13] = f;
      csum_field = kTcpCsumOffset;
    } else {
      put16(l4 + 4, uint16_t(l4_len));
      csum_field = kUdpCsumOffset;
    }
    put16(l4 + csum_field, 0);
    const uint16_t ph = pseudo_header_sum(src, dst, proto, uint32_t(l4_len));
    uint16_t c = checksum_finish(checksum_sum({l4, l4_len}, ph));
    if (!tcp && c == 0) c = 0xffff;  // UDP: 0 would mean "no checksum" (RFC 768)
    put16(l4 + csum_field, c);
    out_lens[i] = total;
  }
  return int(nseg);
}

// ---- GRO ----

namespace {

enum class ParseResult { kNone, kKeyOnly, kMergeable };

}  // namespace

int GroTable::coalesce(std::span<const std::span<uint8_t>> bufs, std::span<size_t> lens,
                       std::span<size_t> out) {
  const size_t n = bufs.size();
  if (lens.size() < n || out.size() < n) return -1;
  for (size_t i = 0; i < n; ++i) {
    if (bufs[i].size() < kVnetHdrLen || lens[i] > bufs[i].size() - kVnetHdrLen) return -1;
  }
  nflows_ = 0;
  size_t nout = 0;

  for (size_t i = 0; i < n; ++i) {
    const std::span<uint8_t> pkt = bufs[i].subspan(kVnetHdrLen, lens[i]);
    Parsed p;
    Flow key_probe;
    const ParseResult r = [&] {
      // The flow key needs the addresses, protocol and ports; merging needs much more.
      const size_t len = pkt.size();
      if (len < 20) return ParseResult::kNone;
      p.version = pkt[0] >> 4;
      size_t iph;
      if (p.version == 4) {
        iph = size_t(pkt[0] & 0x0f) * 4;
        // A later fragment has no ports: it cannot be keyed (nor merged).
        if (iph < 20 || iph + 4 > len || (be16(&pkt[6]) & 0x1fff)) return ParseResult::kNone;
        p.proto = pkt[9];
      } else if (p.version == 6) {
        iph = 40;
        if (len < iph + 4) return ParseResult::kNone;
        p.proto = pkt[6];
      } else {
        return ParseResult::kNone;
      }
      if (p.proto != kProtoTcp && p.proto != kProtoUdp) return ParseResult::kNone;
      if (!(p.proto == kProtoTcp ? opt_.tcp : opt_.udp)) return ParseResult::kNone;
      auto& k = key_probe.key;
      k[0] = p.version;
      const auto s = ip_src(pkt), d = ip_dst(pkt);
      std::memcpy(&k[1], s.data(), s.size());
      std::memcpy(&k[17], d.data(), d.size());
      k[33] = p.proto;
      std::memcpy(&k[34], &pkt[iph], 4);
      uint64_t hsh = 0xcbf29ce484222325ull;  // FNV-1a: cheap, and the table is tiny
      for (uint8_t b : k) hsh = (hsh ^ b) * 0x100000001b3ull;
      key_probe.hash = uint32_t(hsh ^ hsh >> 32);

      p.iph_len = uint8_t(iph);
      if (len > kMaxIpPacket) return ParseResult::kKeyOnly;
      if (p.version == 4) {
        // IHL 5 only (inet_gro_receive); the length must be exact (no padding to carry
        // along) and the packet unfragmented.
        if (pkt[0] != 0x45 || be16(&pkt[2]) != len || (be16(&pkt[6]) & 0x3fff))
          return ParseResult::kKeyOnly;
      } else if (size_t(be16(&pkt[4])) + 40 != len) {
        return ParseResult::kKeyOnly;
      }
      if (p.proto == kProtoTcp) {
        if (len < iph + 20) return ParseResult::kKeyOnly;
        const size_t th = size_t(pkt[iph + 12] >> 4) * 4;
        if (th < 20 || iph + th > len) return ParseResult::kKeyOnly;
        p.l4h_len = uint8_t(th);
      } else {
        if (len < iph + 8 || be16(&pkt[iph + 4]) != len - iph) return ParseResult::kKeyOnly;
        p.l4h_len = 8;
      }
      p.payload = uint32_t(len - iph - p.l4h_len);
      return ParseResult::kMergeable;
    }();

    if (r != ParseResult::kNone) {
      Flow* f = nullptr;
      for (size_t j = 0; j < nflows_; ++j) {
        if (flows_[j].hash == key_probe.hash && flows_[j].key == key_probe.key) {
          f = &flows_[j];
          break;
        }
      }
      if (f != nullptr && r == ParseResult::kMergeable && try_append(*f, p, pkt, bufs))
        continue;
      if (f != nullptr) {
        finish(*f, bufs, lens);
      } else if (nflows_ < kMaxFlows) {
        f = &flows_[nflows_++];
        f->hash = key_probe.hash;
        f->key = key_probe.key;
      }
      if (f != nullptr) {
        // This packet is now the one the flow's later packets may append to, so a flow's
        // packets never overtake one another.
        f->head = i;
        f->p = p;
        f->len = uint32_t(pkt.size());
        f->gso_size = uint16_t(p.payload);
        f->count = 1;
        f->head_csum = Csum::kUnknown;
        f->open = false;
        if (r == ParseResult::kMergeable && p.payload > 0) {
          const uint8_t* l4 = &pkt[p.iph_len];
          if (p.proto == kProtoTcp) {
            const uint8_t fl = l4[13];
            f->open = (fl & kAck) && !(fl & (kSyn | kFin | kRst | kUrg | kPsh));
            f->next_seq = be32(l4 + 4) + p.payload;
          } else {
            f->open = !(p.version == 4 && be16(l4 + 6) == 0);
          }
        }
      }
    }
    std::memset(bufs[i].data(), 0, kVnetHdrLen);  // GSO_NONE, no flags: written as is
    out[nout++] = i;
  }
  for (size_t j = 0; j < nflows_; ++j) finish(flows_[j], bufs, lens);
  return int(nout);
}

bool GroTable::try_append(Flow& f, const Parsed& p, std::span<uint8_t> pkt,
                          std::span<const std::span<uint8_t>> bufs) {
  if (!f.open || p.payload == 0 || p.payload > f.gso_size || p.l4h_len != f.p.l4h_len)
    return false;
  const std::span<uint8_t> room = bufs[f.head].subspan(kVnetHdrLen);
  const size_t new_len = size_t(f.len) + p.payload;
  if (new_len > kMaxIpPacket || new_len > room.size()) return false;
  const uint8_t* h = room.data();
  const uint8_t* q = pkt.data();
  if (p.version == 4) {
    // TOS, flags (only DF can be set: fragments are not mergeable), TTL.
    if (q[1] != h[1] || q[6] != h[6] || q[8] != h[8]) return false;
  } else {
    // Version, traffic class, flow label; hop limit.
    if (std::memcmp(q, h, 4) != 0 || q[7] != h[7]) return false;
  }
  const size_t iph = p.iph_len;
  const uint8_t* hl4 = h + iph;
  const uint8_t* ql4 = q + iph;
  const bool tcp = p.proto == kProtoTcp;
  if (tcp) {
    const uint8_t qf = ql4[13];
    if (be32(ql4 + 4) != f.next_seq) return false;
    // Same ack, data offset byte and window: the merged packet carries only the first's.
    if (std::memcmp(ql4 + 8, hl4 + 8, 5) != 0 || std::memcmp(ql4 + 14, hl4 + 14, 2) != 0)
      return false;
    if (!(qf & kAck) || (qf & (kSyn | kFin | kRst | kUrg | kCwr))) return false;
    if ((qf & ~kPsh) != (hl4[13] & ~(kPsh | kCwr))) return false;
    if (std::memcmp(ql4 + 20, hl4 + 20, p.l4h_len - 20) != 0) return false;
  } else {
    if (f.count >= kMaxUdpSegments) return false;
    if (p.version == 4 && be16(ql4 + 6) == 0) return false;
  }
  // Checked last: the most expensive test, done once per packet at most.
  if (f.head_csum == Csum::kUnknown) {
    f.head_csum = checksums_valid(room.first(f.len), iph, p.proto) ? Csum::kValid
                                                                   : Csum::kInvalid;
  }
  if (f.head_csum != Csum::kValid) {
    f.open = false;
    return false;
  }
  if (!checksums_valid(pkt, iph, p.proto)) return false;

  std::memcpy(room.data() + f.len, q + iph + p.l4h_len, p.payload);
  f.len = uint32_t(new_len);
  ++f.count;
  if (p.payload < f.gso_size) f.open = false;  // only the last segment may be short
  if (tcp) {
    f.next_seq += p.payload;
    if (ql4[13] & kPsh) {
      room[iph + 13] |= kPsh;  // as tcp_gro_receive: the merged packet keeps the last's PSH
      f.open = false;
    }
  }
  return true;
}

void GroTable::finish(Flow& f, std::span<const std::span<uint8_t>> bufs,
                      std::span<size_t> lens) {
  if (f.count < 2) return;  // written unchanged behind the zero header
  uint8_t* h = bufs[f.head].data() + kVnetHdrLen;
  const size_t iph = f.p.iph_len;
  const size_t l4_len = f.len - iph;
  const bool tcp = f.p.proto == kProtoTcp;
  if (f.p.version == 4) {
    put16(h + 2, uint16_t(f.len));
    put16(h + 10, 0);
    put16(h + 10, checksum_finish(checksum_sum({h, iph})));
  } else {
    put16(h + 4, uint16_t(l4_len));
  }
  if (!tcp) put16(h + iph + 4, uint16_t(l4_len));
  const size_t csum_off = tcp ? kTcpCsumOffset : kUdpCsumOffset;
  const std::span<const uint8_t> ip{h, f.len};
  // NEEDS_CSUM: the field carries the pseudo-header sum for the whole L4 length; the
  // kernel adjusts it per segment if it ever segments the packet (tcp_gso_segment).
  put16(h + iph + csum_off, pseudo_header_sum(ip_src(ip), ip_dst(ip), f.p.proto,
                                              uint32_t(l4_len)));
  VirtioNetHdr v;
  v.flags = VirtioNetHdr::kFlagNeedsCsum;
  if (tcp) {
    v.gso_type = f.p.version == 4 ? VirtioNetHdr::kGsoTcpV4 : VirtioNetHdr::kGsoTcpV6;
    if (h[iph + 13] & kCwr) v.gso_type |= VirtioNetHdr::kGsoEcn;
  } else {
    v.gso_type = VirtioNetHdr::kGsoUdpL4;
  }
  v.hdr_len = uint16_t(iph + f.p.l4h_len);
  v.gso_size = f.gso_size;
  v.csum_start = uint16_t(iph);
  v.csum_offset = uint16_t(csum_off);
  v.serialize(bufs[f.head].first<kVnetHdrLen>());
  lens[f.head] = f.len;
}

}  // namespace meshwg::tun
