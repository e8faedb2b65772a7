// Replay window for transport counters (RFC 6479; same behaviour as the kernel's counter.c
// and wireguard-go's replay.Filter): a ring of 128 64-bit blocks in which the block holding
// the highest counter seen is always "ahead", so 127 full blocks (8128 counters) trail it.
#include "crypto/replay.h"

namespace meshwg::crypto {

namespace {
constexpr uint64_t kBlockShift = 6;  // log2(kBlockBits)
constexpr uint64_t kBitMask = ReplayFilter::kBlockBits - 1;
constexpr uint64_t kRingMask = ReplayFilter::kRingBlocks - 1;
static_assert((ReplayFilter::kRingBlocks & kRingMask) == 0, "ring size must be a power of two");
static_assert((uint64_t{1} << kBlockShift) == ReplayFilter::kBlockBits);
}  // namespace

void ReplayFilter::reset() {
  last_ = 0;
  ring_.fill(0);
}

bool ReplayFilter::validate(uint64_t counter, uint64_t limit) {
  // The sender must never reach limit; a counter at or past it means the key is worn out.
  if (counter >= limit) return false;

  const uint64_t block = counter >> kBlockShift;
  if (counter > last_) {
    // Moving the window forward: the blocks between the old head and the new one are about
    // to be reused for newer counters, so their stale bits must be cleared. Clearing more
    // than the whole ring is pointless, hence the cap (it also bounds the work per packet).
    const uint64_t head = last_ >> kBlockShift;
    uint64_t advance = block - head;
    if (advance > kRingBlocks) advance = kRingBlocks;
    for (uint64_t i = 1; i <= advance; ++i) ring_[(head + i) & kRingMask] = 0;
    last_ = counter;
  } else if (last_ - counter > kWindowSize) {
    return false;  // too old: its bit may already belong to a newer counter
  }

  uint64_t& word = ring_[block & kRingMask];
  const uint64_t bit = uint64_t{1} << (counter & kBitMask);
  if (word & bit) return false;  // seen before
  word |= bit;
  return true;
}

}  // namespace meshwg::crypto
