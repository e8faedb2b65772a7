// TUN offloads, sans I/O: the virtio-net header that a TUN opened with IFF_VNET_HDR puts in
// front of every packet, TSO/USO segmentation of "super-packets" read from the TUN
// (gso_split), and GRO-style coalescing of packets about to be written to it (GroTable).
// The same technique as wireguard-go's tun/offload_linux.go; this code is our own.
//
// Kernel ABI relied on (include/uapi/linux/virtio_net.h, drivers/net/tun.c,
// include/linux/virtio_net.h):
//
//   struct virtio_net_hdr {            offset
//     u8  flags;                          0   VIRTIO_NET_HDR_F_NEEDS_CSUM = 1,
//                                             VIRTIO_NET_HDR_F_DATA_VALID = 2 (ignored here)
//     u8  gso_type;                       1   NONE 0, TCPV4 1, UDP 3 (UFO), TCPV6 4,
//                                             UDP_L4 5 (USO, Linux 6.2+), | ECN 0x80
//     u16 hdr_len;                        2   length of the IP + L4 headers
//     u16 gso_size;                       4   payload bytes per segment (MSS)
//     u16 csum_start;                     6   where checksumming starts (the L4 header)
//     u16 csum_offset;                    8   checksum field offset from csum_start
//   };                                       (16 TCP, 6 UDP)
//
// - The header is 10 bytes (TUNSETVNETHDRSZ default; we never set 12, the mrg_rxbuf form).
//   Its u16 fields are little-endian: tun uses the legacy virtio byte order, which is the
//   host's unless TUNSETVNETBE is set, and meshwg targets little-endian hosts.
// - NEEDS_CSUM (CHECKSUM_PARTIAL): the 16-bit field at csum_start + csum_offset holds the
//   folded, NOT complemented, pseudo-header sum; the receiver must checksum from csum_start
//   to the end of the packet and store the complement there (skb_checksum_help, which
//   stores 0xffff when the result is 0).
// - TUNSETOFFLOAD promises the kernel what the reader can take: TUN_F_CSUM (0x01) packets
//   with NEEDS_CSUM; TUN_F_TSO4 (0x02) / TUN_F_TSO6 (0x04) TCP super-packets up to 64 KiB
//   with gso_type TCPV4/TCPV6 (both need TUN_F_CSUM; TUN_F_TSO_ECN (0x08) adds those with
//   CWR, gso_type | ECN, else the kernel segments them itself); TUN_F_USO4 (0x20) / TUN_F_USO6
//   (0x40) UDP super-packets with gso_type UDP_L4 (Linux 6.2+; older kernels refuse the
//   ioctl with EINVAL). Without a flag the kernel segments or checksums in software first.
//   The flags only govern reads; writes may carry any GSO type virtio_net_hdr_to_skb knows,
//   which is how GRO-coalesced packets reach the stack as one skb. UDP_L4 writes need a
//   kernel with USO, so enable UDP coalescing only where setting TUN_F_USO4|6 succeeded.
// - A GSO super-packet is one IP header + one L4 header + the payload of all segments. Its
//   hdr_len is not trusted: on the forwarding path the kernel reports skb_headlen(), which
//   can be the whole first segment; the headers are parsed instead, and csum_start must
//   agree with them.
// - Segmenting (tcp_gso_segment / __udp_gso_segment): every segment gets the same headers
//   except IPv4 total length, id (first id + i), header checksum; IPv6 payload length; TCP
//   seq (+ i * gso_size), FIN and PSH kept on the last segment only, CWR on the first only;
//   UDP length; and a full L4 checksum.
// - Coalescing follows the kernel's GRO rules (tcp_gro_receive, udp_gro_receive_segment,
//   inet_gro_receive, ipv6_gro_receive): see GroTable.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace meshwg::tun {

inline constexpr size_t kVnetHdrLen = 10;

// TUNSETOFFLOAD flags (<linux/if_tun.h>); Debian 12's headers predate the USO ones.
inline constexpr unsigned kTunFCsum = 0x01;    // TUN_F_CSUM
inline constexpr unsigned kTunFTso4 = 0x02;    // TUN_F_TSO4
inline constexpr unsigned kTunFTso6 = 0x04;    // TUN_F_TSO6
inline constexpr unsigned kTunFTsoEcn = 0x08;  // TUN_F_TSO_ECN
inline constexpr unsigned kTunFUso4 = 0x20;    // TUN_F_USO4 (Linux 6.2+)
inline constexpr unsigned kTunFUso6 = 0x40;    // TUN_F_USO6 (Linux 6.2+)
inline constexpr size_t kMaxIpPacket = 65535;  // IPv4 total length / GRO size limit

