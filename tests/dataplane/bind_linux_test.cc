// dataplane/bind_linux over real loopback sockets (127.0.0.1 and ::1 only): batches sent with
// and without UDP GSO, received with and without UDP GRO, arrive whole and in order; GRO
// trains larger than the caller's slots or buffers are split and carried over; zero-length
// datagrams; close() and re-open wake blocked receivers; sends to closed ports, a vanished
// sticky source, and GSO sends the kernel refuses (EIO, injected) lose nothing.
#include "dataplane/bind_linux.h"

#include <gtest/gtest.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace meshwg::dataplane {
namespace {

using namespace std::chrono_literals;
using Packet = std::vector<uint8_t>;

// Datagram `seq` of a test: its first 4 bytes carry seq (when long enough), the rest a
// pattern that differs per datagram, so a swap, shift or truncation shows up as a mismatch.
Packet make_datagram(uint32_t seq, size_t size) {
  Packet p(size);
  for (size_t i = 0; i < size; ++i) p[i] = uint8_t(seq * 31 + i * 7 + 1);
  if (size >= 4) std::memcpy(p.data(), &seq, 4);
  return p;
}

std::vector<Packet> make_batch(const std::vector<size_t>& sizes) {
  std::vector<Packet> out;
  for (size_t k = 0; k < sizes.size(); ++k) out.push_back(make_datagram(uint32_t(k), sizes[k]));
  return out;
}

// 64 datagrams of 1400 bytes and a short last one: a GSO train, then its shorter tail.
std::vector<size_t> full_batch_sizes() {
  std::vector<size_t> s(64, 1400);
  s.push_back(333);
  return s;
}

Endpoint endpoint(int family, uint16_t port) {
  const std::string s =
      family == 4 ? "127.0.0.1:" + std::to_string(port) : "[::1]:" + std::to_string(port);
  return *Endpoint::parse(s);
}

size_t send_all(LinuxBind& b, const std::vector<Packet>& pkts, Endpoint& to) {
  std::vector<std::span<const uint8_t>> spans;
  for (const Packet& p : pkts) spans.emplace_back(p);
  return b.send_batch(spans, to);
}

// Closes `bind` if `done` is not signalled within `limit`, so a receiver waiting for a
// datagram that never comes fails the test instead of hanging it.
class Watchdog {
 public:
  Watchdog(LinuxBind& bind, std::chrono::milliseconds limit)
      : thread_([this, &bind, limit] {
          std::unique_lock lk(mu_);
          if (!cv_.wait_for(lk, limit, [this] { return done_; })) {
            fired_ = true;
            bind.close();
          }
        }) {}
  ~Watchdog() { stop(); }
  void stop() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  bool fired() const { return fired_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

struct Received {
  std::vector<Packet> data;
  std::vector<Endpoint> from;
  int max_per_call = 0;
};

// Receives `want` datagrams on receiver i with `slots` slots of `buf_size` bytes each.
Received collect(LinuxBind& b, int i, size_t want, size_t slots = Bind::kMaxBatch,
                 size_t buf_size = Bind::kMaxDatagramSize) {
  Received out;
  std::vector<Packet> bufs(slots, Packet(buf_size));
  std::vector<Bind::RecvMsg> msgs(slots);
  Watchdog dog(b, 5s);
  for (int calls = 0; out.data.size() < want && calls < 10000; ++calls) {
    for (size_t j = 0; j < slots; ++j) msgs[j] = {bufs[j], 0, {}};
    const int n = b.receive_batch(i, msgs);
    if (n == Bind::kClosed) break;
    if (n < 0) continue;
    EXPECT_LE(size_t(n), slots);
    out.max_per_call = std::max(out.max_per_call, n);
    for (int j = 0; j < n; ++j) {
      out.data.emplace_back(bufs[j].begin(), bufs[j].begin() + long(msgs[j].len));
      out.from.push_back(msgs[j].from);
    }
  }
  dog.stop();
  EXPECT_FALSE(dog.fired()) << "timed out with " << out.data.size() << " of " << want;
  return out;
}

void expect_same(const std::vector<Packet>& sent, const std::vector<Packet>& got) {
  ASSERT_EQ(got.size(), sent.size());
  for (size_t k = 0; k < sent.size(); ++k) {
    ASSERT_EQ(got[k].size(), sent[k].size()) << "datagram " << k;
    ASSERT_TRUE(got[k] == sent[k]) << "datagram " << k << " differs";
  }
}

struct Pair {
  Pair(LinuxBindOptions tx_opts, LinuxBindOptions rx_opts) : tx(tx_opts), rx(rx_opts) {
    tx_port = tx.open(0);
    rx_port = rx.open(0);
    EXPECT_GT(tx_port, 0);
    EXPECT_GT(rx_port, 0);
  }
  LinuxBind tx;
  LinuxBind rx;
  int tx_port = 0;
  int rx_port = 0;
};

// --- batches through every offload combination, both families -------------------------

struct Mode {
  int family;
  bool gso;
  bool gro;
};

class BindBatch : public ::testing::TestWithParam<Mode> {};

std::string mode_name(const ::testing::TestParamInfo<Mode>& info) {
  return std::string(info.param.family == 4 ? "v4" : "v6") + (info.param.gso ? "_gso" : "_nogso") +
         (info.param.gro ? "_gro" : "_nogro");
}

INSTANTIATE_TEST_SUITE_P(Modes, BindBatch,
                         ::testing::Values(Mode{4, true, true}, Mode{4, true, false},
                                           Mode{4, false, true}, Mode{4, false, false},
                                           Mode{6, true, true}, Mode{6, true, false},
                                           Mode{6, false, true}, Mode{6, false, false}),
                         mode_name);

TEST_P(BindBatch, FullBatchArrivesIntactAndInOrder) {
  const Mode m = GetParam();
  Pair p({.gso = m.gso, .gro = m.gro}, {.gso = m.gso, .gro = m.gro});
  // Offloads are on exactly when asked for (this needs Linux 5.0+, as the bind targets).
  EXPECT_EQ(p.tx.gso_enabled(m.family), m.gso);
  EXPECT_EQ(p.rx.gro_enabled(m.family), m.gro);
  const auto pkts = make_batch(full_batch_sizes());
  Endpoint to = endpoint(m.family, uint16_t(p.rx_port));
  EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
  const Received got = collect(p.rx, m.family == 4 ? 0 : 1, pkts.size());
  expect_same(pkts, got.data);
  for (const Endpoint& f : got.from) {
    EXPECT_EQ(f.port(), p.tx_port);
    EXPECT_EQ(f.ip(), endpoint(m.family, 0).ip());
    EXPECT_EQ(f.local, endpoint(m.family, 0).ip());  // pktinfo survives the split
  }
  // 65 datagrams: two trains (46 x 1400 fill one IP packet's worth; then 18 + the tail).
  if (m.gso) {
    EXPECT_EQ(p.tx.gso_sends(), 2u);
  } else {
    EXPECT_EQ(p.tx.gso_sends(), 0u);
  }
  // Loopback hands a local GSO train to a GRO socket whole, so the bind must split it.
  if (m.gso && m.gro) {
    EXPECT_EQ(p.rx.gro_trains(), 2u);
  }
  if (!m.gro) {
    EXPECT_EQ(p.rx.gro_trains(), 0u);
  }
  // Batching works: more than one datagram per receive call.
  EXPECT_GT(got.max_per_call, 1);
}

TEST_P(BindBatch, MixedSizesArriveIntactAndInOrder) {
  const Mode m = GetParam();
  Pair p({.gso = m.gso, .gro = m.gro}, {.gso = m.gso, .gro = m.gro});
  // Runs of equal sizes, growing sizes (which must end a train), empty datagrams (never in a
  // train), one-byte ones, and a 60000-byte one (beyond any train's payload budget).
  const std::vector<size_t> sizes = {1400, 1400, 1400, 700,  1400, 0,     1,    1,    1,
                                     1,    1400, 2000, 2000, 100,  60000, 1200, 1200, 1200,
                                     1300, 0,    0,    32,   32,   32,    32,   32,   148};
  const auto pkts = make_batch(sizes);
  Endpoint to = endpoint(m.family, uint16_t(p.rx_port));
  for (int rep = 0; rep < 3; ++rep) {
    EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
    expect_same(pkts, collect(p.rx, m.family == 4 ? 0 : 1, pkts.size()).data);
  }
}

TEST_P(BindBatch, SingleDatagramMethodsStillWork) {
  const Mode m = GetParam();
  Pair p({.gso = m.gso, .gro = m.gro}, {.gso = m.gso, .gro = m.gro});
  Endpoint to = endpoint(m.family, uint16_t(p.rx_port));
  const auto pkts = make_batch(full_batch_sizes());
  // A batch sent as a train, read with receive(): one datagram per call, none lost.
  EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
  std::vector<Packet> got;
  Packet buf(65536 + 64);
  Watchdog dog(p.rx, 5s);
  for (int calls = 0; got.size() < pkts.size() && calls < 1000; ++calls) {
    Endpoint from;
    const long n = p.rx.receive(m.family == 4 ? 0 : 1, buf, from);
    if (n == Bind::kClosed) break;
    if (n < 0) continue;
    EXPECT_EQ(from.port(), p.tx_port);
    got.emplace_back(buf.begin(), buf.begin() + n);
  }
  dog.stop();
  expect_same(pkts, got);
  // And send() one at a time.
  for (const Packet& pkt : pkts) EXPECT_TRUE(p.tx.send(pkt, to));
  expect_same(pkts, collect(p.rx, m.family == 4 ? 0 : 1, pkts.size()).data);
}

// --- GRO trains and small caller arrays or buffers ------------------------------------

TEST(BindLinux, TrainLargerThanSlotsIsCarriedOver) {
  Pair p({}, {});
  Endpoint to = endpoint(4, uint16_t(p.rx_port));
  const auto pkts = make_batch(full_batch_sizes());
  EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
  // 5 slots against trains of 46 and 19: most of each train waits inside the bind.
  const Received got = collect(p.rx, 0, pkts.size(), 5);
  expect_same(pkts, got.data);
  EXPECT_EQ(p.rx.gro_trains(), 2u);
  EXPECT_EQ(got.max_per_call, 5);
}

TEST(BindLinux, SmallBuffersWithGroStillGetEveryDatagram) {
  Pair p({}, {});
  Endpoint to = endpoint(4, uint16_t(p.rx_port));
  const auto pkts = make_batch(full_batch_sizes());
  EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
  // 2 KiB buffers cannot take a whole train: the bind reads it into its own buffer.
  expect_same(pkts, collect(p.rx, 0, pkts.size(), 16, 2048).data);
  EXPECT_EQ(p.rx.recv_truncated(), 0u);
  // A datagram larger than the slot's buffer is dropped, counted, and does not disturb the
  // ones around it.
  const auto mixed = make_batch({100, 3000, 200});
  EXPECT_EQ(send_all(p.tx, mixed, to), 3u);
  const Received got = collect(p.rx, 0, 2, 16, 2048);
  ASSERT_EQ(got.data.size(), 2u);
  EXPECT_TRUE(got.data[0] == mixed[0]);
  EXPECT_TRUE(got.data[1] == mixed[2]);
  EXPECT_EQ(p.rx.recv_truncated(), 1u);
}

TEST(BindLinux, SmallBuffersWithoutGroDropOnlyTheOversizeDatagram) {
  Pair p({.gso = false, .gro = false}, {.gso = false, .gro = false});
  Endpoint to = endpoint(4, uint16_t(p.rx_port));
  const auto mixed = make_batch({100, 3000, 200, 300});
  EXPECT_EQ(send_all(p.tx, mixed, to), 4u);
  const Received got = collect(p.rx, 0, 3, 16, 2048);
  ASSERT_EQ(got.data.size(), 3u);
  EXPECT_TRUE(got.data[0] == mixed[0]);
  EXPECT_TRUE(got.data[1] == mixed[2]);
  EXPECT_TRUE(got.data[2] == mixed[3]);
  EXPECT_EQ(p.rx.recv_truncated(), 1u);
}

// --- edge cases --------------------------------------------------------------------------

TEST(BindLinux, ZeroLengthDatagramIsNotClosed) {
  for (int family : {4, 6}) {
    Pair p({}, {});
    Endpoint to = endpoint(family, uint16_t(p.rx_port));
    const Packet empty;
    const std::span<const uint8_t> one[] = {empty};
    EXPECT_EQ(p.tx.send_batch(one, to), 1u);
    Packet buf(Bind::kMaxDatagramSize);
    Bind::RecvMsg msg{buf, 12345, {}};
    EXPECT_EQ(p.rx.receive_batch(family == 4 ? 0 : 1, {&msg, 1}), 1);
    EXPECT_EQ(msg.len, 0u);
    EXPECT_EQ(msg.from.port(), p.tx_port);
    // And through the single-datagram pair.
    EXPECT_TRUE(p.tx.send({}, to));
    Endpoint from;
    EXPECT_EQ(p.rx.receive(family == 4 ? 0 : 1, buf, from), 0);
  }
}

TEST(BindLinux, CloseUnblocksReceiveBatch) {
  LinuxBind b;
  ASSERT_GT(b.open(0), 0);
  std::atomic<int> result{0};
  std::atomic<bool> returned{false};
  std::thread t([&] {
    Packet buf(Bind::kMaxDatagramSize);
    Bind::RecvMsg msg{buf, 0, {}};
    result = b.receive_batch(1, {&msg, 1});
    returned = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(returned);
  const auto start = std::chrono::steady_clock::now();
  b.close();
  t.join();
  EXPECT_EQ(result, int(Bind::kClosed));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);  // woken, not timed out
  Packet buf(16);
  Bind::RecvMsg msg{buf, 0, {}};
  EXPECT_EQ(b.receive_batch(0, {&msg, 1}), int(Bind::kClosed));
}

TEST(BindLinux, ReopenOnNewPortMovesBlockedReceiver) {
  LinuxBind tx;
  LinuxBind rx;
  ASSERT_GT(tx.open(0), 0);
  const int first = rx.open(0);
  ASSERT_GT(first, 0);
  std::atomic<int> n{0};
  Packet got;
  std::thread t([&] {
    Packet buf(Bind::kMaxDatagramSize);
    std::vector<Bind::RecvMsg> msgs(1, Bind::RecvMsg{buf, 0, {}});
    Watchdog dog(rx, 5s);
    for (int calls = 0; calls < 100; ++calls) {
      const int r = rx.receive_batch(0, msgs);
      if (r == 0 || r == -1) continue;
      n = r;
      if (r > 0) got.assign(buf.begin(), buf.begin() + long(msgs[0].len));
      break;
    }
  });
  std::this_thread::sleep_for(50ms);
  const int second = rx.open(0);  // a re-open while the receiver waits on the old socket
  ASSERT_GT(second, 0);
  EXPECT_NE(second, first);
  Endpoint to = endpoint(4, uint16_t(second));
  const Packet data = make_datagram(7, 100);
  EXPECT_TRUE(tx.send(data, to));
  t.join();
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(got == data);
  // Re-opening on an explicit port (the old one, now free) works too.
  EXPECT_EQ(rx.open(uint16_t(first)), first);
  Endpoint to_first = endpoint(6, uint16_t(first));
  EXPECT_TRUE(tx.send(data, to_first));
  expect_same({data}, collect(rx, 1, 1).data);
}

TEST(BindLinux, OldPortIsFreeAsSoonAsReopenReturns) {
  // A receiver blocked in poll() on the old socket holds its file; open() must not return
  // before the old socket is really gone, or switching back to that port fails (EADDRINUSE).
  LinuxBind rx;
  const int a = rx.open(0);
  ASSERT_GT(a, 0);
  LinuxBind probe;
  const int b = probe.open(0);  // a second free port, released again below
  ASSERT_GT(b, 0);
  probe.close();
  std::atomic<bool> stop{false};
  std::vector<std::thread> receivers;
  for (int i = 0; i < 2; ++i) {
    receivers.emplace_back([&, i] {
      Packet buf(Bind::kMaxDatagramSize);
      std::vector<Bind::RecvMsg> msgs(1, Bind::RecvMsg{buf, 0, {}});
      for (int calls = 0; calls < 1000 && !stop; ++calls)
        if (rx.receive_batch(i, msgs) == int(Bind::kClosed)) break;
    });
  }
  std::this_thread::sleep_for(20ms);
  for (int round = 0; round < 5; ++round) {
    ASSERT_EQ(rx.open(uint16_t(b)), b) << "round " << round;
    ASSERT_EQ(rx.open(uint16_t(a)), a) << "round " << round;
  }
  stop = true;
  rx.close();
  for (auto& t : receivers) t.join();
}

TEST(BindLinux, ReopenAfterClose) {
  LinuxBind tx;
  LinuxBind rx;
  ASSERT_GT(tx.open(0), 0);
  ASSERT_GT(rx.open(0), 0);
  rx.close();
  const int port = rx.open(0);
  ASSERT_GT(port, 0);
  Endpoint to = endpoint(4, uint16_t(port));
  const auto pkts = make_batch({500, 500, 500});
  EXPECT_EQ(send_all(tx, pkts, to), 3u);
  expect_same(pkts, collect(rx, 0, 3).data);
}

TEST(BindLinux, SendToClosedPortOrClosedBindDoesNotCrash) {
  LinuxBind tx;
  ASSERT_GT(tx.open(0), 0);
  uint16_t dead_port;
  {
    LinuxBind gone;
    dead_port = uint16_t(gone.open(0));
  }
  const auto pkts = make_batch(full_batch_sizes());
  for (int family : {4, 6}) {
    Endpoint to = endpoint(family, dead_port);
    // An unconnected socket does not see ICMP port-unreachable; all are handed over.
    for (int rep = 0; rep < 3; ++rep) EXPECT_EQ(send_all(tx, pkts, to), pkts.size());
  }
  Endpoint invalid;
  EXPECT_EQ(send_all(tx, pkts, invalid), 0u);
  EXPECT_FALSE(tx.send(pkts[0], invalid));
  tx.close();
  Endpoint to = endpoint(4, dead_port);
  EXPECT_EQ(send_all(tx, pkts, to), 0u);
  EXPECT_FALSE(tx.send(pkts[0], to));
  EXPECT_EQ(tx.send_batch({}, to), 0u);
}

// --- sticky source and GSO failures --------------------------------------------------------

TEST(BindLinux, StickySourceIsUsedAndDroppedWhenGone) {
  for (bool gso : {true, false}) {
    Pair p({.gso = gso}, {});
    Endpoint to = endpoint(4, uint16_t(p.rx_port));
    to.local = *IpAddress::parse("127.0.0.1");
    const auto pkts = make_batch(full_batch_sizes());
    EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
    EXPECT_EQ(to.local, *IpAddress::parse("127.0.0.1"));
    expect_same(pkts, collect(p.rx, 0, pkts.size()).data);
    // A source address this host does not have (TEST-NET-1): the kernel refuses it, the
    // bind forgets it and sends from whatever the kernel picks.
    to.local = *IpAddress::parse("192.0.2.1");
    EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
    EXPECT_EQ(to.local.family, 0);
    expect_same(pkts, collect(p.rx, 0, pkts.size()).data);
  }
}

std::atomic<int> g_refused{0};
std::atomic<int> g_refuse_errno{EIO};

bool has_segment_cmsg(const msghdr& h) {
  if (!h.msg_control) return false;
  msghdr copy = h;
  for (cmsghdr* c = CMSG_FIRSTHDR(&copy); c; c = CMSG_NXTHDR(&copy, c))
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_SEGMENT) return true;
  return false;
}

// As a device without checksum offload would: refuses any GSO send (first message only, as
// sendmmsg reports errors), passes everything before it to the kernel.
int refusing_sendmmsg(int fd, mmsghdr* msgs, unsigned int n, int flags) {
  unsigned int ok = 0;
  while (ok < n && !has_segment_cmsg(msgs[ok].msg_hdr)) ++ok;
  if (ok == 0 && n > 0) {
    ++g_refused;
    errno = g_refuse_errno;
    return -1;
  }
  return ::sendmmsg(fd, msgs, ok, flags);
}

TEST(BindLinux, GsoEioResendsWithoutGsoAndTurnsItOff) {
  for (int family : {4, 6}) {
    g_refused = 0;
    g_refuse_errno = EIO;
    Pair p({}, {});
    p.tx.set_sendmmsg_for_test(refusing_sendmmsg);
    ASSERT_TRUE(p.tx.gso_enabled(family));
    Endpoint to = endpoint(family, uint16_t(p.rx_port));
    const auto pkts = make_batch(full_batch_sizes());
    EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
    EXPECT_EQ(g_refused, 1);
    EXPECT_FALSE(p.tx.gso_enabled(family));
    EXPECT_EQ(p.tx.gso_sends(), 0u);
    expect_same(pkts, collect(p.rx, family == 4 ? 0 : 1, pkts.size()).data);
    // Off for good, also after a re-open; the other family is untouched.
    EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
    EXPECT_EQ(g_refused, 1);
    expect_same(pkts, collect(p.rx, family == 4 ? 0 : 1, pkts.size()).data);
    ASSERT_GT(p.tx.open(0), 0);
    EXPECT_FALSE(p.tx.gso_enabled(family));
    EXPECT_TRUE(p.tx.gso_enabled(family == 4 ? 6 : 4));
  }
}

TEST(BindLinux, GsoEinvalResendsWithoutGsoButKeepsIt) {
  g_refused = 0;
  g_refuse_errno = EINVAL;
  Pair p({}, {});
  p.tx.set_sendmmsg_for_test(refusing_sendmmsg);
  Endpoint to = endpoint(4, uint16_t(p.rx_port));
  // Sent as a train in the middle of the batch: the datagrams before it go out first.
  const auto pkts = make_batch({10, 1400, 1400, 1400, 1400, 20});
  EXPECT_EQ(send_all(p.tx, pkts, to), pkts.size());
  EXPECT_EQ(g_refused, 1);
  EXPECT_TRUE(p.tx.gso_enabled(4));
  expect_same(pkts, collect(p.rx, 0, pkts.size()).data);
}

TEST(BindLinux, ConcurrentSendersAllArrive) {
  Pair p({}, {});
  constexpr int kThreads = 3;
  constexpr int kBatches = 20;
  constexpr int kPerBatch = 16;
  std::vector<std::thread> senders;
  std::atomic<size_t> sent{0};
  for (int t = 0; t < kThreads; ++t) {
    senders.emplace_back([&, t] {
      Endpoint to = endpoint(4, uint16_t(p.rx_port));
      for (int b = 0; b < kBatches; ++b) {
        std::vector<Packet> pkts;
        for (int k = 0; k < kPerBatch; ++k)
          pkts.push_back(make_datagram(uint32_t((t << 16) | (b * kPerBatch + k)), 1000));
        sent += send_all(p.tx, pkts, to);
      }
    });
  }
  const Received got = collect(p.rx, 0, kThreads * kBatches * kPerBatch);
  for (std::thread& s : senders) s.join();
  EXPECT_EQ(sent, size_t(kThreads * kBatches * kPerBatch));
  ASSERT_EQ(got.data.size(), size_t(kThreads * kBatches * kPerBatch));
  // Each sender's datagrams arrive in its own order and intact.
  uint32_t next[kThreads] = {};
  for (const Packet& d : got.data) {
    uint32_t seq;
    std::memcpy(&seq, d.data(), 4);
    const uint32_t t = seq >> 16;
    ASSERT_LT(t, uint32_t(kThreads));
    EXPECT_EQ(seq & 0xffff, next[t]);
    next[t] = (seq & 0xffff) + 1;
    EXPECT_TRUE(d == make_datagram(seq, 1000));
  }
}

}  // namespace
}  // namespace meshwg::dataplane
