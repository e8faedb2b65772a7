// TAI64N timestamps for handshake initiations (whitepaper §5.4.2; cr.yp.to/libtai/tai64.html).
// The nanoseconds are whitened (rounded down to ~16.7 ms, as wireguard-go does) so a timestamp
// does not leak the sender's precise clock.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

namespace meshwg::crypto {

struct Tai64n {
  std::array<uint8_t, 12> b{};  // BE64(2^62 + 10 + unix seconds) || BE32(nanoseconds)

  // Strictly later, comparing the 12 bytes as a big-endian number (replay check on initiations).
  bool after(const Tai64n& o) const;
  bool operator==(const Tai64n&) const = default;
};

// Builds a whitened timestamp from a wall-clock time.
Tai64n tai64n_from(std::chrono::system_clock::time_point t);
inline Tai64n tai64n_now() { return tai64n_from(std::chrono::system_clock::now()); }

}  // namespace meshwg::crypto
