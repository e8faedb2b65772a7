// Sliding-window replay filter for transport counters (RFC 6479 style, as the kernel's
// counter.c and wireguard-go's replay package): 8192-bit ring of 64-bit blocks, so a
// counter up to 8128 behind the highest one seen is still accepted once.
#pragma once

#include <array>
#include <cstdint>

namespace meshwg::crypto {

class ReplayFilter {
 public:
  static constexpr uint64_t kBlockBits = 64;
  static constexpr uint64_t kRingBlocks = 128;  // 8192 bits
  static constexpr uint64_t kWindowSize = (kRingBlocks - 1) * kBlockBits;  // 8128

  void reset();
  // Returns true and records the counter if it is new, inside the window and below limit;
  // false for a replay, a counter too old for the window, or counter >= limit.
  [[nodiscard]] bool validate(uint64_t counter, uint64_t limit);

 private:
  uint64_t last_ = 0;
  std::array<uint64_t, kRingBlocks> ring_{};
};

}  // namespace meshwg::crypto
