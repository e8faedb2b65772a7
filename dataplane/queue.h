// Queues and packet buffers of the parallel data plane (kernel queueing.[ch], wireguard-go
// device/channels.go and pools.go):
//
//   MpmcQueue<T>       bounded lock-free ring, many producers / many consumers (D. Vyukov's
//                      per-cell sequence numbers)
//   SpscQueue<T>       bounded lock-free ring, one producer / one consumer (Lamport, with
//                      cached indices)
//   EventCount         futex parking: idle consumers sleep instead of spinning
//   BlockingQueue<T>   a ring + EventCount: consumers spin briefly, then sleep; producers
//                      never block (a full queue is reported, the caller drops and counts)
//   OrderedQueue<T>    per-peer in-order output of parallel crypto (the kernel's
//                      PACKET_STATE_UNCRYPTED/CRYPTED/DEAD protocol)
//   PacketPool         bounded pool of fixed-size packet buffers (backpressure: get() fails)
//
// The pipeline they serve (one device-wide crypt queue per direction, one ordered queue
// per peer and direction; the names are illustrative, the device owns the instances):
//
//   TUN readers ─► route, nonce ─┬──────────► peer.tx_ordered ──────────┐
//   (N threads)                  │                                      ▼
//                                └─► encrypt_queue ─► encrypt workers ─► drain ─► UDP send
//                                    MPMC, bounded    W threads, finish         (in order
//                                                     in any order               per peer)
//
//   UDP receivers ─► classify ───┬──────────► peer.rx_ordered ──────────┐
//   (N threads)                  │                                      ▼
//                                └─► decrypt_queue ─► decrypt workers ─► drain ─► replay, src
//                                                                                 check, TUN
//                                                                                 write
//
//   "drain": after finishing a packet, a worker sends the finished packets at the head of
//   that peer's ordered queue, oldest first, and stops at the first one still in crypto
//   (see OrderedQueue below). No thread per peer.
//
//   encrypt_queue / decrypt_queue: BlockingQueue<PacketBuf*>, multi producer / multi consumer
//   peer.{tx,rx}_ordered:          OrderedQueue<PacketBuf>, multi producer / drained by
//                                  whichever thread finishes its head (one at a time)
//   PacketPool:                    any thread gets, any thread puts
//
// The rings and the pool are lock-free; nothing on the packet path waits for another
// thread (a consumer with nothing to do sleeps); nothing allocates after construction.
// No exceptions: a full queue or an empty pool is a return value; a broken invariant
// (double put, foreign buffer) is fatal.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

#include "dataplane/ip.h"

namespace meshwg::dataplane {

class Peer;
struct Keypair;

namespace queue_detail {

// Separates fields written by different threads. 128, not 64: Intel's adjacent-line
// prefetcher pulls cache lines in pairs, so 64-byte padding still shares a pair.
inline constexpr size_t kCacheLine = 128;

// Largest ring we hand out; keeps bit_ceil and index arithmetic far from overflow.
inline constexpr size_t kMaxCapacity = size_t(1) << 30;

inline size_t round_capacity(size_t n, size_t min) {
  return std::bit_ceil(std::clamp<size_t>(n, min, kMaxCapacity));
}

// Tells the core we are spinning (saves power, yields the pipeline to an SMT sibling).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint32_t>::is_always_lock_free,
              "futex needs a plain 32-bit word");

// Sleeps while *word == expected, until woken, or until the CLOCK_MONOTONIC deadline if
// one is given (FUTEX_WAIT_BITSET takes an absolute time, so a retry needs no recomputing).
// Spurious returns are allowed; callers re-check their condition.
inline void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const timespec* deadline) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_BITSET_PRIVATE, expected,
          deadline, nullptr, FUTEX_BITSET_MATCH_ANY);
}

inline void futex_wake(std::atomic<uint32_t>* word, int count) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr,
          nullptr, 0);
}

[[noreturn]] inline void fatal(const char* what) {
  std::fprintf(stderr, "meshwg: fatal: %s\n", what);
  std::abort();
}

// Raw, suitably aligned storage for one T; the rings construct and destroy in place so T
// need not be default-constructible and a failed push leaves the caller's value untouched.
template <class T>
struct Slot {
  alignas(T) unsigned char bytes[sizeof(T)];
  T* ptr() { return std::launder(reinterpret_cast<T*>(bytes)); }
};

}  // namespace queue_detail