// struct virtio_net_hdr. The constants carry the kernel's names in k-style: the kernel's own
// names are macros in <linux/virtio_net.h> and would collide if both were included.
struct VirtioNetHdr {
  static constexpr uint8_t kFlagNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
  static constexpr uint8_t kFlagDataValid = 2;  // VIRTIO_NET_HDR_F_DATA_VALID
  static constexpr uint8_t kGsoNone = 0;        // VIRTIO_NET_HDR_GSO_NONE
  static constexpr uint8_t kGsoTcpV4 = 1;       // VIRTIO_NET_HDR_GSO_TCPV4
  static constexpr uint8_t kGsoUdp = 3;         // VIRTIO_NET_HDR_GSO_UDP (UFO; unsupported)
  static constexpr uint8_t kGsoTcpV6 = 4;       // VIRTIO_NET_HDR_GSO_TCPV6
  static constexpr uint8_t kGsoUdpL4 = 5;       // VIRTIO_NET_HDR_GSO_UDP_L4 (USO)
  static constexpr uint8_t kGsoEcn = 0x80;      // VIRTIO_NET_HDR_GSO_ECN (TCP with CWR)

  uint8_t flags = 0;
  uint8_t gso_type = kGsoNone;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;

  bool operator==(const VirtioNetHdr&) const = default;

  // Reads the first kVnetHdrLen bytes; nullopt when in is shorter. Values are not checked
  // here (gso_split checks them against the packet).
  [[nodiscard]] static std::optional<VirtioNetHdr> parse(std::span<const uint8_t> in);
  void serialize(std::span<uint8_t, kVnetHdrLen> out) const;
};

// ---- Internet checksum (RFC 1071) ----
// Sums are folded 16-bit one's-complement sums of big-endian words, returned as host
// integers and NOT complemented, so they chain: a region's sum is the initial value of the
// next. A region that does not end the data must have even length (an odd tail is padded
// with a zero byte, as at the end of a packet).
[[nodiscard]] uint16_t checksum_sum(std::span<const uint8_t> data, uint16_t initial = 0);
// The value for a header checksum field: ~sum.
[[nodiscard]] inline uint16_t checksum_finish(uint16_t sum) { return uint16_t(~sum); }
// Sum of the TCP/UDP pseudo-header (RFC 793 / RFC 8200 §8.1): src, dst (4 bytes each for
// IPv4, 16 for IPv6), protocol, and the L4 length (header + payload).
[[nodiscard]] uint16_t pseudo_header_sum(std::span<const uint8_t> src,
                                         std::span<const uint8_t> dst, uint8_t proto,
                                         uint32_t l4_len);

// Finalizes a CHECKSUM_PARTIAL packet in place, as skb_checksum_help: checksums
// pkt[csum_start..end) (the field holds the pseudo-header sum) and stores the complement at
// csum_start + csum_offset (0xffff for 0). Does nothing and returns true without
// NEEDS_CSUM; returns false if the field lies outside pkt or csum_offset is odd (pkt is then
// unchanged).
// The allocation-free, copy-free path for a GSO_NONE read.
[[nodiscard]] bool complete_checksum(std::span<uint8_t> pkt, const VirtioNetHdr& h);

// Splits one packet read from the TUN. in: the bytes after the virtio-net header (IP header
// onward); h: that header.
//  - gso_type NONE: in is copied to out_bufs[0] and its checksum completed if NEEDS_CSUM.
//  - TCPV4, TCPV6 (ECN bit allowed), UDP_L4: the payload is cut into gso_size pieces and
//    out_bufs[i] receives segment i with its own headers and full checksums (see the file
//    header). hdr_len must not exceed in.size(); the headers themselves are parsed: IPv4
//    without fragmentation (IHL >= 5) or IPv6 without extension headers, then TCP (data
//    offset 20..60) or UDP matching the GSO type. With NEEDS_CSUM, csum_start/csum_offset
//    must point at that L4 checksum. A super-packet with no payload gives one segment.
// Returns the packet count n (out_bufs[0..n) hold packets of out_lens[0..n) bytes), or -1
// when the input is malformed or unsupported (UFO, unknown type, gso_size 0, lengths or
// headers beyond the data, a segment over 65535 bytes) or does not fit (more segments than
// min(out_bufs.size(), out_lens.size()), or a segment longer than its buffer). On -1 the
// caller drops the packet and counts it; out_bufs contents are then unspecified. Never reads
// or writes outside in and out_bufs. No allocation.
[[nodiscard]] int gso_split(std::span<const uint8_t> in, const VirtioNetHdr& h,
                            std::span<const std::span<uint8_t>> out_bufs,
                            std::span<size_t> out_lens);

