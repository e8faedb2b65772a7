// Per-source token bucket for handshake messages under load, as wireguard-go's
// ratelimiter/ratelimiter.go and the kernel's ratelimiter.c: each source earns one token per
// nanosecond up to kBurst packets' worth; a packet costs 1 s / kPacketsPerSecond.
#include "dataplane/ratelimiter.h"

#include <sodium.h>

#include <cstring>

namespace meshwg::dataplane {

namespace {

constexpr int64_t kPacketCost = 1'000'000'000 / RateLimiter::kPacketsPerSecond;
constexpr int64_t kMaxTokens = kPacketCost * RateLimiter::kBurst;
// An entry idle this long has refilled to kMaxTokens, so dropping it changes no decision.
constexpr auto kGcInterval = std::chrono::seconds(1);

}  // namespace

size_t RateLimiter::KeyHash::operator()(const Key& k) const {
  uint8_t in[9];
  std::memcpy(in, &k.bits, 8);
  in[8] = k.family;
  uint8_t out[crypto_shorthash_BYTES];
  crypto_shorthash(out, in, sizeof(in), secret);
  size_t h;
  static_assert(sizeof(h) <= sizeof(out));
  std::memcpy(&h, out, sizeof(h));
  return h;
}

RateLimiter::RateLimiter() {
  static_assert(sizeof(KeyHash::secret) == crypto_shorthash_KEYBYTES);
  KeyHash hash;
  randombytes_buf(hash.secret, sizeof(hash.secret));
  table_ = decltype(table_)(64, hash);
}

void RateLimiter::collect(Instant now) {
  if (now - last_gc_ < kGcInterval) return;  // at most once per second: the walk is O(table)
  last_gc_ = now;
  std::erase_if(table_, [now](const auto& kv) { return now - kv.second.last > kGcInterval; });
}

bool RateLimiter::allow(const IpAddress& ip, Instant now) {
  Key key;
  if (ip.family == 4) {
    uint32_t v;
    std::memcpy(&v, ip.bytes.data(), 4);
    key.bits = v;
  } else if (ip.family == 6) {
    std::memcpy(&key.bits, ip.bytes.data(), 8);  // the /64
  } else {
    return false;
  }
  key.family = ip.family;

  collect(now);
  auto it = table_.find(key);
  if (it == table_.end()) {
    // Refusing new sources when full keeps memory bounded under a flood of spoofed sources;
    // known sources keep their buckets.
    if (table_.size() >= kMaxEntries) return false;
    table_.emplace(key, Entry{now, kMaxTokens - kPacketCost});
    return true;
  }
  Entry& e = it->second;
  const int64_t elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(now - e.last).count();
  if (elapsed > 0) {  // a clock that steps back earns nothing rather than losing tokens
    e.tokens = elapsed >= kMaxTokens ? kMaxTokens : std::min(kMaxTokens, e.tokens + elapsed);
    e.last = now;
  }
  if (e.tokens >= kPacketCost) {
    e.tokens -= kPacketCost;
    return true;
  }
  return false;
}

}  // namespace meshwg::dataplane
