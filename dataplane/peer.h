// A WireGuard peer and its keypairs (whitepaper §5.4.6 and §6; kernel peer.h, noise.h):
// static identity, handshake state, the current/previous/next keypairs, endpoint, staged
// packets, timer deadlines and counters.
//
// Locking: Peer::mu guards every non-atomic field below it. It is taken per batch, never per
// packet: by a TUN reader once per run of packets (to reserve nonces), by the packet
// workers once per drained batch of up to 64 packets (endpoint, timers, counters), and by
// the handshake worker and the timer thread; crypto never runs under it. Lock order:
// Device::config_mu_ (shared or exclusive) → Peer::mu → Device::index_mu_.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "crypto/cookie.h"
#include "crypto/noise.h"
#include "crypto/replay.h"
#include "dataplane/ip.h"
#include "dataplane/queue.h"

namespace meshwg::dataplane {

using Instant = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

class Peer;

// Transport keys from one handshake. The send counter is the nonce; it only grows.
struct Keypair {
  crypto::Key send_key;
  crypto::Key recv_key;
  std::atomic<uint64_t> send_counter{0};
  // Used only by the peer's receive drain, which one thread runs at a time (OrderedQueue's
  // drain token orders successive drainers), so it needs no lock.
  crypto::ReplayFilter replay;
  uint32_t local_index = 0;
  uint32_t remote_index = 0;
  bool initiator = false;
  Instant created{};
  Peer* peer = nullptr;
  // Keeps the peer alive as long as a packet in flight holds this keypair. The cycle
  // (peer → keypair → peer) is broken when the peer's keypair slots are cleared, which
  // Device does whenever it removes a peer.
  std::shared_ptr<Peer> owner;
};

// A peer's in-order stages of the parallel pipeline (dataplane/pipeline.cc). Allocated on
// the peer's first packet, so idle peers cost nothing here.
//   tx: multi producer (TUN readers, staged flushes) / drained by the worker that finishes
//       its head: UDP send in nonce order
//   rx: multi producer (UDP receivers) / drained likewise: replay check, TUN write
struct PeerQueues {
  static constexpr size_t kCapacity = 512;  // packets in flight per peer and direction
  OrderedQueue<PacketBuf> tx{kCapacity};
  OrderedQueue<PacketBuf> rx{kCapacity};
};

enum class Timer : uint8_t {
  kRetransmitHandshake,
  kSendKeepalive,
  kNewHandshake,
  kZeroKeyMaterial,
  kPersistentKeepalive,
  kCount,
};

class Peer : public std::enable_shared_from_this<Peer> {
 public:
  Peer(const crypto::PublicKey& pk, uint64_t seq) : public_key(pk), created_seq(seq) {}
  ~Peer() { delete queues_.load(std::memory_order_relaxed); }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  // Any thread. The peer's ordered queues, created on first use (lock-free: the loser of a
  // creation race frees its copy).
  PeerQueues& queues() {
    PeerQueues* q = queues_.load(std::memory_order_acquire);
    if (q) return *q;
    auto* fresh = new PeerQueues;
    if (queues_.compare_exchange_strong(q, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;
    return *q;
  }

  const crypto::PublicKey public_key;
  const uint64_t created_seq;  // creation order: `wg show` lists peers in it, as the kernel does
  std::atomic<uint64_t> rx_bytes{0};
  std::atomic<uint64_t> tx_bytes{0};
  std::atomic<bool> removed{false};

  std::mutex mu;
  // --- guarded by mu ---
  crypto::Handshake handshake;
  crypto::CookieGenerator cookie;
  crypto::Key preshared_key;
  std::shared_ptr<Keypair> current, previous, next;
  Endpoint endpoint;
  std::deque<std::vector<uint8_t>> staged;  // at most kMaxStagedPackets, oldest dropped
  uint16_t persistent_keepalive = 0;        // seconds, 0 = off
  WallTime last_handshake{};                // wall time of the last completed handshake
  Instant last_sent_handshake{};            // rate-limits initiations to one per REKEY_TIMEOUT
  bool sent_handshake_ever = false;
  Instant last_initiation_consumed{};       // flood guard: at most 50 initiations/s consumed
  bool consumed_initiation_ever = false;
  uint32_t handshake_index = 0;             // index-table entry of the in-progress handshake
  int handshake_attempts = 0;
  bool need_another_keepalive = false;
  bool sent_lastminute_handshake = false;
  // Timer deadlines; nullopt = not pending. The device's timer heap holds at most one entry
  // per (peer, timer) at a time (queued[t]); a deadline moved later is found when it fires.
  std::array<std::optional<Instant>, size_t(Timer::kCount)> deadline{};
  std::array<std::optional<Instant>, size_t(Timer::kCount)> queued{};

 private:
  std::atomic<PeerQueues*> queues_{nullptr};
};

}  // namespace meshwg::dataplane
