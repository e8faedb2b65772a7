// TAI64N timestamps (whitepaper §5.4.2, cr.yp.to/libtai/tai64.html): 8 bytes of TAI seconds
// with the 2^62 offset, then 4 bytes of nanoseconds, both big-endian. The nanoseconds are
// whitened to a multiple of 2^24 ns (~16.8 ms) like wireguard-go.
#include "crypto/tai64n.h"

#include <cstring>

namespace meshwg::crypto {

namespace {
// 2^62 marks "TAI seconds"; +10 is the TAI-UTC offset at the 1970 epoch that TAI64 labels use.
constexpr uint64_t kTai64Base = 0x400000000000000aULL;
// Drop the low 24 bits of the nanoseconds so the timestamp does not reveal the sender's
// precise clock (a fingerprint), while staying far finer than the 5 s rekey timeout.
constexpr uint32_t kWhitenerMask = 0x1000000 - 1;
}  // namespace

bool Tai64n::after(const Tai64n& o) const {
  // Big-endian fields make the byte order the numeric order, so memcmp compares numerically.
  return std::memcmp(b.data(), o.b.data(), b.size()) > 0;
}

Tai64n tai64n_from(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto since_epoch = t.time_since_epoch();
  // floor, not truncation: a time before 1970 still gets nanoseconds in [0, 1e9).
  const auto secs = floor<seconds>(since_epoch);
  const auto nanos = static_cast<uint32_t>(duration_cast<nanoseconds>(since_epoch - secs).count());
  const uint64_t s = kTai64Base + static_cast<uint64_t>(secs.count());
  const uint32_t n = nanos & ~kWhitenerMask;
  Tai64n out;
  for (int i = 0; i < 8; ++i) out.b[i] = static_cast<uint8_t>(s >> (56 - 8 * i));
  for (int i = 0; i < 4; ++i) out.b[8 + i] = static_cast<uint8_t>(n >> (24 - 8 * i));
  return out;
}

}  // namespace meshwg::crypto
