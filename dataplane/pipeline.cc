// The parallel crypto stage and the hand-off to the per-peer in-order stages (kernel
// queueing.c and the encrypt/decrypt/tx/rx workers of send.c and receive.c; wireguard-go
// device/send.go RoutineEncryption + RoutineSequentialSender). The queues are queue.h's.
//
//   tun_loop ─► route, reserve nonces ─┬─► peer.queues().tx (ordered) ─────────────────┐
//                                      └─► crypt_queue_ ─┐                              │
//   receive_loop ─► classify, index ───┬─► peer.queues().rx (ordered) ───────────┐      │
//                                      └─► crypt_queue_ ─┤                       │      │
//                                                        ▼                       ▼      ▼
//   worker_loop (W threads): pop_batch ─► seal / open in place ─► finish ─► drain the peers'
//                            queues: drain_tx (send.cc): UDP send_batch in nonce order, timers
//                                    drain_rx (receive.cc): replay, roaming, source check,
//                                    GRO-merge, TUN write, in arrival order
//
//   crypt_queue_: multi producer / multi consumer (workers; producers that help()). An item
//   is a chain of up to kMaxChain packets of one peer and direction (PacketBuf::chain).
//   Its capacity is at least every pool buffer, so a push fails only once it is closed,
//   and it is closed only under config_mu_ after running_ is cleared (see dispatch()).
//   Ordered queues: whichever thread finishes a queue's head drains it; drains of one
//   peer and direction never overlap, so per-peer order holds end to end.
//
// Ownership: a PacketBuf belongs to its producer until dispatch(), then to the queues,
// then to the drainer, which returns it to its pool. Its keypair reference keeps the keys,
// the peer and the peer's queues alive until then.
//
// Who does the crypto: a hand-off costs a wake-up and moves the packets to another core, so
// the producer keeps the work when that cannot pay: runs shorter than inline_below_ packets,
// and everything while the machine has no idle CPU (sample_cpu(); on 2 busy cores the
// workers measured 22% slower than the producers alone). Otherwise chains go to the workers;
// a TUN reader or UDP receiver pushes a lone chain without waking anyone and runs it itself
// before it next sleeps, unless a second chain piles up (Handoff::kProducerFirst).
//
// Backpressure: a producer whose packets back the crypt queue up (or that finds its pool
// empty) runs queued crypto itself before reading more, as a worker would; a full ordered
// queue or an empty pool after that is a counted drop. Nothing waits for a lock.
#include <spdlog/spdlog.h>

#include <pthread.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <thread>

#include "dataplane/device.h"

