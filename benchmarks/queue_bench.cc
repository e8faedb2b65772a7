// Micro-benchmark of dataplane/queue.h hand-off cost, in ns per item:
//   *_SingleThread   push then pop on one thread (the uncontended instruction cost)
//   *_Pair           one producer thread, one consumer thread (Threads(2), real time):
//                    the cross-core cost, cache-line transfers included
//   Blocking_Pair    the same through BlockingQueue, whose consumer may park
//   Ordered_PushFinishDrain  OrderedQueue push, finish, drain on one thread (protocol cost)
//   Pool_GetPut      PacketPool get + put on one thread
// Pair loops spin briefly, then yield. On a shared 2-core machine the pair numbers are
// noisy (the two threads often share a core); compare runs on one machine only.
// main() comes from crypto_bench.cc (BENCHMARK_MAIN).
#include <benchmark/benchmark.h>

#include <thread>

#include "dataplane/queue.h"

namespace meshwg::dataplane {
namespace {

constexpr size_t kRing = 1024;

template <class Q>
void BM_SingleThread(benchmark::State& state) {
  Q q(kRing);
  uint64_t v = 0, sink = 0;
  for (auto _ : state) {
    if (!q.try_push(uint64_t(v++))) state.SkipWithError("full");
    if (!q.try_pop(sink)) state.SkipWithError("empty");
    benchmark::DoNotOptimize(sink);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SingleThread<MpmcQueue<uint64_t>>)->Name("Mpmc_SingleThread");
BENCHMARK(BM_SingleThread<SpscQueue<uint64_t>>)->Name("Spsc_SingleThread");

// Thread 0 produces, thread 1 consumes; both run the same iteration count, so the queue
// is empty again when a run ends. The queue is made before the threads start and freed
// after they end (Setup / Teardown run on the main thread around each run).
template <class Q>
Q* pair_queue = nullptr;
template <class Q>
void make_pair_queue(const benchmark::State&) { pair_queue<Q> = new Q(kRing); }
template <class Q>
void free_pair_queue(const benchmark::State&) {
  delete pair_queue<Q>;
  pair_queue<Q> = nullptr;
}

// Busy-waits briefly, then yields: when the two threads share a core (a loaded machine)
// pure spinning would measure the scheduler's time slice instead of the queue.
template <class F>
void retry(F&& attempt) {
  for (int i = 0; !attempt(); ++i) {
    if (i < 64) {
      queue_detail::cpu_relax();
    } else {
      std::this_thread::yield();
      i = 0;
    }
  }
}

template <class Q>
void BM_Pair(benchmark::State& state) {
  Q* q = pair_queue<Q>;
  uint64_t v = 0;
  for (auto _ : state) {
    if (state.thread_index() == 0) {
      retry([&] { return q->try_push(uint64_t(v)); });
      ++v;
    } else if constexpr (requires { q->pop(v); }) {
      if (!q->pop(v)) state.SkipWithError("closed");  // may park
      benchmark::DoNotOptimize(v);
    } else {
      retry([&] { return q->try_pop(v); });
      benchmark::DoNotOptimize(v);
    }
  }
  state.SetItemsProcessed(state.iterations());
}
template <class Q>
void register_pair(const char* name) {
  benchmark::RegisterBenchmark(name, BM_Pair<Q>)
      ->Setup(make_pair_queue<Q>)
      ->Teardown(free_pair_queue<Q>)
      ->Threads(2)
      ->UseRealTime();
}
const bool registered_pairs = [] {
  register_pair<MpmcQueue<uint64_t>>("Mpmc_Pair");
  register_pair<SpscQueue<uint64_t>>("Spsc_Pair");
  register_pair<BlockingQueue<uint64_t>>("Blocking_Pair");
  return true;
}();

struct BenchElem {
  CryptFlag crypt_state;
};

void BM_Ordered(benchmark::State& state) {
  OrderedQueue<BenchElem> q(kRing);
  BenchElem e;
  size_t out = 0;
  for (auto _ : state) {
    e.crypt_state.reset();
    if (!q.try_push(&e)) state.SkipWithError("full");
    e.crypt_state.finish(CryptState::kDone);
    q.drain([&](std::span<BenchElem*> batch) { out += batch.size(); });
  }
  benchmark::DoNotOptimize(out);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Ordered)->Name("Ordered_PushFinishDrain");

void BM_Pool(benchmark::State& state) {
  PacketPool pool({.buffers = 256});
  for (auto _ : state) {
    PacketBuf* b = pool.get();
    benchmark::DoNotOptimize(b);
    pool.put(b);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Pool)->Name("Pool_GetPut");

}  // namespace
}  // namespace meshwg::dataplane
