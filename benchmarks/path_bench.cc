// The data plane's per-byte CPU work beside the AEAD's own speed (the ceiling): on the way out a
// 64 KiB TSO super-packet is split into MTU-sized segments and each is padded and sealed in
// place (tun_loop + send_run minus syscalls); on the way in each datagram is opened and the
// segments are GRO-merged (receive_loop + deliver minus syscalls). Compare bytes_per_second
// of BM_TxPath with BM_RawSeal (and BM_RxPath with BM_RawOpen): path / ceiling.
#include <benchmark/benchmark.h>

#include <array>
#include <cstring>
#include <vector>

#include "crypto/aead.h"
#include "dataplane/messages.h"
#include "tun/offload.h"

namespace {

using namespace meshwg;
constexpr size_t kMss = 1380;  // 1420 MTU - 40 bytes IPv4+TCP
constexpr size_t kSegments = 47;
constexpr size_t kPayload = kMss * kSegments;
constexpr size_t kCap = dataplane::kTransportHeaderSize + 65535 + 32;

uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(s);
}

// A TSO super-packet as the kernel hands it over: virtio-net header, IPv4, TCP, payload.
std::vector<uint8_t> super_packet() {
  std::vector<uint8_t> p(tun::kVnetHdrLen + 40 + kPayload, 0x5a);
  tun::VirtioNetHdr h;
  h.flags = tun::VirtioNetHdr::kFlagNeedsCsum;
  h.gso_type = tun::VirtioNetHdr::kGsoTcpV4;
  h.hdr_len = 40;
  h.gso_size = kMss;
  h.csum_start = 20;
  h.csum_offset = 16;
  h.serialize(std::span<uint8_t, tun::kVnetHdrLen>(p.data(), tun::kVnetHdrLen));
  uint8_t* ip = p.data() + tun::kVnetHdrLen;
  const size_t total = 40 + kPayload;
  std::memset(ip, 0, 40);
  ip[0] = 0x45;
  ip[2] = uint8_t(total >> 8), ip[3] = uint8_t(total);
  ip[8] = 64, ip[9] = 6;
  ip[12] = 10, ip[15] = 1, ip[16] = 10, ip[19] = 2;
  uint32_t s = 0;
  for (int i = 0; i < 20; i += 2) s += uint32_t(ip[i]) << 8 | ip[i + 1];
  const uint16_t c = uint16_t(~fold(s));
  ip[10] = uint8_t(c >> 8), ip[11] = uint8_t(c);
  uint8_t* t = ip + 20;
  t[0] = 0x13, t[1] = 0x88, t[2] = 0x17, t[3] = 0x70;
  t[7] = 1, t[11] = 1;
  t[12] = 5 << 4, t[13] = 0x10, t[14] = 0xff, t[15] = 0xff;
  const uint16_t pseudo = fold(0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + uint32_t(20 + kPayload));
  t[16] = uint8_t(pseudo >> 8), t[17] = uint8_t(pseudo);
  return p;
}

struct Segments {
  std::vector<uint8_t> mem = std::vector<uint8_t>(kSegments * kCap);
  std::array<std::span<uint8_t>, kSegments> spans;
  std::array<size_t, kSegments> lens{};
  Segments() {
    for (size_t i = 0; i < kSegments; ++i)
      spans[i] = {mem.data() + i * kCap + dataplane::kTransportHeaderSize, 65535};
  }
  uint8_t* base(size_t i) { return mem.data() + i * kCap; }
};

size_t seal(uint8_t* buf, size_t len, uint64_t nonce, const crypto::Key& key) {
  uint8_t* plain = buf + dataplane::kTransportHeaderSize;
  const size_t padded = dataplane::padded_length(len, 1420);
  std::memset(plain + len, 0, padded - len);
  dataplane::store_le32(buf, 4);
  dataplane::store_le32(buf + 4, 1);
  dataplane::store_le64(buf + 8, nonce);
  crypto::transport_seal(plain, {plain, padded}, nonce, key.span());
  return dataplane::kTransportHeaderSize + padded + dataplane::kTagSize;
}