namespace meshwg::dataplane {

namespace {
// Chains a worker takes per wake-up. One: a chain is already up to kMaxChain packets, and a
// second worker should get the next chain rather than wait behind this one.
constexpr size_t kWorkerBatch = 1;
// A producer helps once this many chains wait for crypto: well under an ordered queue's
// capacity in packets, so one peer's burst is absorbed without drops.
constexpr size_t kHelpBacklog = 8;
}  // namespace

PacketBuf* Device::dispatch(std::span<PacketBuf* const> run, Handoff how) {
  if (run.empty()) return nullptr;
  const bool outbound = run[0]->outbound;
  PacketPool& pool = outbound ? tx_pool_ : rx_pool_;
  const bool stopped = !running_ || !crypt_queue_;
  if (stopped && outbound) {
    // Not started (tests of single messages, the fuzz hook): there is no socket to send to.
    drops_[size_t(Drop::kUdpSendFailed)].fetch_add(run.size(), std::memory_order_relaxed);
    for (PacketBuf* b : run) pool.put(b);
    return nullptr;
  }
  PeerQueues& q = run[0]->peer->queues();
  OrderedQueue<PacketBuf>& ordered = outbound ? q.tx : q.rx;
  PacketBuf* head = nullptr;
  PacketBuf** link = &head;
  for (PacketBuf* b : run) {
    b->crypt_state.reset();
    b->chain = nullptr;
    if (!ordered.try_push(b)) {
      count(Drop::kQueueFull);
      pool.put(b);
      continue;
    }
    *link = b;
    link = &b->chain;
  }
  // A short run costs less than a hand-off; without idle CPU a worker only competes with the
  // producer for the same cores and adds the hand-off on top (measured: -22% on 2 busy
  // cores). inline_below_ == 0 (tests) sends everything through the workers.
  const bool keep = how != Handoff::kWorkers && inline_below_ != 0 &&
                    (run.size() < inline_below_ || !use_workers_.load(std::memory_order_relaxed));
  if (!head || stopped || keep) return head;
  // In the ordered queue before any worker can finish them: the finisher's drain finds them.
  // A producer that will come back for a lone chain before it sleeps wakes a worker only
  // when a second one is waiting: one futex wake-up saved per chain it ends up doing itself.
  const bool pushed = how == Handoff::kProducerFirst ? crypt_queue_->try_push_quiet(head)
                                                      : crypt_queue_->try_push(head);
  if (pushed && how == Handoff::kProducerFirst && crypt_queue_->size_approx() >= 2)
    crypt_queue_->wake_one();
  if (!pushed) {
    // Impossible by construction (capacity, and close() under config_mu_ exclusive); a
    // packet stuck in an ordered queue would stall its peer for good.
    spdlog::critical("crypt queue refused a packet while running");
    std::abort();
  }
  return nullptr;
}

void Device::run_inline(PacketBuf* chain) {
  if (!chain) return;
  PacketBuf* one[1] = {chain};
  run_crypto(one);
}

void Device::worker_loop() {
  pthread_setname_np(pthread_self(), "meshwg-crypt");
  std::array<PacketBuf*, kWorkerBatch> chains;
  for (;;) {
    const size_t n = crypt_queue_->pop_batch(chains);
    if (n == 0) return;  // closed and empty
    run_crypto({chains.data(), n});
  }
}

void Device::run_crypto(std::span<PacketBuf* const> chains) {
  // Every packet of a chain has the same peer and direction. Which queues to drain is
  // captured before finish(): once a packet is finished another worker may drain it and
  // hand its buffer to someone else. The keypair reference keeps the peer alive until our
  // drain is done.
  struct Target {
    std::shared_ptr<Keypair> hold;
    Peer* peer;
    bool outbound;
  };
  std::array<Target, kWorkerBatch> targets;
  const size_t n = std::min(chains.size(), targets.size());
  for (size_t i = 0; i < n; ++i) {
    PacketBuf* c = chains[i];
    targets[i] = {c->keypair, c->peer, c->outbound};
    for (PacketBuf* b = c; b;) {
      PacketBuf* next = b->chain;  // read before finish(): b may be gone right after
      if (b->outbound)
        seal(*b);
      else
        open(*b);
      b = next;
    }
  }
  for (size_t i = 0; i < n; ++i) drain(*targets[i].peer, targets[i].outbound);
}

void Device::drain(Peer& peer, bool outbound) {
  PeerQueues& q = peer.queues();
  if (outbound)
    q.tx.drain([&](std::span<PacketBuf*> batch) { drain_tx(peer, batch); });
  else
    q.rx.drain([&](std::span<PacketBuf*> batch) { drain_rx(peer, batch); });
}

bool Device::backlogged() const {
  return crypt_queue_ && crypt_queue_->size_approx() > kHelpBacklog;
}

void Device::sample_cpu() {
  // The first line of /proc/stat: "cpu user nice system idle iowait irq softirq steal guest
  // guest_nice" in USER_HZ ticks since boot; guest time is already inside user and nice.
  std::FILE* f = std::fopen("/proc/stat", "re");
  if (!f) return;
  unsigned long long v[8] = {};
  const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                            &v[3], &v[4], &v[5], &v[6], &v[7]);
  std::fclose(f);
  if (n < 5) return;
  uint64_t total = 0;
  for (unsigned long long x : v) total += x;
  const uint64_t idle = v[3] + v[4];
  if (cpu_prev_total_ != 0 && total > cpu_prev_total_ && idle >= cpu_prev_idle_) {
    const double idle_cores = double(idle - cpu_prev_idle_) / double(total - cpu_prev_total_) *
                              double(std::max(1u, std::thread::hardware_concurrency()));
    // Hysteresis: the hand-offs themselves leave short idle gaps (wake-up latency), about a
    // quarter core on 2 busy cores, which must not read as room for workers.
    const bool on = use_workers_.load(std::memory_order_relaxed);
    const bool next = on ? idle_cores >= 0.5 : idle_cores >= 0.75;
    if (next != on) {
      use_workers_.store(next, std::memory_order_relaxed);
      spdlog::debug("packet workers {} ({:.2f} idle cores)", next ? "on" : "off", idle_cores);
    }
  }
  cpu_prev_total_ = total;
  cpu_prev_idle_ = idle;
}

void Device::help(size_t max_chains) {
  if (!crypt_queue_) return;
  for (size_t i = 0; i < max_chains; ++i) {
    PacketBuf* c;
    if (!crypt_queue_->try_pop(c)) return;
    run_crypto({&c, 1});
  }
}

}  // namespace meshwg::dataplane
