// Micro-benchmark of tun/offload on a 64 KiB TCPv4 super-packet (timestamps, MSS 1448, 46
// segments): the TSO split of a TUN read, the GRO coalesce of a batch before a TUN write,
// and the checksum both rely on. main() comes from crypto_bench.cc (BENCHMARK_MAIN).
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "tun/offload.h"

namespace meshwg::tun {
namespace {

constexpr size_t kIpTcpHdr = 20 + 32;
constexpr uint16_t kMss = 1448;

struct Super {
  std::vector<uint8_t> pkt;
  VirtioNetHdr hdr;
};

// A super-packet as the kernel hands it over (NEEDS_CSUM, partial checksum in place).
Super make_super() {
  Super s;
  s.pkt.assign(kMaxIpPacket, 0);
  uint8_t* p = s.pkt.data();
  p[0] = 0x45;
  p[2] = 0xff, p[3] = 0xff;
  p[6] = 0x40, p[8] = 64, p[9] = 6;
  p[12] = 10, p[15] = 1, p[16] = 10, p[19] = 2;
  uint8_t* t = p + 20;
  t[0] = 0x9c, t[1] = 0x40, t[2] = 0x14, t[3] = 0x51;
  t[12] = 8 << 4, t[13] = 0x18, t[14] = 0x01;
  t[20] = 1, t[21] = 1, t[22] = 8, t[23] = 10;
  for (size_t i = kIpTcpHdr; i < s.pkt.size(); ++i) p[i] = uint8_t(i * 131);
  const uint16_t ph = pseudo_header_sum({p + 12, 4}, {p + 16, 4}, 6, uint32_t(s.pkt.size() - 20));
  t[16] = uint8_t(ph >> 8), t[17] = uint8_t(ph);
  s.hdr.flags = VirtioNetHdr::kFlagNeedsCsum;
  s.hdr.gso_type = VirtioNetHdr::kGsoTcpV4;
  s.hdr.hdr_len = kIpTcpHdr;
  s.hdr.gso_size = kMss;
  s.hdr.csum_start = 20;
  s.hdr.csum_offset = 16;
  return s;
}

struct Segments {
  std::vector<std::vector<uint8_t>> store;
  std::vector<std::span<uint8_t>> bufs;  // each with kVnetHdrLen headroom
  std::vector<std::span<uint8_t>> pkts;  // the same buffers after the headroom
  std::vector<size_t> lens;
  explicit Segments(size_t n)
      : store(n, std::vector<uint8_t>(kVnetHdrLen + kMaxIpPacket)), lens(n) {
    for (auto& b : store) {
      bufs.emplace_back(b);
      pkts.emplace_back(b.data() + kVnetHdrLen, kMaxIpPacket);
    }
  }
};

void BM_GsoSplit64K(benchmark::State& state) {
  const Super s = make_super();
  Segments seg(64);
  for (auto _ : state) {
    const int n = gso_split(s.pkt, s.hdr, seg.pkts, seg.lens);
    benchmark::DoNotOptimize(n);
    if (n != 46) state.SkipWithError("unexpected segment count");
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(s.pkt.size()));
}
BENCHMARK(BM_GsoSplit64K);

void BM_GroCoalesce64K(benchmark::State& state) {
  const Super s = make_super();
  Segments seg(64);
  const int n = gso_split(s.pkt, s.hdr, seg.pkts, seg.lens);
  if (n != 46) {
    state.SkipWithError("split failed");
    return;
  }
  // Coalescing rewrites only the first packet's headers and appends behind its length, so
  // restoring those bytes makes every iteration start from the same batch.
  const std::vector<uint8_t> first_hdr(seg.store[0].begin(),
                                       seg.store[0].begin() + kVnetHdrLen + kIpTcpHdr);
  const size_t first_len = seg.lens[0];
  const auto bufs = std::span(seg.bufs).first(size_t(n));
  std::vector<size_t> out(static_cast<size_t>(n));
  GroTable gro;
  for (auto _ : state) {
    std::memcpy(seg.store[0].data(), first_hdr.data(), first_hdr.size());
    seg.lens[0] = first_len;
    const int w = gro.coalesce(bufs, seg.lens, out);
    benchmark::DoNotOptimize(w);
    if (w != 1) state.SkipWithError("did not coalesce");
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(s.pkt.size()));
}
BENCHMARK(BM_GroCoalesce64K);

void BM_Checksum64K(benchmark::State& state) {
  const Super s = make_super();
  for (auto _ : state) benchmark::DoNotOptimize(checksum_sum(s.pkt));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(s.pkt.size()));
}
BENCHMARK(BM_Checksum64K);

}  // namespace
}  // namespace meshwg::tun