// GRO for writes to the TUN: merges runs of packets of one TCP or UDP flow in a batch into
// GSO super-packets, so the kernel takes them as one skb (one write, one trip up the stack).
//
// Caller contract, per batch (the TUN is a single writer per queue; a GroTable is used by one
// thread at a time and keeps no state between batches):
//   bufs[i] is packet i's whole buffer: kVnetHdrLen bytes of headroom, then the IP packet of
//   lens[i] bytes, then spare room. Packets merge into an earlier one's buffer only if it has
//   room, so give every buffer kVnetHdrLen + 65535 bytes to get full coalescing.
//   coalesce() returns n and fills out[0..n) with packet indices, in increasing order. For
//   each idx = out[k], write bufs[idx].first(kVnetHdrLen + lens[idx]) to the TUN as one
//   write(2): it starts with the virtio-net header already filled in (all zero for a plain
//   packet; GSO type, gso_size, hdr_len and NEEDS_CSUM with the pseudo-header sum in the
//   L4 checksum field for a merged one), and lens[idx] is the (possibly grown) IP length.
//   Indices not in out were appended to an earlier packet: do not write them, just recycle
//   their buffers. A failed write of a merged packet loses all its segments (count each).
//   Returns -1, touching nothing, if lens or out is shorter than bufs or lens[i] +
//   kVnetHdrLen > bufs[i].size() (caller bugs).
//
// Merge rules (the kernel's GRO rules, conservative where they differ): a packet is
// appended to the latest packet of its flow (same IP version, addresses, protocol, ports)
// only if that packet still accepts followers and
//   - both are IPv4 with IHL 5, total length == packet length, no fragmentation, equal TOS,
//     TTL and DF; or IPv6 with payload length matching, no extension headers, equal traffic
//     class, flow label and hop limit;
//   - TCP: seq == previous seq + previous payload; same ack, window, data offset and option
//     bytes, same flags apart from PSH; ACK set, no SYN/FIN/RST/URG/CWR (CWR is allowed on the
//     first, which then carries GSO_ECN); payload > 0 and <= the first's; PSH or a shorter
//     payload ends the run (nothing follows it);
//   - UDP: payload > 0 and <= the first's, a shorter one ends the run; at most
//     kMaxUdpSegments per packet; IPv4 checksum not 0 (no checksum);
//   - the merged IP packet stays <= 65535 bytes and fits in the first packet's buffer;
//   - both packets' checksums (IPv4 header and full L4 with pseudo-header) are valid, so a
//     corrupt packet reaches the kernel as is, to be dropped and counted there.
// Packets of one flow keep their relative order in out; flows may interleave differently.
// At most kMaxFlows flows are tracked per batch; packets of further flows pass through.
class GroTable {
 public:
  static constexpr size_t kMaxFlows = 64;
  // UDP_GRO_CNT_MAX in the kernel; USO senders are limited to 64 segments as well.
  static constexpr size_t kMaxUdpSegments = 64;

  struct Options {
    bool tcp = true;   // always accepted on writes with IFF_VNET_HDR
    bool udp = false;  // only if TUNSETOFFLOAD with TUN_F_USO4|TUN_F_USO6 succeeded
  };

  GroTable() = default;
  explicit GroTable(Options opt) : opt_(opt) {}

  [[nodiscard]] int coalesce(std::span<const std::span<uint8_t>> bufs, std::span<size_t> lens,
                             std::span<size_t> out);

 private:
  // Where a packet's headers are; filled by parsing, not trusted from anywhere else.
  struct Parsed {
    uint8_t version = 0;  // 4 or 6
    uint8_t proto = 0;    // 6 TCP, 17 UDP
    uint8_t iph_len = 0;  // 20 or 40
    uint8_t l4h_len = 0;  // 8 (UDP) or 20..60 (TCP)
    uint32_t payload = 0;
  };
  enum class Csum : uint8_t { kUnknown, kValid, kInvalid };
  struct Flow {
    uint32_t hash = 0;
    std::array<uint8_t, 38> key{};  // version, src, dst, proto, ports (v4 zero-padded)
    size_t head = 0;                // index of the packet followers append to
    Parsed p;                       // the head's headers
    uint32_t len = 0;               // head IP length including appended payload
    uint32_t next_seq = 0;          // TCP: seq the next follower must have
    uint16_t gso_size = 0;          // the head's payload size
    uint16_t count = 0;             // segments in the head
    bool open = false;              // accepts followers
    Csum head_csum = Csum::kUnknown;
  };

  void finish(Flow& f, std::span<const std::span<uint8_t>> bufs, std::span<size_t> lens);
  bool try_append(Flow& f, const Parsed& p, std::span<uint8_t> pkt,
                  std::span<const std::span<uint8_t>> bufs);

  Options opt_;
  std::array<Flow, kMaxFlows> flows_;
  size_t nflows_ = 0;
};

}  // namespace meshwg::tun
