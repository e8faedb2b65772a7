// Tests for control/relay_server.cc: a RelayServer on 127.0.0.1:0 running on its own thread
// (run() with an eventfd to stop it), and real TCP clients: a small blocking client built on
// control/relay_proto.h, so every byte the server sees is one the test chose. Covered:
// authentication (and its failures: wrong proof, a replayed proof, a low-order key, a bad
// version), forwarding both ways with the exact payload and source key, the largest payload,
// PeerAbsent and its rate limit, Ping, every malformed case the server judges (junk, frames
// before authentication, a lying length, the wrong direction, a second ClientAuth), clients
// vanishing mid-frame (FIN and RST), a slow reader whose queue fills while a third client is
// still served, 2000 clients each sending to a neighbour, a same-key connection replacing
// the old one, the max_clients and max_pending bounds, and the auth and idle timeouts with
// short injected values. Expected counters are written out per case. Every wait is bounded
// (kWait, or the poll deadline of a read).
#include "control/relay_server.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "control/relay_proto.h"
#include "crypto/primitives.h"
#include "tests/control/test_keys.h"

namespace meshwg::control {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Bytes = std::vector<uint8_t>;
using C = RelayServerCounter;

constexpr auto kWait = 5s;

using Keys = testing::TestKeys;

// Polls pred every 2 ms until it holds or `limit` passes.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = kWait) {
  const auto end = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// A relay on 127.0.0.1:0 served by run() on a thread.
class ServerThread {
 public:
  explicit ServerThread(RelayServerOptions opt = {}) {
    EXPECT_TRUE(crypto::init());
    server_ = std::make_unique<RelayServer>(keys_.priv.span(), opt);
    std::string err;
    if (!server_->open(*dataplane::Endpoint::parse("127.0.0.1:0"), err)) {
      ADD_FAILURE() << err;
      return;
    }
    thread_ = std::thread([this] { server_->run(stop_fd_); });
  }
  ~ServerThread() {
    if (thread_.joinable()) {
      const uint64_t one = 1;
      EXPECT_EQ(::write(stop_fd_, &one, sizeof(one)), ssize_t(sizeof(one)));
      thread_.join();
    }
    server_.reset();
    ::close(stop_fd_);
  }
  const RelayServer& server() const { return *server_; }
  uint64_t count(C c) const { return server_->count(c); }
  uint64_t malformed(RelayMalformed m) const { return server_->malformed(m); }
  const dataplane::Endpoint& addr() const { return server_->local(); }
  const crypto::PublicKey& pub() const { return server_->public_key(); }
  bool wait_count(C c, uint64_t want) const {
    return eventually([&] { return count(c) >= want; });
  }

 private:
  Keys keys_;
  std::unique_ptr<RelayServer> server_;
  int stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  std::thread thread_;
};

struct Frame {
  RelayFrameType type;
  Bytes body;
};

// A blocking TCP client speaking relay_proto; every read is bounded by a poll deadline.
class TestClient {
 public:
  Keys keys;
  RelayChallenge challenge{};

  TestClient() = default;
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;
  ~TestClient() { close(); }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }

