// Tests for dataplane/queue.h: ring semantics on one thread (full, empty, FIFO, many laps,
// move-only elements), multi-threaded stress (every item exactly once, per-producer order
// as each consumer sees it), the in-order drain with workers finishing out of order,
// close() waking sleeping consumers, and the packet pool (exhaustion, reuse, invariants,
// double put). Sizes are modest so each test takes well under a second on 2 busy cores;
// under TSan they shrink further.
#include "dataplane/queue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

namespace meshwg::dataplane {
namespace {

using namespace std::chrono_literals;

#if defined(__SANITIZE_THREAD__)
constexpr uint32_t kScale = 2;  // TSan runs ~5-20x slower
#else
constexpr uint32_t kScale = 1;
#endif

// ---- single-thread semantics ----

template <class Q>
class RingTest : public ::testing::Test {};
using Rings = ::testing::Types<MpmcQueue<uint64_t>, SpscQueue<uint64_t>>;
TYPED_TEST_SUITE(RingTest, Rings);

// Vyukov's ring needs two cells to tell "full" from "free for the next lap".
template <class Q>
constexpr size_t kMinCapacity = std::is_same_v<Q, SpscQueue<uint64_t>> ? 1 : 2;

TYPED_TEST(RingTest, CapacityRoundsUpToPowerOfTwo) {
  EXPECT_EQ(TypeParam(0).capacity(), kMinCapacity<TypeParam>);
  EXPECT_EQ(TypeParam(1).capacity(), kMinCapacity<TypeParam>);
  EXPECT_EQ(TypeParam(2).capacity(), 2u);
  EXPECT_EQ(TypeParam(5).capacity(), 8u);
  EXPECT_EQ(TypeParam(64).capacity(), 64u);
}

TYPED_TEST(RingTest, FullEmptyFifo) {
  TypeParam q(8);
  uint64_t v = 99;
  EXPECT_FALSE(q.try_pop(v));
  EXPECT_EQ(v, 99u) << "a failed pop leaves out alone";
  for (uint64_t i = 0; i < 8; ++i) EXPECT_TRUE(q.try_push(uint64_t(i)));
  EXPECT_FALSE(q.try_push(uint64_t(8)));
  EXPECT_EQ(q.size_approx(), 8u);
  for (uint64_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(q.try_pop(v));
    EXPECT_EQ(v, i);
  }
  EXPECT_FALSE(q.try_pop(v));
  EXPECT_EQ(q.size_approx(), 0u);
}

TYPED_TEST(RingTest, SmallestRing) {
  TypeParam q(1);
  uint64_t v = 0;
  for (uint64_t i = 0; i < 100; ++i) {
    for (size_t k = 0; k < q.capacity(); ++k) ASSERT_TRUE(q.try_push(uint64_t(i)));
    ASSERT_FALSE(q.try_push(uint64_t(i)));
    for (size_t k = 1; k < q.capacity(); ++k) ASSERT_TRUE(q.try_pop(v));
    ASSERT_TRUE(q.try_pop(v));
    ASSERT_EQ(v, i);
    ASSERT_FALSE(q.try_pop(v));
  }
}

// Random fill levels, many laps around a small ring, against a deque as the model.
TYPED_TEST(RingTest, WraparoundAgainstModel) {
  TypeParam q(16);
  std::deque<uint64_t> model;
  std::mt19937 rng(1);
  uint64_t next = 0;
  for (int step = 0; step < 200000; ++step) {
    if (rng() % 2) {
      const bool ok = q.try_push(uint64_t(next));
      ASSERT_EQ(ok, model.size() < 16);
      if (ok) model.push_back(next);
      ++next;
    } else {
      uint64_t v;
      const bool ok = q.try_pop(v);
      ASSERT_EQ(ok, !model.empty());
      if (ok) {
        ASSERT_EQ(v, model.front());
        model.pop_front();
      }
    }
  }
  EXPECT_GT(next / 16, 1000u) << "went around the ring many times";
}

// Move-only elements: a failed push keeps the value; leftovers are destroyed with the ring.
TYPED_TEST(RingTest, MoveOnlyAndDestruction) {
  using Q = std::conditional_t<std::is_same_v<TypeParam, MpmcQueue<uint64_t>>,
                               MpmcQueue<std::unique_ptr<int>>, SpscQueue<std::unique_ptr<int>>>;
  auto alive = std::make_shared<int>(0);
  {
    Q q(2);
    ASSERT_TRUE(q.try_push(std::make_unique<int>(1)));
    ASSERT_TRUE(q.try_push(std::make_unique<int>(2)));
    auto third = std::make_unique<int>(3);
    EXPECT_FALSE(q.try_push(std::move(third)));
    ASSERT_NE(third, nullptr);
    EXPECT_EQ(*third, 3);
    std::unique_ptr<int> out;
    ASSERT_TRUE(q.try_pop(out));
    EXPECT_EQ(*out, 1);
  }
  // The shared_ptr variant checks that the destructor runs for what was left queued.
  {
    using S = std::conditional_t<std::is_same_v<TypeParam, MpmcQueue<uint64_t>>,
                                 MpmcQueue<std::shared_ptr<int>>, SpscQueue<std::shared_ptr<int>>>;
    S q(4);
    ASSERT_TRUE(q.try_push(std::shared_ptr<int>(alive)));
    ASSERT_TRUE(q.try_push(std::shared_ptr<int>(alive)));
    EXPECT_EQ(alive.use_count(), 3);
  }
  EXPECT_EQ(alive.use_count(), 1);
}

// ---- multi-threaded stress ----

// Item = producer << 32 | sequence number.
constexpr uint64_t item(uint32_t producer, uint32_t seq) { return uint64_t(producer) << 32 | seq; }

TEST(MpmcQueueStress, FourByFourEveryItemOnceInOrderPerProducer) {
  constexpr uint32_t kProducers = 4, kConsumers = 4;
  const uint32_t per_producer = 200000 / kScale;
  const uint64_t total = uint64_t(kProducers) * per_producer;
  MpmcQueue<uint64_t> q(256);
  std::vector<std::atomic<uint8_t>> seen(total);
  std::atomic<uint64_t> received{0};
  std::atomic<bool> order_ok{true}, dup_ok{true};

  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < kProducers; ++p)
    threads.emplace_back([&, p] {
      for (uint32_t i = 0; i < per_producer; ++i)
        while (!q.try_push(item(p, i))) std::this_thread::yield();
    });
  for (uint32_t c = 0; c < kConsumers; ++c)
    threads.emplace_back([&] {
      int64_t last[kProducers];
      std::fill(std::begin(last), std::end(last), -1);
      uint64_t v;
      while (received.load(std::memory_order_relaxed) < total) {
        if (!q.try_pop(v)) {
          std::this_thread::yield();
          continue;
        }
        const uint32_t p = uint32_t(v >> 32), i = uint32_t(v);
        if (int64_t(i) <= last[p]) order_ok = false;  // per consumer, per producer FIFO
        last[p] = i;
        if (seen[uint64_t(p) * per_producer + i].fetch_add(1) != 0) dup_ok = false;
        received.fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_TRUE(order_ok);
  EXPECT_TRUE(dup_ok);
  EXPECT_EQ(received.load(), total);
  for (uint64_t k = 0; k < total; ++k) ASSERT_EQ(seen[k].load(), 1) << k;
  uint64_t v;
  EXPECT_FALSE(q.try_pop(v));
}

TEST(SpscQueueStress, FourPairsStrictFifo) {
  constexpr int kPairs = 4;
  const uint32_t n = 200000 / kScale;
  std::vector<std::unique_ptr<SpscQueue<uint64_t>>> queues;
  for (int i = 0; i < kPairs; ++i) queues.push_back(std::make_unique<SpscQueue<uint64_t>>(64));
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < kPairs; ++k) {
    threads.emplace_back([&, k] {
      for (uint32_t i = 0; i < n; ++i)
        while (!queues[k]->try_push(item(k, i))) std::this_thread::yield();
    });
    threads.emplace_back([&, k] {
      uint64_t v;
      for (uint32_t i = 0; i < n; ++i) {
        while (!queues[k]->try_pop(v)) std::this_thread::yield();
        if (v != item(k, i)) errors++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
}

// Sleeping consumers under contention: a lost wake-up would hang here (the meson timeout
// catches it); a double delivery or loss shows in the counts.
TEST(BlockingQueueStress, ProducersConsumersSleepAndWake) {
  constexpr uint32_t kProducers = 4, kConsumers = 4;
  const uint32_t per_producer = 50000 / kScale;
  const uint64_t total = uint64_t(kProducers) * per_producer;
  BlockingQueue<uint64_t> q(64);
  std::vector<std::atomic<uint8_t>> seen(total);
  std::atomic<uint64_t> received{0};
  std::atomic<bool> order_ok{true};
  std::vector<std::thread> producers, consumers;
  for (uint32_t c = 0; c < kConsumers; ++c)
    consumers.emplace_back([&] {
      int64_t last[kProducers];
      std::fill(std::begin(last), std::end(last), -1);
      uint64_t batch[8];
      for (;;) {
        const size_t n = q.pop_batch(batch);
        if (n == 0) return;  // closed and empty
        for (size_t j = 0; j < n; ++j) {
          const uint32_t p = uint32_t(batch[j] >> 32), i = uint32_t(batch[j]);
          if (int64_t(i) <= last[p]) order_ok = false;
          last[p] = i;
          seen[uint64_t(p) * per_producer + i].fetch_add(1);
        }
        received.fetch_add(n);
      }
    });
  for (uint32_t p = 0; p < kProducers; ++p)
    producers.emplace_back([&, p] {
      std::mt19937 rng(p);
      for (uint32_t i = 0; i < per_producer; ++i) {
        while (!q.try_push(item(p, i))) std::this_thread::yield();
        // Now and then pause so consumers run dry and park.
        if (rng() % 4096 == 0) std::this_thread::sleep_for(100us);
      }
    });
  for (auto& t : producers) t.join();
  q.close();
  for (auto& t : consumers) t.join();
  EXPECT_TRUE(order_ok);
  EXPECT_EQ(received.load(), total);
  for (uint64_t k = 0; k < total; ++k) ASSERT_EQ(seen[k].load(), 1) << k;
}

TEST(BlockingQueueStress, SpscRingSleepAndWake) {
  const uint32_t n = 200000 / kScale;
  BlockingQueue<uint64_t, SpscQueue<uint64_t>> q(32);
  std::atomic<int> errors{0};
  std::thread consumer([&] {
    uint64_t v;
    for (uint32_t i = 0; i < n; ++i) {
      if (!q.pop(v) || v != i) errors++;
    }
    if (q.pop(v)) errors++;  // closed and empty by now
  });
  for (uint32_t i = 0; i < n; ++i) {
    while (!q.try_push(uint64_t(i))) std::this_thread::yield();
    if (i % 10000 == 0) std::this_thread::sleep_for(200us);
  }
  q.close();
  consumer.join();
  EXPECT_EQ(errors.load(), 0);
}

// ---- close, timeouts ----

TEST(BlockingQueue, CloseWakesAllSleepingConsumers) {
  BlockingQueue<int> q(8);
  constexpr int kConsumers = 4;
  std::atomic<int> returned{0}, got_false{0};
  std::vector<std::thread> consumers;
  for (int i = 0; i < kConsumers; ++i)
    consumers.emplace_back([&] {
      int v;
      if (!q.pop(v)) got_false++;
      returned++;
    });
  std::this_thread::sleep_for(50ms);  // let them spin out and park
  EXPECT_EQ(returned.load(), 0);
  const auto t0 = std::chrono::steady_clock::now();
  q.close();
  for (auto& t : consumers) t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(got_false.load(), kConsumers);
  EXPECT_TRUE(q.closed());
}

// Producers wake one consumer per burst; the woken consumer must pass the wake on, or a
// burst pushed at once would be served by one consumer while the others sleep.
TEST(BlockingQueue, BurstWakesSeveralConsumers) {
  BlockingQueue<int> q(64);
  constexpr int kConsumers = 4, kItems = 40;
  std::atomic<int> handled[kConsumers] = {};
  std::vector<std::thread> consumers;
  for (int c = 0; c < kConsumers; ++c)
    consumers.emplace_back([&, c] {
      int v;
      while (q.pop(v)) {
        handled[c]++;
        std::this_thread::sleep_for(2ms);  // slow work: the rest of the burst waits
      }
    });
  std::this_thread::sleep_for(50ms);  // all parked
  for (int i = 0; i < kItems; ++i) ASSERT_TRUE(q.try_push(int(i)));
  while (q.size_approx() > 0) std::this_thread::sleep_for(1ms);
  q.close();
  for (auto& t : consumers) t.join();
  int busy = 0, total = 0;
  for (auto& h : handled) {
    busy += h.load() > 0;
    total += h.load();
  }
  EXPECT_EQ(total, kItems);
  EXPECT_GE(busy, 2) << "only one consumer woke for the burst";
}

TEST(BlockingQueue, CloseDrainsFirstAndRefusesPushes) {
  BlockingQueue<int> q(8);
  ASSERT_TRUE(q.try_push(1));
  ASSERT_TRUE(q.try_push(2));
  q.close();
  EXPECT_FALSE(q.try_push(3));
  int v;
  ASSERT_TRUE(q.pop(v));
  EXPECT_EQ(v, 1);
  ASSERT_TRUE(q.pop(v));
  EXPECT_EQ(v, 2);
  EXPECT_FALSE(q.pop(v));
}

TEST(BlockingQueue, FullIsReportedNotWaited) {
  BlockingQueue<int> q(2);
  EXPECT_TRUE(q.try_push(1));
  EXPECT_TRUE(q.try_push(2));
  EXPECT_FALSE(q.try_push(3));
}

TEST(BlockingQueue, PopUntilTimesOutAndWakesOnPush) {
  BlockingQueue<int> q(8);
  int v;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(q.pop_until(v, t0 + 30ms));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 30ms);
  EXPECT_LT(waited, 1s);

  std::thread producer([&] {
    std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(q.try_push(7));
  });
  t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(q.pop_until(v, t0 + 5s));
  EXPECT_EQ(v, 7);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  producer.join();
}

// ---- in-order output of parallel crypto ----

struct Elem {
  CryptFlag crypt_state;
  uint32_t producer = 0;
  uint32_t seq = 0;
  bool drop = false;
};

TEST(OrderedQueue, HeadBlocksUntilFinished) {
  OrderedQueue<Elem> q(8);
  Elem e[5];
  for (uint32_t i = 0; i < 5; ++i) {
    e[i].seq = i;
    ASSERT_TRUE(q.try_push(&e[i]));
  }
  std::vector<uint32_t> out;
  std::vector<CryptState> states;
  auto fn = [&](std::span<Elem*> batch) {
    for (Elem* x : batch) {
      out.push_back(x->seq);
      states.push_back(x->crypt_state.load());
    }
  };
  e[3].crypt_state.finish(CryptState::kDone);
  q.drain(fn);
  EXPECT_TRUE(out.empty()) << "head 0 is still pending";
  e[1].crypt_state.finish(CryptState::kDropped);
  q.drain(fn);
  EXPECT_TRUE(out.empty());
  e[0].crypt_state.finish(CryptState::kDone);
  q.drain(fn);
  EXPECT_EQ(out, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(states, (std::vector<CryptState>{CryptState::kDone, CryptState::kDropped}));
  e[2].crypt_state.finish(CryptState::kDone);
  e[4].crypt_state.finish(CryptState::kDone);
  q.drain(fn);
  EXPECT_EQ(out, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(q.size_approx(), 0u);
}

TEST(OrderedQueue, FullIsReported) {
  OrderedQueue<Elem> q(2);
  Elem e[3];
  EXPECT_TRUE(q.try_push(&e[0]));
  EXPECT_TRUE(q.try_push(&e[1]));
  EXPECT_FALSE(q.try_push(&e[2]));
  e[0].crypt_state.finish(CryptState::kDone);
  q.drain([](std::span<Elem*>) {});
  EXPECT_TRUE(q.try_push(&e[2]));
}

// The full pipeline: producers → (ordered queue, crypt queue) → W workers that finish in
// shuffled batches → drain. Each producer's items must come out in its order, every item
// exactly once, dropped ones marked dropped. With one producer that is the exact sequence.
void run_ordered_pipeline(uint32_t producers, uint32_t workers, uint32_t per_producer) {
  const uint32_t total = producers * per_producer;
  std::vector<Elem> elems(total);
  OrderedQueue<Elem> ordered(128);  // small: producers wait on it, many laps
  BlockingQueue<Elem*> crypt(64);
  std::vector<Elem*> out;  // written only by fn, which runs under the drain token
  auto fn = [&](std::span<Elem*> batch) { out.insert(out.end(), batch.begin(), batch.end()); };

  std::vector<std::thread> prod, work;
  for (uint32_t w = 0; w < workers; ++w)
    work.emplace_back([&, w] {
      std::mt19937 rng(w + 100);
      Elem* batch[8];
      for (;;) {
        const size_t n = crypt.pop_batch(batch);
        if (n == 0) return;
        std::shuffle(batch, batch + n, rng);  // finish out of order
        for (size_t j = 0; j < n; ++j) {
          if (rng() % 64 == 0) std::this_thread::yield();
          batch[j]->crypt_state.finish(batch[j]->drop ? CryptState::kDropped : CryptState::kDone);
          ordered.drain(fn);
        }
      }
    });
  for (uint32_t p = 0; p < producers; ++p)
    prod.emplace_back([&, p] {
      for (uint32_t i = 0; i < per_producer; ++i) {
        Elem* e = &elems[p * per_producer + i];
        e->producer = p;
        e->seq = i;
        e->drop = i % 7 == 3;
        e->crypt_state.reset();
        while (!ordered.try_push(e)) std::this_thread::yield();
        if (!crypt.try_push(e)) {  // the pipeline's drop path: dropped, still in order
          e->drop = true;
          e->crypt_state.finish(CryptState::kDropped);
          ordered.drain(fn);
        }
      }
    });
  for (auto& t : prod) t.join();
  crypt.close();
  for (auto& t : work) t.join();

  ASSERT_EQ(out.size(), total);
  std::vector<int64_t> last(producers, -1);
  std::vector<uint8_t> seen(total);
  for (Elem* e : out) {
    ASSERT_EQ(int64_t(e->seq), last[e->producer] + 1) << "producer " << e->producer;
    last[e->producer] = e->seq;
    seen[e->producer * per_producer + e->seq]++;
    EXPECT_EQ(e->crypt_state.load(), e->drop ? CryptState::kDropped : CryptState::kDone);
  }
  for (uint8_t s : seen) ASSERT_EQ(s, 1);
}

TEST(OrderedQueue, WorkersFinishOutOfOrderConsumerSeesExactSequence) {
  run_ordered_pipeline(1, 4, 100000 / kScale);
}

TEST(OrderedQueue, ManyProducersKeepEachProducersOrder) {
  run_ordered_pipeline(3, 3, 40000 / kScale);
}

// ---- packet pool ----

TEST(PacketPool, ExhaustionAndReuse) {
  PacketPool pool({.buffers = 4, .headroom = 64, .payload = 1500, .tailroom = 32});
  EXPECT_EQ(pool.buffers(), 4u);
  EXPECT_EQ(pool.buffer_capacity() % 64, 0u);
  EXPECT_GE(pool.buffer_capacity(), 64u + 1500 + 32);
  PacketBuf* b[4];
  for (auto& x : b) {
    x = pool.get();
    ASSERT_NE(x, nullptr);
  }
  EXPECT_EQ(pool.get(), nullptr) << "exhausted: backpressure";
  EXPECT_EQ(pool.available_approx(), 0u);

  // Dirty a buffer, return it, get it back clean.
  int dummy;
  b[0]->peer = reinterpret_cast<Peer*>(&dummy);
  b[0]->keypair = std::shared_ptr<Keypair>(reinterpret_cast<Keypair*>(&dummy), [](Keypair*) {});
  b[0]->nonce = 42;
  b[0]->crypt_state.finish(CryptState::kDone);
  ASSERT_NE(b[0]->push_back(100), nullptr);
  ASSERT_NE(b[0]->push_front(16), nullptr);
  pool.put(b[0]);
  PacketBuf* again = pool.get();
  ASSERT_EQ(again, b[0]);
  EXPECT_EQ(again->peer, nullptr);
  EXPECT_EQ(again->keypair, nullptr);
  EXPECT_EQ(again->nonce, 0u);
  EXPECT_EQ(again->crypt_state.load(), CryptState::kPending);
  EXPECT_EQ(again->begin, 64u);
  EXPECT_EQ(again->end, 64u);
  for (auto& x : b) pool.put(x);
  EXPECT_EQ(pool.available_approx(), 4u);
  pool.put(nullptr);  // ignored
}

TEST(PacketPool, BufferInvariants) {
  PacketPool pool({.buffers = 1, .headroom = 32, .payload = 100, .tailroom = 0});
  PacketBuf* b = pool.get();
  ASSERT_NE(b, nullptr);
  const size_t cap = b->capacity;
  EXPECT_EQ(b->headroom(), 32u);
  EXPECT_EQ(b->size(), 0u);
  EXPECT_EQ(b->tailroom(), cap - 32);
  EXPECT_EQ(b->tail_space().size(), cap - 32);

  uint8_t* p = b->push_back(10);
  ASSERT_EQ(p, b->data + 32);
  EXPECT_EQ(b->size(), 10u);
  EXPECT_EQ(b->push_back(cap), nullptr);
  EXPECT_EQ(b->size(), 10u) << "a failed push changes nothing";

  EXPECT_EQ(b->push_front(33), nullptr);
  EXPECT_EQ(b->push_front(16), b->data + 16);
  EXPECT_EQ(b->size(), 26u);
  EXPECT_TRUE(b->pull_front(16));
  EXPECT_FALSE(b->pull_front(11));
  EXPECT_TRUE(b->trim(4));
  EXPECT_FALSE(b->trim(5));
  EXPECT_EQ(b->bytes().size(), 4u);
  EXPECT_EQ(b->bytes().data(), b->data + 32);
  EXPECT_TRUE(b->begin <= b->end && b->end <= b->capacity);
  pool.put(b);
}

TEST(PacketPool, HandleReturnsOnDestruction) {
  PacketPool pool({.buffers = 2, .headroom = 64, .payload = 64, .tailroom = 0});
  {
    PacketHandle h1 = get_packet(pool);
    PacketHandle h2 = get_packet(pool);
    ASSERT_TRUE(h1 && h2);
    EXPECT_FALSE(get_packet(pool));
    PacketHandle moved = std::move(h1);
    EXPECT_FALSE(h1);
    EXPECT_EQ(pool.available_approx(), 0u);
  }
  EXPECT_EQ(pool.available_approx(), 2u);
}

TEST(PacketPool, ConcurrentGetPutNeverSharesABuffer) {
  constexpr size_t kBuffers = 8;
  PacketPool pool({.buffers = kBuffers, .headroom = 64, .payload = 64, .tailroom = 0});
  // Learn the buffers' addresses, to index an ownership table.
  std::vector<PacketBuf*> all;
  while (PacketBuf* b = pool.get()) all.push_back(b);
  ASSERT_EQ(all.size(), kBuffers);
  for (PacketBuf* b : all) pool.put(b);
  std::sort(all.begin(), all.end());
  auto index = [&](PacketBuf* b) { return size_t(std::lower_bound(all.begin(), all.end(), b) - all.begin()); };

  constexpr int kThreads = 4;
  const int rounds = 100000 / int(kScale);
  std::vector<std::atomic<int>> owner(kBuffers);
  for (auto& o : owner) o = -1;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < rounds; ++i) {
        PacketBuf* b[3] = {pool.get(), pool.get(), pool.get()};  // 4 x 3 > 8: some fail
        for (PacketBuf* x : b) {
          if (!x) continue;
          int expected = -1;  // a second owner at the same time is the bug we look for
          if (!owner[index(x)].compare_exchange_strong(expected, t)) errors++;
          if (x->size() != 0 || x->peer != nullptr) errors++;  // came back clean
          x->peer = reinterpret_cast<Peer*>(x);
          if (!x->push_back(8)) errors++;
        }
        for (PacketBuf* x : b) {
          if (!x) continue;
          owner[index(x)] = -1;
          pool.put(x);
        }
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(pool.available_approx(), kBuffers);
}

TEST(PacketPoolDeathTest, DoublePutIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        PacketPool pool({.buffers = 2, .headroom = 64, .payload = 64, .tailroom = 0});
        PacketBuf* b = pool.get();
        pool.put(b);
        pool.put(b);
      },
      "returned twice");
}

TEST(PacketPoolDeathTest, ForeignPutIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        PacketPool a({.buffers = 2, .headroom = 64, .payload = 64, .tailroom = 0});
        PacketPool b({.buffers = 2, .headroom = 64, .payload = 64, .tailroom = 0});
        b.put(a.get());
      },
      "another pool");
}

}  // namespace
}  // namespace meshwg::dataplane
