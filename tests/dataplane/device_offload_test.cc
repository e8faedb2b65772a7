// The offload path of the device, in process: a TSO super-packet read from a TUN with
// virtio-net headers is split, sealed and sent as a batch; the receiver decrypts a batch and
// writes it with virtio-net headers (GRO-merged where it can). The TCP byte stream that comes
// out must be exactly the one that went in, whatever the merging. Packets are built here
// independently of tun/offload.cc.
#include <gtest/gtest.h>

#include <memory>

#include "control/device_uapi.h"
#include "control/uapi.h"
#include "node.h"
#include "tun/offload.h"

namespace meshwg::testing {
namespace {

using namespace std::chrono_literals;

uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(sum);
}
uint32_t add_bytes(uint32_t sum, const uint8_t* p, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  if (n & 1) sum += uint32_t(p[n - 1]) << 8;
  return sum;
}

// An IPv4/TCP packet 192.168.1.1:5000 -> 192.168.1.2:6000 with seq and payload, checksums
// complete. With tso_size > 0, it is a super-packet preceded by the virtio-net header the
// kernel would give it (GSO_TCPV4, NEEDS_CSUM, pseudo-header sum in the TCP checksum).
Packet tcp4(uint32_t seq, const std::vector<uint8_t>& payload, uint8_t flags, uint16_t tso_size = 0) {
  Packet p(40 + payload.size());
  const size_t total = p.size();
  p[0] = 0x45;
  p[2] = uint8_t(total >> 8);
  p[3] = uint8_t(total);
  p[6] = 0x40;  // DF
  p[8] = 64;
  p[9] = 6;
  const uint8_t src[4] = {192, 168, 1, 1}, dst[4] = {192, 168, 1, 2};
  std::memcpy(&p[12], src, 4);
  std::memcpy(&p[16], dst, 4);
  const uint16_t ipsum = uint16_t(~fold(add_bytes(0, p.data(), 20)));
  p[10] = uint8_t(ipsum >> 8);
  p[11] = uint8_t(ipsum);
  uint8_t* t = &p[20];
  t[0] = 5000 >> 8, t[1] = 5000 & 0xff, t[2] = 6000 >> 8, t[3] = 6000 & 0xff;
  for (int i = 0; i < 4; ++i) t[4 + i] = uint8_t(seq >> (24 - 8 * i));
  t[8] = 0, t[9] = 0, t[10] = 0, t[11] = 1;  // ack 1
  t[12] = 5 << 4;
  t[13] = flags;
  t[14] = 0xff, t[15] = 0xff;
  std::memcpy(t + 20, payload.data(), payload.size());
  uint32_t pseudo = add_bytes(0, src, 4);
  pseudo = add_bytes(pseudo, dst, 4);
  pseudo += 6 + uint32_t(20 + payload.size());
  if (tso_size == 0) {
    const uint16_t c = uint16_t(~fold(add_bytes(pseudo, t, 20 + payload.size())));
    t[16] = uint8_t(c >> 8);
    t[17] = uint8_t(c);
    return p;
  }
  const uint16_t partial = fold(pseudo);
  t[16] = uint8_t(partial >> 8);
  t[17] = uint8_t(partial);
  tun::VirtioNetHdr h;
  h.flags = tun::VirtioNetHdr::kFlagNeedsCsum;
  h.gso_type = tun::VirtioNetHdr::kGsoTcpV4;
  h.hdr_len = 40;
  h.gso_size = tso_size;
  h.csum_start = 20;
  h.csum_offset = 16;
  Packet out(tun::kVnetHdrLen);
  h.serialize(std::span<uint8_t, tun::kVnetHdrLen>(out.data(), tun::kVnetHdrLen));
  out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Reassembles the TCP payload bytes (by sequence number) from what a TUN wrote, checking every
// write's virtio-net header and IP/TCP framing on the way.
std::map<uint32_t, std::vector<uint8_t>> tcp_stream(const std::vector<Packet>& writes) {
  std::map<uint32_t, std::vector<uint8_t>> segs;
  for (const Packet& w : writes) {
    EXPECT_GE(w.size(), tun::kVnetHdrLen + 40);
    if (w.size() < tun::kVnetHdrLen + 40) continue;
    auto h = tun::VirtioNetHdr::parse({w.data(), tun::kVnetHdrLen});
    EXPECT_TRUE(h);
    const uint8_t* ip = w.data() + tun::kVnetHdrLen;
    const size_t total = size_t(ip[2]) << 8 | ip[3];
    EXPECT_EQ(total, w.size() - tun::kVnetHdrLen);
    const uint8_t* t = ip + 20;
    const uint32_t seq = uint32_t(t[4]) << 24 | uint32_t(t[5]) << 16 | uint32_t(t[6]) << 8 | t[7];
    if (h && h->gso_type != tun::VirtioNetHdr::kGsoNone) {
      EXPECT_EQ(h->gso_type, tun::VirtioNetHdr::kGsoTcpV4);
      EXPECT_EQ(h->hdr_len, 40);
    } else {
      // A plain packet must carry a valid TCP checksum.
      uint32_t pseudo = add_bytes(0, ip + 12, 8) + 6 + uint32_t(total - 20);
      EXPECT_EQ(fold(add_bytes(pseudo, t, total - 20)), 0xffff);
    }
    segs[seq].assign(t + 20, ip + total);
  }
  return segs;
}

TEST(DeviceOffload, TsoSuperPacketArrivesAsTheSameByteStream) {
  ASSERT_TRUE(crypto::init());
  FakeNet net;
  FakeClock clock;
  Node a(net, clock, "10.0.0.1", true), b(net, clock, "10.0.0.2", true);
  ASSERT_EQ(a.set("private_key=" + control::to_hex(a.priv.span()) + "\nlisten_port=1\npublic_key=" +
                  control::to_hex(b.pub) + "\nallowed_ip=192.168.1.2/32\nendpoint=10.0.0.2:2\n"),
            0);
  ASSERT_EQ(b.set("private_key=" + control::to_hex(b.priv.span()) + "\nlisten_port=2\npublic_key=" +
                  control::to_hex(a.pub) + "\nallowed_ip=192.168.1.1/32\n"),
            0);
  ASSERT_TRUE(a.dev.start(false));
  ASSERT_TRUE(b.dev.start(false));

  std::vector<uint8_t> data(20 * 1000 + 337);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7 + 3);
  const uint32_t seq0 = 1000;
  a.tun.inject(tcp4(seq0, data, 0x18 /* PSH|ACK */, 1000));
  ASSERT_TRUE(wait_until([&] {
    size_t got = 0;
    for (auto& [seq, bytes] : tcp_stream(b.tun.written())) got += bytes.size();
    return got >= data.size();
  }));
  auto segs = tcp_stream(b.tun.written());
  std::vector<uint8_t> joined;
  uint32_t next = seq0;
  for (auto& [seq, bytes] : segs) {
    EXPECT_EQ(seq, next) << "gap or overlap in the stream";
    next = seq + uint32_t(bytes.size());
    joined.insert(joined.end(), bytes.begin(), bytes.end());
  }
  EXPECT_EQ(joined, data);
  // 21 segments went over the wire as 21 transport messages.
  EXPECT_EQ(net.count_type(4), 21u);

  // Now with a session: the run is sealed and sent as one batch. The receiver gets its
  // datagrams in batches, so GRO must have merged some: fewer writes than segments.
  const size_t writes_before = b.tun.written_count();
  std::vector<uint8_t> more(40 * 1200);
  for (size_t i = 0; i < more.size(); ++i) more[i] = uint8_t(i * 13 + 1);
  const uint32_t seq1 = seq0 + uint32_t(data.size());
  a.tun.inject(tcp4(seq1, more, 0x10, 1200));
  ASSERT_TRUE(wait_until([&] {
    size_t got = 0;
    for (auto& [seq, bytes] : tcp_stream(b.tun.written())) got += seq >= seq1 ? bytes.size() : 0;
    return got >= more.size();
  }));
  std::vector<uint8_t> joined2;
  for (auto& [seq, bytes] : tcp_stream(b.tun.written()))
    if (seq >= seq1) joined2.insert(joined2.end(), bytes.begin(), bytes.end());
  EXPECT_EQ(joined2, more);
  EXPECT_EQ(net.count_type(4), 21u + 40u);
  EXPECT_LT(b.tun.written_count() - writes_before, 40u) << "nothing was GRO-merged";

  // A plain packet (GSO_NONE) also passes, and comes out with a zero virtio-net header.
  const size_t before = b.tun.written_count();
  Packet plain = tcp4(seq1 + uint32_t(more.size()), {1, 2, 3}, 0x10);
  Packet with_hdr(tun::kVnetHdrLen, 0);
  with_hdr.insert(with_hdr.end(), plain.begin(), plain.end());
  a.tun.inject(with_hdr);
  ASSERT_TRUE(wait_until([&] { return b.tun.written_count() > before; }));
  EXPECT_EQ(b.tun.written().back(), with_hdr);
  a.dev.stop();
  b.dev.stop();
}

}  // namespace
}  // namespace meshwg::testing
