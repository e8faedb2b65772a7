// Loopback datagrams per second through dataplane/bind_linux with 1400-byte datagrams (a
// full-MTU WireGuard packet), by send path (mode):
//   mode:0   64 x send(): one sendmsg per datagram
//   mode:1   send_batch() of 64 with GSO off: one sendmmsg
//   mode:2   send_batch() of 64 with GSO (UDP_SEGMENT): one sendmmsg of two trains
// and rx_gro:0/1 = the receiver's UDP_GRO. A receiver thread drains with receive_batch() (64
// slots). items_per_second counts datagrams handed to the kernel; recv_per_s those that
// arrived (loopback drops the excess when the receiver falls behind; 4 MiB socket buffers).
// Sender and receiver share the cores with each other and the machine; compare runs on one
// machine only. main() comes from crypto_bench.cc (BENCHMARK_MAIN).
#include <benchmark/benchmark.h>

#include <atomic>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/bind_linux.h"

namespace meshwg::dataplane {
namespace {

constexpr size_t kDatagram = 1400;
constexpr int kPerIteration = Bind::kMaxBatch;

enum Mode { kSingle = 0, kBatch = 1, kBatchGso = 2 };

// A receiving bind whose thread counts every datagram until the bind is closed.
class Sink {
 public:
  explicit Sink(bool gro) : bind_({.gso = true, .gro = gro}) {
    port_ = bind_.open(0);
    if (port_ > 0) thread_ = std::thread([this] { run(); });
  }
  ~Sink() {
    bind_.close();
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  uint64_t received() const { return received_.load(std::memory_order_relaxed); }

 private:
  void run() {
    std::vector<std::vector<uint8_t>> bufs(Bind::kMaxBatch,
                                           std::vector<uint8_t>(Bind::kMaxDatagramSize));
    std::vector<Bind::RecvMsg> msgs(Bind::kMaxBatch);
    for (size_t j = 0; j < msgs.size(); ++j) msgs[j].buf = bufs[j];
    // Ends when the bind is closed; -1 (transient) only retries.
    for (;;) {
      const int n = bind_.receive_batch(0, msgs);
      if (n == Bind::kClosed) return;
      if (n > 0) received_.fetch_add(uint64_t(n), std::memory_order_relaxed);
    }
  }

  LinuxBind bind_;
  int port_ = -1;
  std::atomic<uint64_t> received_{0};
  std::thread thread_;
};

void BM_BindLoopback(benchmark::State& state) {
  const Mode mode = Mode(state.range(0));
  const bool gro = state.range(1) != 0;
  Sink sink(gro);
  LinuxBind tx({.gso = mode == kBatchGso, .gro = false});
  if (sink.port() <= 0 || tx.open(0) <= 0) {
    state.SkipWithError("cannot open loopback sockets");
    return;
  }
  if (mode == kBatchGso && !tx.gso_enabled(4)) {
    state.SkipWithError("kernel without UDP GSO");
    return;
  }
  Endpoint to = *Endpoint::parse("127.0.0.1:" + std::to_string(sink.port()));
  std::vector<std::vector<uint8_t>> data(kPerIteration, std::vector<uint8_t>(kDatagram, 0x5a));
  std::vector<std::span<const uint8_t>> spans(data.begin(), data.end());
  uint64_t sent = 0;
  const uint64_t received_before = sink.received();
  for (auto _ : state) {
    if (mode == kSingle) {
      for (const auto& d : spans) sent += tx.send(d, to) ? 1 : 0;
    } else {
      sent += tx.send_batch(spans, to);
    }
  }
  const uint64_t received = sink.received() - received_before;
  state.SetItemsProcessed(int64_t(sent));
  state.SetBytesProcessed(int64_t(sent * kDatagram));
  state.counters["recv_per_s"] = benchmark::Counter(double(received), benchmark::Counter::kIsRate);
  state.counters["recv_pct"] = sent ? 100.0 * double(received) / double(sent) : 0.0;
  state.counters["gso_sends"] = double(tx.gso_sends());
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"mode", "rx_gro"});
  for (int gro : {0, 1})
    for (int mode : {kSingle, kBatch, kBatchGso}) b->Args({mode, gro});
  b->UseRealTime()->MinTime(0.5);
}
BENCHMARK(BM_BindLoopback)->Apply(Args);

}  // namespace
}  // namespace meshwg::dataplane