  // rcvbuf > 0: a small receive buffer (set before connecting, so the window stays small).
  bool connect(const dataplane::Endpoint& to, int rcvbuf = 0) {
    fd_ = ::socket(to.addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    const timeval tv{5, 0};  // bounds every blocking send
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return ::connect(fd_, &to.addr.sa, to.socklen()) == 0;
  }

  bool write(std::span<const uint8_t> d) {
    size_t off = 0;
    while (off < d.size()) {
      const ssize_t n = ::send(fd_, d.data() + off, d.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += size_t(n);
    }
    return true;
  }

  // The next frame, or nullopt on timeout, close or a malformed stream.
  std::optional<Frame> read(std::chrono::milliseconds limit = kWait) {
    const auto end = Clock::now() + limit;
    for (;;) {
      RelayFrame f;
      const auto r = reader_.next(f);
      if (r == RelayFrameReader::Result::kFrame) return Frame{f.type, Bytes(f.body.begin(), f.body.end())};
      if (r == RelayFrameReader::Result::kMalformed) return std::nullopt;
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(end - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, int(left.count())) <= 0) return std::nullopt;
      uint8_t buf[kRelayReadChunk];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return std::nullopt;
      if (reader_.feed({buf, size_t(n)}) != size_t(n)) return std::nullopt;
    }
  }

  // True when the server closes (FIN or RST) within the limit; frames before it are skipped.
  bool closed_by_server(std::chrono::milliseconds limit = kWait) {
    const auto end = Clock::now() + limit;
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(end - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, int(left.count())) <= 0) return false;
      uint8_t buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
      if (n < 0) return false;
    }
  }

  // Reads the ServerHello: the server's key must be `server`.
  bool hello(const crypto::PublicKey& server) {
    const auto f = read();
    if (!f || f->type != RelayFrameType::kServerHello) return false;
    const auto h = parse_server_hello(f->body);
    if (!h || h->server_public != server) return false;
    challenge = h->challenge;
    return true;
  }

  bool send_auth(const crypto::PublicKey& server) {
    RelayProof proof{};
    return relay_client_proof(keys.priv, server, challenge, keys.pub, proof) &&
           write(relay_encode_client_auth(keys.pub, proof));
  }

  // Connect, hello, ClientAuth, AuthOk whose proof verifies.
  bool join(const ServerThread& s, int rcvbuf = 0) {
    if (!connect(s.addr(), rcvbuf) || !hello(s.pub()) || !send_auth(s.pub())) return false;
    const auto f = read();
    if (!f || f->type != RelayFrameType::kAuthOk) return false;
    const auto ok = parse_auth_ok(f->body);
    return ok && relay_verify_server(keys.priv, s.pub(), challenge, keys.pub, *ok);
  }

  bool send_to(const crypto::PublicKey& dst, const Bytes& payload) {
    return write(relay_encode_send(dst, payload));
  }

  // The next frame must be a Recv: its source and payload.
  std::optional<std::pair<crypto::PublicKey, Bytes>> recv_payload(std::chrono::milliseconds limit = kWait) {
    const auto f = read(limit);
    if (!f || f->type != RelayFrameType::kRecv) return std::nullopt;
    const auto r = parse_recv(f->body);
    if (!r) return std::nullopt;
    return std::make_pair(r->src, Bytes(r->payload.begin(), r->payload.end()));
  }

  bool ping_pong(uint8_t v) {
    RelayPingToken t;
    t.fill(v);
    if (!write(relay_encode_ping(t))) return false;
    const auto f = read();
    return f && f->type == RelayFrameType::kPong && parse_ping(f->body) == t;
  }

 private:
  int fd_ = -1;
  RelayFrameReader reader_;
};

Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(seed + i * 13);
  return b;
}

// A sends to B and B gets exactly that from A.
::testing::AssertionResult forwards(TestClient& a, TestClient& b, const Bytes& payload) {
  if (!a.send_to(b.keys.pub, payload)) return ::testing::AssertionFailure() << "send failed";
  const auto got = b.recv_payload();
  if (!got) return ::testing::AssertionFailure() << "nothing received";
  if (got->first != a.keys.pub) return ::testing::AssertionFailure() << "wrong source key";
  if (got->second != payload) return ::testing::AssertionFailure() << "wrong payload";
  return ::testing::AssertionSuccess();
}

// ---- the good path ----

TEST(RelayServer, AuthenticatesAndForwardsBothWays) {
  ServerThread s;
  TestClient a, b;
  ASSERT_TRUE(a.join(s));
  ASSERT_TRUE(b.join(s));
  EXPECT_TRUE(eventually([&] { return s.server().authenticated() == 2; }));
  EXPECT_TRUE(forwards(a, b, pattern(1200, 1)));
  EXPECT_TRUE(forwards(b, a, pattern(77, 2)));
  EXPECT_TRUE(forwards(a, b, {}));
  EXPECT_TRUE(forwards(b, a, pattern(kRelayMaxPayload, 3)));  // the largest frame
  EXPECT_TRUE(forwards(a, a, pattern(10, 4)));                // to itself: harmless
  EXPECT_TRUE(a.ping_pong(9));
  EXPECT_EQ(s.count(C::kAccepted), 2u);
  EXPECT_EQ(s.count(C::kAuthenticated), 2u);
  EXPECT_EQ(s.count(C::kFramesForwarded), 5u);
  EXPECT_EQ(s.count(C::kBytesForwarded), 1200u + 77 + 0 + kRelayMaxPayload + 10);
  EXPECT_EQ(s.count(C::kPings), 1u);
  EXPECT_EQ(s.count(C::kMalformed), 0u);
  a.close();
  EXPECT_TRUE(s.wait_count(C::kClosedByClient, 1));
  EXPECT_TRUE(eventually([&] { return s.server().clients() == 1; }));
}

