// Per-source token bucket for handshake initiations under load (as wireguard-go's
// ratelimiter and the kernel's ratelimiter.c): 20 packets/s per source IP, burst 5, keyed by
// the IPv4 address or the IPv6 /64. Memory is bounded: at most kMaxEntries sources; stale
// entries are collected every second. Sans-I/O: the caller passes the time.
#pragma once

#include <chrono>
#include <cstdint>
#include <unordered_map>

#include "dataplane/ip.h"

namespace meshwg::dataplane {

class RateLimiter {
 public:
  using Instant = std::chrono::steady_clock::time_point;
  static constexpr uint64_t kPacketsPerSecond = 20;
  static constexpr uint64_t kBurst = 5;
  static constexpr size_t kMaxEntries = 1 << 16;

  RateLimiter();
  // True if a packet from ip may be processed now (consumes one token). A new source is
  // refused while the table holds kMaxEntries sources.
  [[nodiscard]] bool allow(const IpAddress& ip, Instant now);
  size_t size() const { return table_.size(); }

 private:
  // IPv4: the address; IPv6: the /64 (a host usually owns a whole /64, so keying by full
  // address would let one host get 2^64 buckets).
  struct Key {
    uint64_t bits = 0;
    uint8_t family = 0;
    bool operator==(const Key&) const = default;
  };
  // Keyed with a random secret (SipHash via libsodium) so a remote cannot pick source
  // addresses that collide in one bucket chain.
  struct KeyHash {
    uint8_t secret[16];
    size_t operator()(const Key& k) const;
  };
  struct Entry {
    Instant last;
    int64_t tokens;  // in nanoseconds of "cost", as wireguard-go
  };
  void collect(Instant now);
  std::unordered_map<Key, Entry, KeyHash> table_;
  Instant last_gc_{};
};

}  // namespace meshwg::dataplane