void BM_TxPath(benchmark::State& state) {
  (void)crypto::init();
  crypto::calibrate_transport_aead();
  crypto::Key key;
  crypto::random_bytes(key.span());
  const auto sp = super_packet();
  const auto hdr = *tun::VirtioNetHdr::parse({sp.data(), tun::kVnetHdrLen});
  Segments segs;
  uint64_t nonce = 0;
  for (auto _ : state) {
    const int k = tun::gso_split({sp.data() + tun::kVnetHdrLen, sp.size() - tun::kVnetHdrLen},
                                 hdr, segs.spans, segs.lens);
    if (k != int(kSegments)) {
      state.SkipWithError("split failed");
      break;
    }
    for (size_t i = 0; i < kSegments; ++i) benchmark::DoNotOptimize(seal(segs.base(i), segs.lens[i], nonce++, key));
  }
  state.SetBytesProcessed(int64_t(state.iterations() * kPayload));
}
BENCHMARK(BM_TxPath);

// The ceiling: the AEAD alone over the same 47 packets of 1420 bytes.
void BM_RawSeal(benchmark::State& state) {
  (void)crypto::init();
  crypto::calibrate_transport_aead();
  crypto::Key key;
  crypto::random_bytes(key.span());
  std::vector<uint8_t> buf(1420 + 16, 0x5a);
  uint64_t nonce = 0;
  for (auto _ : state)
    for (size_t i = 0; i < kSegments; ++i)
      crypto::transport_seal(buf.data(), {buf.data(), 1420}, nonce++, key.span());
  state.SetBytesProcessed(int64_t(state.iterations() * kPayload));
}
BENCHMARK(BM_RawSeal);

void BM_RxPath(benchmark::State& state) {
  (void)crypto::init();
  crypto::calibrate_transport_aead();
  crypto::Key key;
  crypto::random_bytes(key.span());
  const auto sp = super_packet();
  const auto hdr = *tun::VirtioNetHdr::parse({sp.data(), tun::kVnetHdrLen});
  Segments sealed, work;
  if (tun::gso_split({sp.data() + tun::kVnetHdrLen, sp.size() - tun::kVnetHdrLen}, hdr,
                     sealed.spans, sealed.lens) != int(kSegments)) {
    state.SkipWithError("split failed");
    return;
  }
  std::array<size_t, kSegments> wire{};
  for (size_t i = 0; i < kSegments; ++i) wire[i] = seal(sealed.base(i), sealed.lens[i], i, key);
  std::array<std::span<uint8_t>, kSegments> gro_bufs;
  std::array<size_t, kSegments> lens{}, out{};
  for (auto _ : state) {
    state.PauseTiming();  // fresh ciphertext every round (decryption is in place)
    for (size_t i = 0; i < kSegments; ++i) std::memcpy(work.base(i), sealed.base(i), wire[i]);
    state.ResumeTiming();
    for (size_t i = 0; i < kSegments; ++i) {
      uint8_t* plain = work.base(i) + dataplane::kTransportHeaderSize;
      const size_t n = wire[i] - dataplane::kTransportHeaderSize;
      if (!crypto::transport_open(plain, {plain, n}, i, key.span())) state.SkipWithError("open");
      lens[i] = sealed.lens[i];
      gro_bufs[i] = {work.base(i) + dataplane::kTransportHeaderSize - tun::kVnetHdrLen,
                     kCap - dataplane::kTransportHeaderSize + tun::kVnetHdrLen};
    }
    tun::GroTable gro;
    benchmark::DoNotOptimize(gro.coalesce(gro_bufs, lens, out));
  }
  state.SetBytesProcessed(int64_t(state.iterations() * kPayload));
}
BENCHMARK(BM_RxPath);

void BM_RawOpen(benchmark::State& state) {
  (void)crypto::init();
  crypto::calibrate_transport_aead();
  crypto::Key key;
  crypto::random_bytes(key.span());
  std::vector<uint8_t> sealed(1420 + 16, 0x5a), buf(1420 + 16);
  crypto::transport_seal(sealed.data(), {sealed.data(), 1420}, 7, key.span());
  for (auto _ : state)
    for (size_t i = 0; i < kSegments; ++i)
      benchmark::DoNotOptimize(crypto::transport_open(buf.data(), sealed, 7, key.span()));
  state.SetBytesProcessed(int64_t(state.iterations() * kPayload));
}
BENCHMARK(BM_RawOpen);

}  // namespace