TEST(RelayServer, PeerAbsentOncePerSecondPerDestination) {
  ServerThread s;
  TestClient a;
  ASSERT_TRUE(a.join(s));
  const Keys nobody, nobody2;
  ASSERT_TRUE(a.send_to(nobody.pub, pattern(5, 1)));
  auto f = a.read();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, RelayFrameType::kPeerAbsent);
  EXPECT_EQ(parse_peer_absent(f->body), nobody.pub);
  // Again at once: suppressed. Another absent key still gets its own.
  ASSERT_TRUE(a.send_to(nobody.pub, pattern(5, 1)));
  ASSERT_TRUE(a.send_to(nobody2.pub, pattern(5, 1)));
  f = a.read();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, RelayFrameType::kPeerAbsent);
  EXPECT_EQ(parse_peer_absent(f->body), nobody2.pub);
  EXPECT_TRUE(a.ping_pong(1));  // nothing else was queued before the Pong
  EXPECT_EQ(s.count(C::kPeerAbsent), 2u);
  EXPECT_EQ(s.count(C::kPeerAbsentSuppressed), 1u);
  // After a second, the same destination is reported again.
  std::this_thread::sleep_for(1100ms);
  ASSERT_TRUE(a.send_to(nobody.pub, {}));
  f = a.read();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, RelayFrameType::kPeerAbsent);
  // Many absent destinations at once: at most 8 reports in any second. Three slots were used
  // (two of them more than a second ago), so 5 free + 2 stale slots = 7 reports now.
  std::vector<Keys> many(20);
  for (const auto& k : many) ASSERT_TRUE(a.send_to(k.pub, {}));
  RelayPingToken tok;
  tok.fill(2);
  ASSERT_TRUE(a.write(relay_encode_ping(tok)));
  size_t reports = 0;
  for (int i = 0; i < 30; ++i) {
    f = a.read();
    ASSERT_TRUE(f);
    if (f->type == RelayFrameType::kPong) break;
    EXPECT_EQ(f->type, RelayFrameType::kPeerAbsent);
    ++reports;
  }
  EXPECT_EQ(reports, 7u);
  EXPECT_EQ(s.count(C::kPeerAbsent), 3u + 7);
  EXPECT_EQ(s.count(C::kPeerAbsentSuppressed), 1u + 13);
}

// ---- authentication failures ----

TEST(RelayServer, WrongProofIsClosedOthersUnaffected) {
  ServerThread s;
  TestClient a, b;
  ASSERT_TRUE(a.join(s));
  ASSERT_TRUE(b.join(s));

  TestClient bad;  // a proof of zeros
  ASSERT_TRUE(bad.connect(s.addr()));
  ASSERT_TRUE(bad.hello(s.pub()));
  ASSERT_TRUE(bad.write(relay_encode_client_auth(bad.keys.pub, RelayProof{})));
  EXPECT_TRUE(bad.closed_by_server());

  TestClient thief;  // claims a's key with a proof made from another private key
  ASSERT_TRUE(thief.connect(s.addr()));
  ASSERT_TRUE(thief.hello(s.pub()));
  RelayProof forged{};
  ASSERT_TRUE(relay_client_proof(thief.keys.priv, s.pub(), thief.challenge, a.keys.pub, forged));
  ASSERT_TRUE(thief.write(relay_encode_client_auth(a.keys.pub, forged)));
  EXPECT_TRUE(thief.closed_by_server());

  // A proof for one connection's challenge is worthless on another (replay).
  TestClient first, replay;
  ASSERT_TRUE(first.connect(s.addr()));
  ASSERT_TRUE(first.hello(s.pub()));
  RelayProof p1{};
  ASSERT_TRUE(relay_client_proof(first.keys.priv, s.pub(), first.challenge, first.keys.pub, p1));
  ASSERT_TRUE(replay.connect(s.addr()));
  ASSERT_TRUE(replay.hello(s.pub()));
  EXPECT_NE(replay.challenge, first.challenge);
  ASSERT_TRUE(replay.write(relay_encode_client_auth(first.keys.pub, p1)));
  EXPECT_TRUE(replay.closed_by_server());

  TestClient low;  // the all-zero (low-order) key
  ASSERT_TRUE(low.connect(s.addr()));
  ASSERT_TRUE(low.hello(s.pub()));
  ASSERT_TRUE(low.write(relay_encode_client_auth(crypto::PublicKey{}, RelayProof{})));
  EXPECT_TRUE(low.closed_by_server());

  TestClient version;  // version 2
  ASSERT_TRUE(version.connect(s.addr()));
  ASSERT_TRUE(version.hello(s.pub()));
  Bytes body(kRelayHelloBody, 0);
  body[0] = 2;
  ASSERT_TRUE(version.write(relay_encode(RelayFrameType::kClientAuth, body)));
  EXPECT_TRUE(version.closed_by_server());

  EXPECT_TRUE(s.wait_count(C::kAuthFailed, 4));
  EXPECT_EQ(s.count(C::kAuthFailed), 4u);
  EXPECT_EQ(s.malformed(RelayMalformed::kBadVersion), 1u);
  EXPECT_EQ(s.count(C::kAuthenticated), 2u);
  // a's key is still a's: the thief did not take it over.
  EXPECT_TRUE(forwards(b, a, pattern(300, 5)));
  EXPECT_TRUE(forwards(a, b, pattern(300, 6)));
  // And the first connection's own proof still works on its own challenge.
  ASSERT_TRUE(first.write(relay_encode_client_auth(first.keys.pub, p1)));
  const auto ok = first.read();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->type, RelayFrameType::kAuthOk);
}

