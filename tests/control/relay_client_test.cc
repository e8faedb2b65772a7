// The relay client (control/relay_client.h) against the real relay server (control/relay_server.h)
// on loopback: authentication both ways, payloads between two clients, PeerAbsent, a client
// configured with the wrong server key never comes up, and a relay restart is survived by
// reconnecting with backoff. Clients are driven by a poll loop as the control thread drives
// them; every wait is bounded (5 s).
#include "control/relay_client.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <memory>
#include <thread>

#include "control/relay_server.h"
#include "tests/control/test_keys.h"

namespace meshwg::control {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using Keys = testing::TestKeys;

// A relay server on its own thread, on 127.0.0.1:port (0: any).
struct ServerThread {
  Keys keys;
  std::unique_ptr<RelayServer> server;
  int stop_fd = ::eventfd(0, EFD_CLOEXEC);
  std::thread t;
  bool start(uint16_t port) {
    server = std::make_unique<RelayServer>(keys.priv.span());
    std::string err;
    if (!server->open(*dataplane::Endpoint::parse("127.0.0.1:" + std::to_string(port)), err)) {
      ADD_FAILURE() << err;
      return false;
    }
    t = std::thread([this] { server->run(stop_fd); });
    return true;
  }
  void stop() {
    if (!t.joinable()) return;
    const uint64_t one = 1;
    (void)!::write(stop_fd, &one, sizeof(one));
    t.join();
    server.reset();
    uint64_t v;
    (void)!::read(stop_fd, &v, sizeof(v));
  }
  ~ServerThread() {
    stop();
    ::close(stop_fd);
  }
};

RelayClientOptions fast() {
  RelayClientOptions o;
  o.backoff_min = 50ms;
  o.backoff_max = 400ms;
  o.connect_timeout = 2000ms;
  return o;
}

// Runs the clients' poll loop until pred() or the limit.
template <class Pred>
bool pump(std::vector<RelayClient*> cs, Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    for (RelayClient* c : cs) c->tick(Clock::now());
    if (pred()) return true;
    std::vector<pollfd> fds;
    for (RelayClient* c : cs) fds.push_back({c->fd(), c->events(), 0});
    (void)::poll(fds.data(), fds.size(), 20);
    for (size_t i = 0; i < cs.size(); ++i)
      if (fds[i].fd >= 0 && fds[i].revents) cs[i]->on_ready(fds[i].revents, Clock::now());
  }
  return pred();
}

struct Received {
  crypto::PublicKey src{};
  std::vector<uint8_t> payload;
};