// ---------------------------------------------------------------------------------------
// MpmcQueue: Vyukov's bounded MPMC ring. Each cell carries a sequence number that says
// whose turn it is:  seq == pos      → free for the producer that claims position pos
//                    seq == pos + 1  → holds the element of pos, for the consumer of pos
//                    after the pop     seq = pos + capacity (free for the next lap)
// Producers and consumers claim positions with a CAS on enqueue_pos_ / dequeue_pos_, then
// own the cell alone until they publish the new seq (release), so no two threads ever
// touch one cell's storage at the same time.
//
// Not strictly linearizable: while a thread is between claiming and publishing a cell,
// try_push may report full (or try_pop empty) at that cell although other cells are
// free (or filled). Callers treat false as "not now", never as an exact size.
// ---------------------------------------------------------------------------------------
template <class T>
class MpmcQueue {
  static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                "no exceptions on the data plane");

 public:
  // capacity is rounded up to a power of two, at least 2 (with one cell, "holds the
  // element of pos" and "free for pos + 1" would be the same seq), at most 2^30.
  explicit MpmcQueue(size_t capacity)
      : mask_(queue_detail::round_capacity(capacity, 2) - 1), cells_(new Cell[mask_ + 1]) {
    for (size_t i = 0; i <= mask_; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }
  MpmcQueue(const MpmcQueue&) = delete;
  MpmcQueue& operator=(const MpmcQueue&) = delete;

  // Must not race with any other call; destroys what is still queued.
  ~MpmcQueue() {
    const size_t tail = enqueue_pos_.load(std::memory_order_relaxed);
    for (size_t pos = dequeue_pos_.load(std::memory_order_relaxed); pos != tail; ++pos) {
      Cell& c = cells_[pos & mask_];
      if (c.seq.load(std::memory_order_relaxed) == pos + 1) c.slot.ptr()->~T();
    }
  }

  // Multi producer. Moves v in and returns true, or returns false (full) and leaves v as
  // it was.
  [[nodiscard]] bool try_push(T&& v) {
    Cell* c;
    size_t pos = enqueue_pos_.load(std::memory_order_relaxed);
    for (;;) {
      c = &cells_[pos & mask_];
      // acquire: pairs with the consumer's release of this cell, so its read of the old
      // element happens before we overwrite the storage.
      const size_t seq = c->seq.load(std::memory_order_acquire);
      const intptr_t dif = intptr_t(seq) - intptr_t(pos);
      if (dif == 0) {
        // relaxed: the CAS only hands out positions; the data is published through seq.
        if (enqueue_pos_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (dif < 0) {
        return false;  // the cell still holds the element from one lap ago: full
      } else {
        pos = enqueue_pos_.load(std::memory_order_relaxed);  // another producer took pos
      }
    }
    ::new (c->slot.bytes) T(std::move(v));
    c->seq.store(pos + 1, std::memory_order_release);  // publish the element
    return true;
  }
  // Multi producer. Copying overload, for pointers and other cheap values.
  [[nodiscard]] bool try_push(const T& v)
    requires std::is_nothrow_copy_constructible_v<T>
  {
    T copy(v);
    return try_push(std::move(copy));
  }

  // Multi consumer. Moves the oldest element into out and returns true, or returns false
  // (empty) and leaves out as it was.
  [[nodiscard]] bool try_pop(T& out) {
    Cell* c;
    size_t pos = dequeue_pos_.load(std::memory_order_relaxed);
    for (;;) {
      c = &cells_[pos & mask_];
      // acquire: pairs with the producer's release, making the element's bytes visible.
      const size_t seq = c->seq.load(std::memory_order_acquire);
      const intptr_t dif = intptr_t(seq) - intptr_t(pos + 1);
      if (dif == 0) {
        if (dequeue_pos_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (dif < 0) {
        return false;  // not yet published for this lap: empty
      } else {
        pos = dequeue_pos_.load(std::memory_order_relaxed);  // another consumer took pos
      }
    }
    T* p = c->slot.ptr();
    out = std::move(*p);
    p->~T();
    c->seq.store(pos + mask_ + 1, std::memory_order_release);  // free for the next lap
    return true;
  }

  size_t capacity() const { return mask_ + 1; }
  // Any thread. A snapshot that may be stale by the time it is read; for statistics.
  size_t size_approx() const {
    const size_t head = dequeue_pos_.load(std::memory_order_relaxed);
    const size_t tail = enqueue_pos_.load(std::memory_order_relaxed);
    return tail > head ? std::min(tail - head, capacity()) : 0;
  }

 private:
  struct Cell {
    std::atomic<size_t> seq;
    queue_detail::Slot<T> slot;
  };

  // Read-only after construction; shares no line with the written positions.
  alignas(queue_detail::kCacheLine) const size_t mask_;
  const std::unique_ptr<Cell[]> cells_;
  alignas(queue_detail::kCacheLine) std::atomic<size_t> enqueue_pos_{0};  // producers
  // The class is kCacheLine-aligned, so its size is a multiple of it: nothing that
  // follows in memory shares this line.
  alignas(queue_detail::kCacheLine) std::atomic<size_t> dequeue_pos_{0};  // consumers
};

// ---------------------------------------------------------------------------------------
// SpscQueue: bounded ring for exactly one producer thread and one consumer thread at a
// time (they may change only with a happens-before edge, e.g. a thread join). Positions
// grow without wrapping (2^64); each side caches the other's position so the shared line
// is read only when the cached value says full / empty.
// ---------------------------------------------------------------------------------------
template <class T>
class SpscQueue {
  static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                "no exceptions on the data plane");

 public:
  // capacity is rounded up to a power of two (at least 1, at most 2^30).
  explicit SpscQueue(size_t capacity)
      : mask_(queue_detail::round_capacity(capacity, 1) - 1),
        slots_(new queue_detail::Slot<T>[mask_ + 1]) {}
  SpscQueue(const SpscQueue&) = delete;
  SpscQueue& operator=(const SpscQueue&) = delete;

  // Must not race with any other call; destroys what is still queued.
  ~SpscQueue() {
    const size_t tail = tail_.load(std::memory_order_relaxed);
    for (size_t pos = head_.load(std::memory_order_relaxed); pos != tail; ++pos)
      slots_[pos & mask_].ptr()->~T();
  }

  // Single producer. Moves v in and returns true, or returns false (full) and leaves v.
  [[nodiscard]] bool try_push(T&& v) {
    const size_t tail = tail_.load(std::memory_order_relaxed);  // only we write it
    if (tail - cached_head_ > mask_) {
      // acquire: the consumer's moves out of the slots before head happen before we reuse
      // them.
      cached_head_ = head_.load(std::memory_order_acquire);
      if (tail - cached_head_ > mask_) return false;
    }
    ::new (slots_[tail & mask_].bytes) T(std::move(v));
    tail_.store(tail + 1, std::memory_order_release);  // publish the element
    return true;
  }
  // Single producer. Copying overload, for pointers and other cheap values.
  [[nodiscard]] bool try_push(const T& v)
    requires std::is_nothrow_copy_constructible_v<T>
  {
    T copy(v);
    return try_push(std::move(copy));
  }

  // Single consumer. Moves the oldest element into out and returns true, or returns false
  // (empty).
  [[nodiscard]] bool try_pop(T& out) {
    const size_t head = head_.load(std::memory_order_relaxed);  // only we write it
    if (head == cached_tail_) {
      cached_tail_ = tail_.load(std::memory_order_acquire);  // pairs with the push's release
      if (head == cached_tail_) return false;
    }
    T* p = slots_[head & mask_].ptr();
    out = std::move(*p);
    p->~T();
    head_.store(head + 1, std::memory_order_release);  // the slot is free again
    return true;
  }

  size_t capacity() const { return mask_ + 1; }
  // Any thread; a possibly stale snapshot, for statistics.
  size_t size_approx() const {
    const size_t head = head_.load(std::memory_order_relaxed);
    const size_t tail = tail_.load(std::memory_order_relaxed);
    return tail > head ? std::min(tail - head, capacity()) : 0;
  }

 private:
  alignas(queue_detail::kCacheLine) const size_t mask_;
  const std::unique_ptr<queue_detail::Slot<T>[]> slots_;
  // Producer's line: its position and its cached copy of the consumer's.
  alignas(queue_detail::kCacheLine) std::atomic<size_t> tail_{0};
  size_t cached_head_ = 0;
  // Consumer's line.
  alignas(queue_detail::kCacheLine) std::atomic<size_t> head_{0};
  size_t cached_tail_ = 0;
};

// ---------------------------------------------------------------------------------------
// EventCount: lets a consumer sleep until "something may have changed" without a lock on
// the producers' path (the folly / Vyukov event count over a futex, plus a wake-in-flight
// flag as in Go's and tokio's schedulers).
//
//   consumer                                  producer
//     key = prepare_wait()                      make the condition true (push)
//     if (condition) cancel_wait(), go on       notify_one() / notify_all()
//     else wait(key), then re-check             (never blocks)
//
// Why no wake-up is lost: prepare_wait() increments waiters_ and issues a seq_cst fence
// before the consumer re-checks; notify issues a seq_cst fence after the push before it
// reads waiters_. Of the two fences one comes first in the single total order, so either
// the consumer's re-check sees the push, or the producer sees the waiter and bumps
// epoch_ — which makes the futex wait return at once (value changed) or wakes it.
//
// Why one wake per burst, not one per push: after waking a consumer, producers would
// otherwise make a futex syscall for every push until that consumer has run (tens of
// microseconds). signalled_ says "a woken consumer has not re-checked yet"; while it is
// set, notify_one() skips the wake. Every consumer leaving wait() clears it, fences, and
// re-checks, and a consumer about to sleep while it is set clears it and re-checks
// instead, so a skipped push is always seen: by the fence argument above, the clearer's
// re-check sees any push whose notify read the flag before the clear. A woken consumer
// that finds more work passes the wake on (BlockingQueue), so a burst still wakes the
// consumers it needs, one after another.
//
// Producers pay one fence and one or two loads of a read-mostly line.
// ---------------------------------------------------------------------------------------
class EventCount {
 public:
  using Key = uint32_t;

  // Consumer side (any number of consumers). Must be followed by cancel_wait() or wait().
  [[nodiscard]] Key prepare_wait() {
    waiters_.fetch_add(1, std::memory_order_relaxed);
    full_fence();
    // acquire: a notify's bump (release) seen here carries the push it announced.
    return epoch_.load(std::memory_order_acquire);
  }
  void cancel_wait() { waiters_.fetch_sub(1, std::memory_order_relaxed); }
  // Sleeps until a notify after prepare_wait() (returns at once if one already came), a
  // spurious wake-up, or the deadline. The caller re-checks its condition either way.
  void wait(Key key) { park(key, nullptr); }
  void wait_until(Key key, std::chrono::steady_clock::time_point deadline) {
    // steady_clock is CLOCK_MONOTONIC on Linux, which FUTEX_WAIT_BITSET measures.
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        deadline.time_since_epoch())
                        .count();
    const timespec ts{time_t(ns / 1000000000), long(ns % 1000000000)};
    park(key, &ts);
  }

  // Producer side (any thread). Call after making the condition true. Wakes one sleeping
  // consumer unless a woken one has yet to re-check.
  void notify_one() {
    full_fence();
    if (waiters_.load(std::memory_order_relaxed) == 0) return;  // nobody waits: fast path
    // relaxed: ordered by the fences (see above); no data is published through the flag.
    if (signalled_.load(std::memory_order_relaxed)) return;
    if (signalled_.exchange(true, std::memory_order_relaxed)) return;
    epoch_.fetch_add(1, std::memory_order_release);
    queue_detail::futex_wake(&epoch_, 1);
  }
  // Any thread. Wakes every sleeping consumer (for shutdown).
  void notify_all() {
    full_fence();
    epoch_.fetch_add(1, std::memory_order_release);
    queue_detail::futex_wake(&epoch_, INT_MAX);
  }

 private:
  void park(Key key, const timespec* deadline) {
    // A wake in flight may have been meant for a consumer that re-checked and left without
    // sleeping; left set, it would suppress every later wake. Take it over: clear it and
    // re-check instead of sleeping.
    if (!signalled_.load(std::memory_order_relaxed))
      queue_detail::futex_wait(&epoch_, key, deadline);
    signalled_.store(false, std::memory_order_relaxed);
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    full_fence();  // the clear comes before the caller's re-check (see above)
  }
  static void full_fence() {
    // The fence orders atomics only (the Dekker pattern above); no plain data depends on
    // it, so TSan not modelling fences cannot hide a race here.
#if defined(__SANITIZE_THREAD__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
    std::atomic_thread_fence(std::memory_order_seq_cst);
#if defined(__SANITIZE_THREAD__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  }

  alignas(queue_detail::kCacheLine) std::atomic<uint32_t> epoch_{0};  // the futex word
  std::atomic<uint32_t> waiters_{0};      // prepared or sleeping consumers
  std::atomic<bool> signalled_{false};    // a woken consumer has not re-checked yet
};

// ---------------------------------------------------------------------------------------
// BlockingQueue: a ring (MpmcQueue by default, or SpscQueue) whose consumers sleep when it
// is empty. Consumers poll a short while first (kSpinPolls, a few microseconds) because a
// futex round trip costs more than a packet's hand-off under load; then they park.
// Producers never block: try_push reports full (or closed) and the caller drops and counts.
//
// Shutdown: stop the producers, close(), join the consumers (they drain what is left,
// then pop returns false), then the owner may try_pop anything pushed during the race
// between a producer's last push and close().
// ---------------------------------------------------------------------------------------
template <class T, class Ring = MpmcQueue<T>>
class BlockingQueue {
 public:
  static constexpr int kSpinPolls = 64;

  explicit BlockingQueue(size_t capacity) : ring_(capacity) {}

  // Producer side: as many producers as Ring allows. False if full or closed; v is then
  // left as it was. Wakes one sleeping consumer.
  [[nodiscard]] bool try_push(T&& v) {
    // relaxed: best effort; close() racing with a push is resolved by the shutdown order.
    if (closed_.load(std::memory_order_relaxed)) return false;
    if (!ring_.try_push(std::move(v))) return false;
    events_.notify_one();
    return true;
  }
  [[nodiscard]] bool try_push(const T& v)
    requires std::is_nothrow_copy_constructible_v<T>
  {
    T copy(v);
    return try_push(std::move(copy));
  }

  // Producer side, as try_push but wakes nobody: the producer promises to either pop the
  // element itself later or call wake_one(). Lets a producer that may well get to the work
  // first avoid a futex wake-up per element.
  [[nodiscard]] bool try_push_quiet(T&& v) {
    if (closed_.load(std::memory_order_relaxed)) return false;
    return ring_.try_push(std::move(v));
  }
  [[nodiscard]] bool try_push_quiet(const T& v)
    requires std::is_nothrow_copy_constructible_v<T>
  {
    T copy(v);
    return try_push_quiet(std::move(copy));
  }
  // Any thread. Wakes one sleeping consumer (after try_push_quiet).
  void wake_one() { events_.notify_one(); }

  // Consumer side: as many consumers as Ring allows. Never sleeps.
  [[nodiscard]] bool try_pop(T& out) { return ring_.try_pop(out); }

  // Consumer side. Waits for an element; false only once the queue is closed and empty.
  [[nodiscard]] bool pop(T& out) { return pop_impl(out, nullptr); }

  // Consumer side. As pop(), but also false when the deadline passes.
  [[nodiscard]] bool pop_until(T& out, std::chrono::steady_clock::time_point deadline) {
    return pop_impl(out, &deadline);
  }

  // Consumer side. Waits for at least one element, then takes up to out.size() without
  // waiting more (a worker's batch). Returns how many; 0 only once closed and empty.
  [[nodiscard]] size_t pop_batch(std::span<T> out) {
    if (out.empty() || !pop(out[0])) return 0;
    size_t n = 1;
    while (n < out.size() && ring_.try_pop(out[n])) ++n;
    return n;
  }

  // Any thread. Refuses further pushes and wakes every sleeping consumer; they drain what
  // is queued and then see the queue closed.
  void close() {
    closed_.store(true, std::memory_order_seq_cst);
    events_.notify_all();
  }
  bool closed() const { return closed_.load(std::memory_order_acquire); }

  size_t capacity() const { return ring_.capacity(); }
  size_t size_approx() const { return ring_.size_approx(); }

 private:
  bool pop_impl(T& out, const std::chrono::steady_clock::time_point* deadline) {
    bool woken = false;
    // A consumer that slept and found work wakes the next one if more is queued: producers
    // wake one consumer per burst (see EventCount), the consumers wake the rest.
    auto got = [&] {
      if (woken && ring_.size_approx() > 0) events_.notify_one();
      return true;
    };
    for (;;) {
      for (int i = 0; i < kSpinPolls; ++i) {
        if (ring_.try_pop(out)) return got();
        queue_detail::cpu_relax();
      }
      const EventCount::Key key = events_.prepare_wait();
      if (ring_.try_pop(out)) {
        events_.cancel_wait();
        return got();
      }
      // Checked after prepare_wait: close() stores closed_ before its notify, so either we
      // see it here or the notify ends the wait below.
      if (closed_.load(std::memory_order_acquire)) {
        events_.cancel_wait();
        return false;
      }
      if (deadline) {
        if (std::chrono::steady_clock::now() >= *deadline) {
          events_.cancel_wait();
          return false;
        }
        events_.wait_until(key, *deadline);
      } else {
        events_.wait(key);
      }
      woken = true;
    }
  }

  Ring ring_;
  EventCount events_;
  alignas(queue_detail::kCacheLine) std::atomic<bool> closed_{false};  // read-mostly
};

// ---------------------------------------------------------------------------------------
// In-order output of parallel crypto (kernel queueing.h: wg_queue_enqueue_per_device_and_
// peer / wg_queue_enqueue_per_peer_tx, and the tx/rx workers that stop at an UNCRYPTED
// head).
//
//   producer (route+nonce / classify; multi producer)
//     1. e->crypt_state.reset()                  kPending
//     2. peer.ordered.try_push(e)                full? drop e, count, done
//     3. crypt_queue.try_push(e)                 full? e->crypt_state.finish(kDropped),
//                                                       peer.ordered.drain(fn)
//   crypto worker (parallel, any number)
//     4. crypt_queue.pop(e); seal/open in place
//     5. e->crypt_state.finish(kDone or kDropped)   release: publishes the bytes
//     6. peer.ordered.drain(fn)
//
//   peer.ordered (oldest first):
//
//        head                                      tail
//        ▼                                         ▼
//        [done][done][dropped][pending][done][done][ free ]
//        └──── fn(batch) ────┘    ▲
//                                 └ stops here: what is behind it waits
//
//   drain(fn): only one thread drains a queue at a time. A caller that finds a drain in
//   progress just registers its request and returns at once (it never waits); the
//   running drainer re-scans before it lets go, so the element that caller finished is
//   not stranded. fn receives the consecutive finished elements at the head, oldest
//   first, in batches of up to kMaxDrainBatch, and runs under the drain token, so two
//   batches of one peer are never sent concurrently or out of order. fn owns the
//   elements it receives (send kDone ones, count and free kDropped ones).
//
// Step 2 before step 3: an element is in the ordered queue before any worker can finish
// it, so the finishing worker's drain always finds it. Elements are not copied: the queue
// holds T*, and T carries `CryptFlag crypt_state`. The peer (and its queue) must outlive
// every element in flight: the pipeline keeps the peer alive while it has packets queued.
// ---------------------------------------------------------------------------------------
enum class CryptState : uint8_t {
  kPending,  // queued for crypto; the in-order stage must wait for it
  kDone,     // sealed / opened in place; ready to leave in order
  kDropped,  // failed (bad tag, no key, queue full); leaves in order, but is not sent
};

class CryptFlag {
 public:
  // Owner only, before the element is published through a queue (whose release orders it).
  void reset() { v_.store(uint8_t(CryptState::kPending), std::memory_order_relaxed); }
  // Crypto worker: the last write to the element before it is handed on. release: the
  // drainer that sees the new state also sees the bytes written by the crypto.
  void finish(CryptState s) { v_.store(uint8_t(s), std::memory_order_release); }
  CryptState load() const { return CryptState(v_.load(std::memory_order_acquire)); }

 private:
  std::atomic<uint8_t> v_{uint8_t(CryptState::kPending)};
};

template <class T>
concept OrderedElement = requires(T& t) {
  { t.crypt_state } -> std::same_as<CryptFlag&>;
};

template <OrderedElement T>
class OrderedQueue {
 public:
  static constexpr size_t kMaxDrainBatch = 64;

  // capacity is rounded up to a power of two, at least 2 (as MpmcQueue), at most 2^30.
  explicit OrderedQueue(size_t capacity)
      : mask_(queue_detail::round_capacity(capacity, 2) - 1), cells_(new Cell[mask_ + 1]) {
    for (size_t i = 0; i <= mask_; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }
  OrderedQueue(const OrderedQueue&) = delete;
  OrderedQueue& operator=(const OrderedQueue&) = delete;

  // Multi producer. Appends e (whose crypt_state the caller has reset) and returns true,
  // or returns false when full; the caller still owns e then. Elements of one producer
  // leave in the order that producer pushed them; concurrent producers interleave in the
  // order their pushes claimed positions.
  [[nodiscard]] bool try_push(T* e) {
    // The producer half of MpmcQueue::try_push, with the same memory orders.
    Cell* c;
    size_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      c = &cells_[pos & mask_];
      const size_t seq = c->seq.load(std::memory_order_acquire);
      const intptr_t dif = intptr_t(seq) - intptr_t(pos);
      if (dif == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (dif < 0) {
        return false;
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
    c->elem = e;
    c->seq.store(pos + 1, std::memory_order_release);
    return true;
  }

  // Any thread, any number concurrently (see the protocol above). Calls fn(std::span<T*>)
  // with the finished elements at the head, in order, unless another thread is draining,
  // in which case that thread will do it and this call returns at once.
  template <class Fn>
  void drain(Fn&& fn) {
    // acq_rel: acquire makes the previous drainer's work (head_, the cells it freed)
    // visible to us if we become the drainer; release hands our finished element to the
    // current drainer, which re-reads requests_ before letting go.
    uint32_t seen = requests_.fetch_add(1, std::memory_order_acq_rel);
    if (seen != 0) return;
    seen = 1;
    for (;;) {
      T* batch[kMaxDrainBatch];
      size_t n;
      do {
        n = 0;
        while (n < kMaxDrainBatch && pop_finished(batch[n])) ++n;
        if (n) fn(std::span<T*>(batch, n));
      } while (n == kMaxDrainBatch);
      // Let go only if no request arrived since we last looked; otherwise a finish we
      // have not scanned for may be waiting at the head: scan again.
      if (requests_.compare_exchange_strong(seen, 0, std::memory_order_acq_rel,
                                            std::memory_order_acquire))
        return;
    }
  }

  size_t capacity() const { return mask_ + 1; }
  // Any thread; a possibly stale snapshot, for statistics.
  size_t size_approx() const {
    const size_t head = head_.load(std::memory_order_relaxed);
    const size_t tail = tail_.load(std::memory_order_relaxed);
    return tail > head ? std::min(tail - head, capacity()) : 0;
  }

 private:
  struct Cell {
    std::atomic<size_t> seq;
    T* elem;
  };

  // Drainer only (the token holder). Takes the head if it is published and finished.
  bool pop_finished(T*& out) {
    const size_t pos = head_.load(std::memory_order_relaxed);
    Cell& c = cells_[pos & mask_];
    if (c.seq.load(std::memory_order_acquire) != pos + 1) return false;  // not published
    T* e = c.elem;
    if (e->crypt_state.load() == CryptState::kPending) return false;  // in crypto: wait
    out = e;
    c.elem = nullptr;
    c.seq.store(pos + mask_ + 1, std::memory_order_release);  // free for producers
    // relaxed: head_ is the token holder's; the next holder gets it through requests_.
    head_.store(pos + 1, std::memory_order_relaxed);
    return true;
  }

  alignas(queue_detail::kCacheLine) const size_t mask_;
  const std::unique_ptr<Cell[]> cells_;
  alignas(queue_detail::kCacheLine) std::atomic<size_t> tail_{0};  // producers
  // The drain token: 0 = nobody draining; otherwise a drainer runs and this counts the
  // requests it has not yet acknowledged.
  alignas(queue_detail::kCacheLine) std::atomic<uint32_t> requests_{0};
  std::atomic<size_t> head_{0};  // atomic only for size_approx(); written by the drainer
};

// ---------------------------------------------------------------------------------------
// Packet buffers.
//
//   data                                                               data + capacity
//   │◄── headroom ──►│◄──────── packet ────────►│◄──────── tailroom ────────►│
//   0              begin                       end                       capacity
//
// Invariant: 0 ≤ begin ≤ end ≤ capacity. A fresh buffer has begin = end = the pool's
// headroom, so headers (WireGuard's 16-byte transport header, a virtio-net header) are
// prepended in place by moving begin down, and the Poly1305 tag and padding are appended
// by moving end up; the payload is never copied.
//
// Ownership is explicit: exactly one owner (a thread, or a queue) holds a buffer from
// get() to put(). put() clears the pipeline fields and restores the offsets so a stale
// pointer sees an empty packet with no peer rather than the next user's data and keys.
// ---------------------------------------------------------------------------------------
class PacketPool;

struct PacketBuf {
  uint8_t* data = nullptr;  // fixed storage, capacity bytes; set by the pool
  uint32_t capacity = 0;
  uint32_t begin = 0;  // first byte of the packet
  uint32_t end = 0;    // one past its last byte

  // Pipeline fields (cleared by put()). keypair owns a reference: it keeps the keys, and
  // through Keypair::owner the peer and its ordered queues, alive while the packet is in
  // flight, however the peer's sessions rotate or the peer is removed meanwhile.
  CryptFlag crypt_state;
  bool outbound = false;          // true: seal for sending; false: open a received datagram
  Peer* peer = nullptr;           // the keypair's owner (valid while keypair is held)
  std::shared_ptr<Keypair> keypair;
  uint64_t nonce = 0;             // the transport counter
  uint32_t wire_len = 0;          // received: the datagram's length (for rx_bytes)
  Endpoint endpoint;              // received: its source and the local address it came to
  PacketBuf* chain = nullptr;     // next packet of the same run in the crypt queue (one push
                                  // and one pop per run, not per packet)

  uint8_t* head() { return data + begin; }
  const uint8_t* head() const { return data + begin; }
  size_t size() const { return end - begin; }
  std::span<uint8_t> bytes() { return {data + begin, data + end}; }
  size_t headroom() const { return begin; }
  size_t tailroom() const { return capacity - end; }
  // Writable space after the packet (e.g. for read()); follow with push_back(n).
  std::span<uint8_t> tail_space() { return {data + end, data + capacity}; }

  // Grows the packet at the front by n bytes; returns the new head, or null (nothing
  // changed) if the headroom is smaller than n.
  [[nodiscard]] uint8_t* push_front(size_t n) {
    if (n > begin) return nullptr;
    begin -= uint32_t(n);
    return head();
  }
  // Removes n bytes from the front; false (nothing changed) if the packet is shorter.
  [[nodiscard]] bool pull_front(size_t n) {
    if (n > size()) return false;
    begin += uint32_t(n);
    return true;
  }
  // Grows the packet at the back by n bytes; returns where they start, or null (nothing
  // changed) if the tailroom is smaller than n.
  [[nodiscard]] uint8_t* push_back(size_t n) {
    if (n > tailroom()) return nullptr;
    uint8_t* p = data + end;
    end += uint32_t(n);
    return p;
  }
  // Shortens the packet to len bytes; false (nothing changed) if it is shorter than len.
  [[nodiscard]] bool trim(size_t len) {
    if (len > size()) return false;
    end = begin + uint32_t(len);
    return true;
  }

 private:
  friend class PacketPool;
  friend struct PacketReturn;
  PacketPool* pool_ = nullptr;
  uint32_t default_headroom_ = 0;
  std::atomic<bool> in_pool_{true};  // catches double put (atomic: two racing puts)
};

struct PacketPoolConfig {
  size_t buffers = 1024;   // at most this many packets in flight in the whole device
  size_t headroom = 64;    // ≥ 16 (transport header) + 10 (virtio-net header), line aligned
  size_t payload = 65536;  // the largest packet (a TSO/GRO super-packet)
  size_t tailroom = 64;    // ≥ 15 (padding to 16) + 16 (Poly1305 tag)
};

// Any thread gets, any thread puts; lock-free. All memory is allocated at construction;
// pages are touched on first use.
//
// The free list is a Treiber stack of buffer indices, not an MpmcQueue: a ring can report
// "full" while a preempted thread sits between claiming and releasing a cell, and put()
// must never fail. The stack always has room (it holds at most every buffer) and hands
// out the most recently used buffer first, whose lines are still warm. ABA is prevented
// by a 32-bit tag in the top word that every successful get/put increments.
class PacketPool {
 public:
  explicit PacketPool(const PacketPoolConfig& config = {})
      : count_(std::max<size_t>(config.buffers, 1)),
        headroom_(uint32_t(config.headroom)),
        capacity_(checked_capacity(config)),
        storage_(static_cast<uint8_t*>(
            ::operator new(count_ * capacity_, std::align_val_t{queue_detail::kCacheLine}))),
        bufs_(new PacketBuf[count_]),
        next_(new std::atomic<uint32_t>[count_]) {
    for (size_t i = 0; i < count_; ++i) {
      PacketBuf& b = bufs_[i];
      b.data = storage_ + i * capacity_;
      b.capacity = capacity_;
      b.begin = b.end = headroom_;
      b.pool_ = this;
      b.default_headroom_ = headroom_;
      // Stack order 0, 1, 2, ...: buffer i links to i + 1, the last to kNil.
      next_[i].store(i + 1 < count_ ? uint32_t(i + 1) : kNil, std::memory_order_relaxed);
    }
    top_.store(0, std::memory_order_relaxed);  // tag 0, index 0
    free_count_.store(count_, std::memory_order_relaxed);
  }
  PacketPool(const PacketPool&) = delete;
  PacketPool& operator=(const PacketPool&) = delete;

  // Every buffer must be back (queues drained, threads joined): freeing memory that a
  // queue still points into would be a use-after-free, so it is fatal.
  ~PacketPool() {
    if (free_count_.load(std::memory_order_relaxed) != count_)
      queue_detail::fatal("PacketPool destroyed with buffers in use");
    ::operator delete(storage_, std::align_val_t{queue_detail::kCacheLine});
  }

  // Multi consumer. An empty buffer (begin = end = headroom, crypt_state kPending, no
  // peer), or null when all are in use: the caller drops the packet (backpressure).
  [[nodiscard]] PacketBuf* get() {
    // acquire (load and CAS): the put() that pushed this index, and so its clearing of the
    // buffer and its next_ link, happen before we use them.
    uint64_t top = top_.load(std::memory_order_acquire);
    for (;;) {
      const uint32_t idx = uint32_t(top);
      if (idx == kNil) return nullptr;
      // May be stale if idx is taken and returned meanwhile; then the tag has moved on and
      // the CAS fails. Atomic only so that this benign race is not undefined behaviour.
      const uint32_t next = next_[idx].load(std::memory_order_relaxed);
      if (top_.compare_exchange_weak(top, retag(top, next), std::memory_order_acquire,
                                     std::memory_order_acquire)) {
        free_count_.fetch_sub(1, std::memory_order_relaxed);
        PacketBuf* b = &bufs_[idx];
        b->in_pool_.store(false, std::memory_order_relaxed);
        return b;
      }
    }
  }

  // Multi producer. Returns b (null is ignored). Fatal if b is not from this pool or is
  // already back: either means two owners, which would corrupt packets silently.
  void put(PacketBuf* b) {
    if (!b) return;
    const auto p = reinterpret_cast<uintptr_t>(b);
    const auto lo = reinterpret_cast<uintptr_t>(bufs_.get());
    if (p < lo || p >= lo + count_ * sizeof(PacketBuf) || (p - lo) % sizeof(PacketBuf))
      queue_detail::fatal("PacketPool::put: buffer from another pool");
    if (b->in_pool_.exchange(true, std::memory_order_relaxed))
      queue_detail::fatal("PacketPool::put: buffer returned twice");
    b->begin = b->end = b->default_headroom_;
    b->crypt_state.reset();
    b->outbound = false;
    b->peer = nullptr;
    b->keypair.reset();  // may free the keys and the peer: put() can run on any thread
    b->nonce = 0;
    b->wire_len = 0;
    b->endpoint = Endpoint{};
    b->chain = nullptr;
    const uint32_t idx = uint32_t((p - lo) / sizeof(PacketBuf));
    free_count_.fetch_add(1, std::memory_order_relaxed);
    uint64_t top = top_.load(std::memory_order_relaxed);
    for (;;) {
      next_[idx].store(uint32_t(top), std::memory_order_relaxed);
      // release: publishes the cleared fields and the link to the next get().
      if (top_.compare_exchange_weak(top, retag(top, idx), std::memory_order_release,
                                     std::memory_order_relaxed))
        return;
    }
  }

  size_t buffers() const { return count_; }
  size_t buffer_capacity() const { return capacity_; }
  size_t headroom() const { return headroom_; }
  // Any thread; a possibly stale snapshot, for statistics.
  size_t available_approx() const {
    return std::min<size_t>(free_count_.load(std::memory_order_relaxed), count_);
  }

 private:
  static constexpr uint32_t kNil = UINT32_MAX;

  // Rounded up to whole cache lines so buffers never share one. Sizes come from our own
  // configuration, so an absurd one is a bug: fatal.
  static uint32_t checked_capacity(const PacketPoolConfig& c) {
    constexpr size_t kLimit = size_t(1) << 24;  // 16 MiB per buffer, 16 M buffers
    if (c.headroom > kLimit || c.payload > kLimit || c.tailroom > kLimit ||
        std::max<size_t>(c.buffers, 1) > kLimit)
      queue_detail::fatal("PacketPool: configuration out of range");
    const size_t n = c.headroom + c.payload + c.tailroom;
    return uint32_t((n + queue_detail::kCacheLine - 1) & ~(queue_detail::kCacheLine - 1));
  }
  // The top word: tag in the high half, index (or kNil) in the low half.
  static uint64_t retag(uint64_t old_top, uint32_t idx) {
    return (((old_top >> 32) + 1) << 32) | idx;
  }

  const size_t count_;
  const uint32_t headroom_;
  const uint32_t capacity_;
  uint8_t* const storage_;
  const std::unique_ptr<PacketBuf[]> bufs_;
  const std::unique_ptr<std::atomic<uint32_t>[]> next_;  // free-list links, by index
  alignas(queue_detail::kCacheLine) std::atomic<uint64_t> top_;
  // Wrapping counter: put's increment may land before get's decrement; min() above hides
  // the transient.
  std::atomic<size_t> free_count_;
};

// A move-only owner: returns the buffer to its pool when destroyed.
struct PacketReturn {
  void operator()(PacketBuf* b) const {
    if (b) b->pool_->put(b);
  }
};
using PacketHandle = std::unique_ptr<PacketBuf, PacketReturn>;

// Multi consumer. Like PacketPool::get(), wrapped; empty when the pool is exhausted.
inline PacketHandle get_packet(PacketPool& pool) { return PacketHandle(pool.get()); }

}  // namespace meshwg::dataplane