// ---- malformed input ----

struct BadCase {
  const char* name;
  bool authenticate_first;
  Bytes bytes;
  RelayMalformed want;
};

TEST(RelayServer, MalformedInputClosesOnlyThatClient) {
  ServerThread s;
  TestClient a, b;
  ASSERT_TRUE(a.join(s));
  ASSERT_TRUE(b.join(s));
  const RelayPingToken t{};
  const std::vector<BadCase> cases = {
      {"junk", false, Bytes{'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P'}, RelayMalformed::kUnknownType},
      {"junk after auth", true, Bytes{0xde, 0xad, 0xbe, 0xef}, RelayMalformed::kUnknownType},
      {"reserved set", true, Bytes{0x07, 0x01, 0x00, 0x08}, RelayMalformed::kReserved},
      // A length that lies: only the header is sent, the server does not wait for the body.
      {"oversized before auth", false, Bytes{0x04, 0x00, 0xff, 0xff}, RelayMalformed::kOversized},
      {"auth too long", false, Bytes{0x02, 0x00, 0x00, 66}, RelayMalformed::kBadLength},
      {"ping too long", true, Bytes{0x07, 0x00, 0x01, 0x00}, RelayMalformed::kBadLength},
      {"send too short", true, Bytes{0x04, 0x00, 0x00, 0x10}, RelayMalformed::kTooShort},
      {"ping before auth", false, relay_encode_ping(t), RelayMalformed::kNotAuthenticated},
      {"send before auth", false, relay_encode_send(a.keys.pub, Bytes(8, 1)),
       RelayMalformed::kNotAuthenticated},
      {"recv to the server", true, relay_encode_recv(a.keys.pub, Bytes(8, 1)),
       RelayMalformed::kWrongDirection},
      {"hello to the server", true, relay_encode_server_hello(a.keys.pub, RelayChallenge{}),
       RelayMalformed::kWrongDirection},
      {"absent to the server", true, relay_encode_peer_absent(a.keys.pub), RelayMalformed::kWrongDirection},
      {"auth ok to the server", true, relay_encode_auth_ok(RelayProof{}), RelayMalformed::kWrongDirection},
      {"second auth", true, relay_encode_client_auth(a.keys.pub, RelayProof{}), RelayMalformed::kAuthAgain},
  };
  std::array<uint64_t, size_t(RelayMalformed::kCount)> want{};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TestClient x;
    if (c.authenticate_first) {
      ASSERT_TRUE(x.join(s));
    } else {
      ASSERT_TRUE(x.connect(s.addr()));
      ASSERT_TRUE(x.hello(s.pub()));
    }
    ASSERT_TRUE(x.write(c.bytes));
    EXPECT_TRUE(x.closed_by_server());
    ++want[size_t(c.want)];
    EXPECT_TRUE(eventually([&] { return s.malformed(c.want) == want[size_t(c.want)]; }));
    EXPECT_TRUE(forwards(a, b, pattern(64, 7)));
  }
  EXPECT_EQ(s.count(C::kMalformed), cases.size());
  EXPECT_TRUE(forwards(b, a, pattern(1000, 8)));
  EXPECT_TRUE(eventually([&] { return s.server().clients() == 2; }));
}