TEST(RelayClient, TwoClientsExchangePayloadsThroughTheRelay) {
  ASSERT_TRUE(crypto::init());
  ServerThread srv;
  ASSERT_TRUE(srv.start(0));
  const auto at = srv.server->local();
  Keys ka, kb;
  RelayClient a(ka.priv, ka.pub, srv.keys.pub, at, fast()), b(kb.priv, kb.pub, srv.keys.pub, at, fast());
  std::vector<Received> got_b;
  b.on_receive = [&](const crypto::PublicKey& src, std::span<const uint8_t> p) {
    got_b.push_back({src, {p.begin(), p.end()}});
  };
  int ups = 0;
  a.on_state = [&](bool up) { ups += up; };
  ASSERT_TRUE(pump({&a, &b}, [&] { return a.up() && b.up(); }));
  EXPECT_EQ(ups, 1);
  EXPECT_FALSE(a.send(ka.pub, std::vector<uint8_t>(kRelayMaxPayload + 1, 0)))
      << "an over-long payload is refused";
  std::vector<uint8_t> big(60000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i * 7);
  ASSERT_TRUE(a.send(kb.pub, std::vector<uint8_t>{1, 2, 3}));
  ASSERT_TRUE(a.send(kb.pub, big));
  ASSERT_TRUE(pump({&a, &b}, [&] { return got_b.size() == 2; }));
  EXPECT_EQ(got_b[0].src, ka.pub);
  EXPECT_EQ(got_b[0].payload, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(got_b[1].payload, big) << "in order and intact";

  Keys nobody;
  bool absent = false;
  a.on_absent = [&](const crypto::PublicKey& k) { absent = k == nobody.pub; };
  ASSERT_TRUE(a.send(nobody.pub, std::vector<uint8_t>{9}));
  EXPECT_TRUE(pump({&a, &b}, [&] { return absent; }));
  EXPECT_GE(srv.server->count(RelayServerCounter::kAuthenticated), 2u);
}

TEST(RelayClient, QueuedSendsAreBoundedAndGoOutInOrder) {
  ASSERT_TRUE(crypto::init());
  ServerThread srv;
  ASSERT_TRUE(srv.start(0));
  const auto at = srv.server->local();
  Keys ka, kb;
  auto small = fast();
  small.max_queued_bytes = 8192;
  RelayClient a(ka.priv, ka.pub, srv.keys.pub, at, small), b(kb.priv, kb.pub, srv.keys.pub, at, fast());
  std::vector<std::vector<uint8_t>> got;
  b.on_receive = [&](const crypto::PublicKey&, std::span<const uint8_t> p) { got.emplace_back(p.begin(), p.end()); };
  ASSERT_TRUE(pump({&a, &b}, [&] { return a.up() && b.up(); }));
  // Frames of 4 + 32 + 1000 bytes: 7 fit in 8192, the 8th is refused and counted.
  const auto payload = [](uint8_t n) { return std::vector<uint8_t>(1000, n); };
  for (uint8_t i = 0; i < 7; ++i) ASSERT_TRUE(a.queue_send(kb.pub, payload(i))) << int(i);
  EXPECT_FALSE(a.queue_send(kb.pub, payload(7)));
  EXPECT_EQ(a.dropped(), 1u);
  ASSERT_TRUE(a.flush());
  // Once written, the queue takes more; all arrive whole and in the order queued.
  ASSERT_TRUE(pump({&a, &b}, [&] { return got.size() == 7; }));
  for (uint8_t i = 8; i < 15; ++i) ASSERT_TRUE(a.queue_send(kb.pub, payload(i))) << int(i);
  ASSERT_TRUE(pump({&a, &b}, [&] { return got.size() == 14; }));  // written on POLLOUT
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i], payload(uint8_t(i < 7 ? i : i + 1))) << i;
}

TEST(RelayClient, WrongServerKeyNeverComesUp) {
  ASSERT_TRUE(crypto::init());
  ServerThread srv;
  ASSERT_TRUE(srv.start(0));
  Keys ka, other;
  RelayClient a(ka.priv, ka.pub, other.pub, srv.server->local(), fast());
  EXPECT_FALSE(pump({&a}, [&] { return a.up(); }, 1500ms));
  EXPECT_GE(a.connects(), 2u) << "it keeps trying, with backoff";
  EXPECT_LE(a.connects(), 12u) << "backoff bounds the attempts (50 ms doubling to 400 ms)";
  EXPECT_FALSE(a.send(ka.pub, std::vector<uint8_t>{1}));
  EXPECT_EQ(a.dropped(), 1u);
}

TEST(RelayClient, ReconnectsAfterTheRelayRestarts) {
  ASSERT_TRUE(crypto::init());
  ServerThread srv;
  ASSERT_TRUE(srv.start(0));
  const auto at = srv.server->local();
  Keys ka, kb;
  RelayClient a(ka.priv, ka.pub, srv.keys.pub, at, fast()), b(kb.priv, kb.pub, srv.keys.pub, at, fast());
  size_t got = 0;
  b.on_receive = [&](const crypto::PublicKey&, std::span<const uint8_t>) { ++got; };
  int downs = 0;
  a.on_state = [&](bool up) { downs += !up; };
  ASSERT_TRUE(pump({&a, &b}, [&] { return a.up() && b.up(); }));

  srv.stop();
  ASSERT_TRUE(pump({&a, &b}, [&] { return !a.up() && !b.up(); }));
  EXPECT_EQ(downs, 1);
  // The same key (start() reuses srv.keys) on the same port, as a restarted meshwg-server.
  ASSERT_TRUE(srv.start(at.port()));
  ASSERT_TRUE(pump({&a, &b}, [&] { return a.up() && b.up(); }));
  ASSERT_TRUE(a.send(kb.pub, std::vector<uint8_t>{7}));
  EXPECT_TRUE(pump({&a, &b}, [&] { return got == 1; }));
}

}  // namespace
}  // namespace meshwg::control