TEST(RelayServer, ClientsVanishingMidFrame) {
  ServerThread s;
  TestClient a, b;
  ASSERT_TRUE(a.join(s));
  ASSERT_TRUE(b.join(s));
  const Bytes frame = relay_encode_send(a.keys.pub, pattern(5000, 1));
  {  // half a Send, then FIN
    TestClient x;
    ASSERT_TRUE(x.join(s));
    ASSERT_TRUE(x.write({frame.data(), 2500}));
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(s.wait_count(C::kClosedMidFrame, 1));
  {  // part of a ClientAuth, then FIN
    TestClient x;
    ASSERT_TRUE(x.connect(s.addr()));
    ASSERT_TRUE(x.hello(s.pub()));
    RelayProof p{};
    ASSERT_TRUE(relay_client_proof(x.keys.priv, s.pub(), x.challenge, x.keys.pub, p));
    const Bytes auth = relay_encode_client_auth(x.keys.pub, p);
    ASSERT_TRUE(x.write({auth.data(), 20}));
  }
  EXPECT_TRUE(s.wait_count(C::kClosedMidFrame, 2));
  {  // just a header, then RST
    TestClient x;
    ASSERT_TRUE(x.join(s));
    ASSERT_TRUE(x.write({frame.data(), 4}));
    std::this_thread::sleep_for(20ms);
    const linger l{1, 0};
    ::setsockopt(x.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  EXPECT_TRUE(s.wait_count(C::kClosedMidFrame, 3));
  EXPECT_EQ(s.count(C::kClosedMidFrame), 3u);
  EXPECT_EQ(s.count(C::kMalformed), 0u);
  EXPECT_TRUE(forwards(a, b, pattern(100, 2)));
  EXPECT_TRUE(eventually([&] { return s.server().clients() == 2; }));
}

// ---- bounded queues ----

TEST(RelayServer, SlowReaderDropsAreCountedOthersServed) {
  RelayServerOptions opt;
  opt.max_queue_bytes = 128 * 1024;
  ServerThread s(opt);
  TestClient a, b, slow;
  ASSERT_TRUE(a.join(s));
  ASSERT_TRUE(b.join(s));
  ASSERT_TRUE(slow.join(s, 4096));
  // 4 MB to a client that never reads: the kernel buffers take some, the queue 128 KiB, the
  // rest is dropped. a's own sends never block: the server keeps reading it.
  const Bytes payload = pattern(1024, 3);
  const Bytes frame = relay_encode_send(slow.keys.pub, payload);
  Bytes burst;
  for (int i = 0; i < 64; ++i) burst.insert(burst.end(), frame.begin(), frame.end());
  const auto t0 = Clock::now();
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(a.write(burst));
  EXPECT_LT(Clock::now() - t0, kWait);
  EXPECT_TRUE(s.wait_count(C::kDroppedQueueFull, 1));
  // Frames to others still go through at once.
  EXPECT_TRUE(forwards(a, b, pattern(500, 4)));
  EXPECT_TRUE(forwards(b, a, pattern(500, 5)));
  // Every frame was either forwarded or dropped (the counter follows the write: wait for it).
  EXPECT_TRUE(eventually([&] {
    return s.count(C::kFramesForwarded) + s.count(C::kDroppedQueueFull) == 64u * 64 + 2;
  }));
  const uint64_t fwd = s.count(C::kFramesForwarded), dropped = s.count(C::kDroppedQueueFull);
  // What was forwarded to the slow client is bounded by the kernel buffers plus its queue.
  EXPECT_LT((fwd - 2) * frame.size(), 128u * 1024 + 8u * 1024 * 1024);
  EXPECT_GT(dropped, 1000u);
  // The slow client starts reading: what it gets is whole frames from a, in order of sending.
  const auto first = slow.recv_payload();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->first, a.keys.pub);
  EXPECT_EQ(first->second, payload);
  // Resetting it with a full queue is survived.
  const linger l{1, 0};
  ::setsockopt(slow.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  slow.close();
  EXPECT_TRUE(eventually([&] { return s.server().clients() == 2; }));
  EXPECT_TRUE(forwards(a, b, pattern(64, 6)));
}

// Frames read together are written to each destination together (corked); a destination
// whose queue fills with them is written before anything is dropped. With up to 1 MiB read
// per event and the smallest queue, a 160 KiB burst only arrives whole because of that.
TEST(RelayServer, ABurstLargerThanTheQueueArrivesWholeAndInOrder) {
  RelayServerOptions opt;
  opt.max_queue_bytes = 0;  // raised to one largest frame
  opt.max_reads_per_wake = 64;
  ServerThread s(opt);
  TestClient a, b;
  ASSERT_TRUE(a.join(s));
  ASSERT_TRUE(b.join(s, 1 << 22));  // its receive buffer holds the whole burst
  Bytes burst;
  constexpr int kFrames = 160;
  for (int i = 0; i < kFrames; ++i) {
    const Bytes f = relay_encode_send(b.keys.pub, pattern(1000, uint8_t(i)));
    burst.insert(burst.end(), f.begin(), f.end());
  }
  ASSERT_TRUE(a.write(burst));
  ASSERT_TRUE(a.ping_pong(1));  // a Pong to a, corked among nothing: still answered
  for (int i = 0; i < kFrames; ++i) {
    const auto got = b.recv_payload();
    ASSERT_TRUE(got) << "frame " << i;
    ASSERT_EQ(got->second, pattern(1000, uint8_t(i))) << "frame " << i;
  }
  EXPECT_EQ(s.count(C::kDroppedQueueFull), 0u);
  EXPECT_EQ(s.count(C::kFramesForwarded), uint64_t(kFrames));
}

// ---- scale ----

// Raises RLIMIT_NOFILE to at least n (root may raise the hard limit too).
bool ensure_fd_limit(rlim_t n) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  if (rl.rlim_cur >= n) return true;
  rlimit up{n, std::max(rl.rlim_max, n)};
  return ::setrlimit(RLIMIT_NOFILE, &up) == 0;
}

TEST(RelayServer, TwoThousandClientsEachSendToANeighbour) {
  constexpr size_t kClients = 2000;
  ASSERT_TRUE(ensure_fd_limit(2 * kClients + 256)) << "cannot raise RLIMIT_NOFILE";
  ServerThread s;
  std::vector<std::unique_ptr<TestClient>> cs;
  const auto t0 = Clock::now();
  for (size_t i = 0; i < kClients; ++i) {
    cs.push_back(std::make_unique<TestClient>());
    ASSERT_TRUE(cs.back()->join(s)) << "client " << i;
  }
  const auto joined = Clock::now() - t0;
  EXPECT_EQ(s.server().authenticated(), kClients);
  for (size_t i = 0; i < kClients; ++i) {
    Bytes p(8);
    for (size_t j = 0; j < 8; ++j) p[j] = uint8_t(i >> (8 * (j % 2)));
    ASSERT_TRUE(cs[i]->send_to(cs[(i + 1) % kClients]->keys.pub, p));
  }
  for (size_t i = 0; i < kClients; ++i) {
    const size_t from = (i + kClients - 1) % kClients;
    const auto got = cs[i]->recv_payload();
    ASSERT_TRUE(got) << "client " << i;
    EXPECT_EQ(got->first, cs[from]->keys.pub);
    Bytes want(8);
    for (size_t j = 0; j < 8; ++j) want[j] = uint8_t(from >> (8 * (j % 2)));
    EXPECT_EQ(got->second, want);
  }
  const auto total = Clock::now() - t0;
  EXPECT_LT(total, 60s);
  EXPECT_TRUE(eventually([&] { return s.count(C::kFramesForwarded) == kClients; }));
  EXPECT_EQ(s.count(C::kDroppedQueueFull), 0u);
  std::printf("%zu clients joined in %lld ms; all frames delivered after %lld ms\n", kClients,
              (long long)std::chrono::duration_cast<std::chrono::milliseconds>(joined).count(),
              (long long)std::chrono::duration_cast<std::chrono::milliseconds>(total).count());
  cs.clear();
  EXPECT_TRUE(eventually([&] { return s.server().clients() == 0; }));
  EXPECT_EQ(s.count(C::kClosedByClient), kClients);
}

// ---- one connection per key, and the connection bounds ----

TEST(RelayServer, SameKeyReplacesTheOldConnection) {
  ServerThread s;
  TestClient b, a1, a2;
  ASSERT_TRUE(b.join(s));
  ASSERT_TRUE(a1.join(s));
  a2.keys.priv = a1.keys.priv;
  a2.keys.pub = a1.keys.pub;
  ASSERT_TRUE(a2.join(s));
  EXPECT_TRUE(a1.closed_by_server());
  EXPECT_TRUE(s.wait_count(C::kReplaced, 1));
  EXPECT_EQ(s.server().authenticated(), 2u);
  EXPECT_TRUE(forwards(b, a2, pattern(40, 1)));
  EXPECT_TRUE(forwards(a2, b, pattern(40, 2)));
  // The replaced connection leaving later changes nothing for the new one.
  a1.close();
  std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(forwards(b, a2, pattern(40, 3)));
}

TEST(RelayServer, MaxClientsRefusesBeyondTheBound) {
  RelayServerOptions opt;
  opt.max_clients = 3;
  ServerThread s(opt);
  TestClient a, b, c, d;
  ASSERT_TRUE(a.join(s));
  ASSERT_TRUE(b.join(s));
  ASSERT_TRUE(c.connect(s.addr()));
  ASSERT_TRUE(c.hello(s.pub()));
  ASSERT_TRUE(d.connect(s.addr()));  // the kernel accepts; the server closes it unanswered
  EXPECT_FALSE(d.read(2s));
  EXPECT_TRUE(s.wait_count(C::kRejectedFull, 1));
  EXPECT_TRUE(forwards(a, b, pattern(10, 1)));
  c.close();
  EXPECT_TRUE(eventually([&] { return s.server().clients() == 2; }));
  TestClient e;
  EXPECT_TRUE(e.join(s));
}

TEST(RelayServer, UnauthenticatedFloodEvictsOnlyItsOwn) {
  RelayServerOptions opt;
  opt.max_pending = 16;
  ServerThread s(opt);
  TestClient a;
  ASSERT_TRUE(a.join(s));
  std::vector<std::unique_ptr<TestClient>> silent;
  for (int i = 0; i < 100; ++i) {
    silent.push_back(std::make_unique<TestClient>());
    ASSERT_TRUE(silent.back()->connect(s.addr()));
  }
  EXPECT_TRUE(s.wait_count(C::kPendingEvicted, 100 - 16));
  EXPECT_TRUE(eventually([&] { return s.server().clients() == 17; }));
  // A good client still gets in and is served.
  TestClient b;
  ASSERT_TRUE(b.join(s));
  EXPECT_TRUE(forwards(a, b, pattern(200, 1)));
  EXPECT_TRUE(forwards(b, a, pattern(200, 2)));
  EXPECT_EQ(s.count(C::kPendingEvicted), 100u - 16 + 1);
}

// ---- timeouts (injected short) ----

TEST(RelayServer, AuthTimeoutClosesSilentConnections) {
  RelayServerOptions opt;
  opt.auth_timeout = 200ms;
  ServerThread s(opt);
  TestClient silent, partial, good;
  ASSERT_TRUE(silent.connect(s.addr()));
  ASSERT_TRUE(silent.hello(s.pub()));
  ASSERT_TRUE(partial.connect(s.addr()));
  ASSERT_TRUE(partial.hello(s.pub()));
  ASSERT_TRUE(partial.write(Bytes{0x02, 0x00, 0x00, 65, 0x01}));  // a ClientAuth that stops
  ASSERT_TRUE(good.join(s));
  const auto t0 = Clock::now();
  EXPECT_TRUE(silent.closed_by_server());
  EXPECT_TRUE(partial.closed_by_server());
  EXPECT_LT(Clock::now() - t0, 3s);
  EXPECT_TRUE(s.wait_count(C::kAuthTimeout, 2));
  EXPECT_EQ(s.count(C::kAuthTimeout), 2u);
  EXPECT_TRUE(good.ping_pong(1));  // authenticated in time: not affected
}

TEST(RelayServer, IdleTimeoutUnlessTheClientPings) {
  RelayServerOptions opt;
  opt.idle_timeout = 300ms;
  ServerThread s(opt);
  TestClient idle, pinger;
  ASSERT_TRUE(idle.join(s));
  ASSERT_TRUE(pinger.join(s));
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(pinger.ping_pong(uint8_t(i)));
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(idle.closed_by_server());
  EXPECT_TRUE(s.wait_count(C::kIdleTimeout, 1));
  EXPECT_EQ(s.count(C::kIdleTimeout), 1u);
  EXPECT_TRUE(pinger.ping_pong(42));
}

}  // namespace
}  // namespace meshwg::control
