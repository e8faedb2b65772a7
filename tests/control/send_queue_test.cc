// control/send_queue: the byte stream written through a real socket pair must equal a naive
// model (a string of everything accepted, in order), with the limit honoured exactly.
#include "control/send_queue.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace meshwg::control {
namespace {

using Bytes = std::vector<uint8_t>;

struct Pair {
  int fd[2] = {-1, -1};
  Pair() {
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd), 0);
    const int small = 4096;  // partial writes and EAGAIN come quickly
    ::setsockopt(fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    ::fcntl(fd[1], F_SETFL, O_NONBLOCK);
  }
  ~Pair() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  // Reads what is there (up to max bytes) from the far end.
  void read_some(std::string& into, size_t max) {
    char buf[8192];
    const ssize_t n = ::recv(fd[1], buf, std::min(max, sizeof(buf)), 0);
    if (n > 0) into.append(buf, size_t(n));
  }
};

std::span<const uint8_t> bytes_of(const Bytes& b) { return {b.data(), b.size()}; }

TEST(SendQueue, TheLimitIsExactAndPushIsExempt) {
  SendQueue q(100);
  const Bytes a(60, 1), b(41, 2), c(40, 3), d(10, 4);
  EXPECT_TRUE(q.append({bytes_of(a)}));
  EXPECT_FALSE(q.append({bytes_of(b)})) << "60 + 41 > 100";
  EXPECT_EQ(q.size(), 60u) << "a refused append adds nothing";
  EXPECT_TRUE(q.append({bytes_of(c), {}})) << "60 + 40 == 100 fits";
  q.push(bytes_of(d));
  EXPECT_EQ(q.size(), 110u);
  EXPECT_FALSE(q.append({bytes_of(Bytes(1, 5))}));
  q.clear();
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(q.append({bytes_of(b), bytes_of(c)})) << "41 + 40 fit once cleared";
}

TEST(SendQueue, StreamMatchesANaiveModelThroughPartialWrites) {
  Pair p;
  std::mt19937 rng(7);
  constexpr size_t kLimit = 6000;
  SendQueue q(kLimit, 2048);
  std::string model, received;
  size_t accepted_parts = 0, refused = 0, writes = 0;
  for (int i = 0; i < 3000; ++i) {
    const int op = int(rng() % 10);
    if (op < 6) {
      std::vector<Bytes> parts(1 + rng() % 3);
      size_t total = 0;
      for (auto& part : parts) {
        part.resize(rng() % 700);
        for (auto& x : part) x = uint8_t(rng());
        total += part.size();
      }
      const size_t before = q.size();
      bool ok;
      if (parts.size() == 1) ok = q.append({bytes_of(parts[0])});
      else if (parts.size() == 2) ok = q.append({bytes_of(parts[0]), bytes_of(parts[1])});
      else ok = q.append({bytes_of(parts[0]), bytes_of(parts[1]), bytes_of(parts[2])});
      ASSERT_EQ(ok, before + total <= kLimit) << "at step " << i;
      if (ok) {
        for (const auto& part : parts) model.append(part.begin(), part.end());
        accepted_parts += parts.size();
      } else {
        ++refused;
        ASSERT_EQ(q.size(), before);
      }
    } else if (op < 8) {
      ASSERT_TRUE(q.write_to(p.fd[0])) << std::strerror(errno);
      ++writes;
    } else {
      p.read_some(received, rng() % 5000);
    }
    ASSERT_LE(received.size() + q.size(), model.size());  // the rest is in the socket
  }
  // Drain: every accepted byte arrives, in order, once.
  for (int i = 0; i < 100000 && !q.empty(); ++i) {
    ASSERT_TRUE(q.write_to(p.fd[0]));
    p.read_some(received, 8192);
  }
  ASSERT_TRUE(q.empty());
  for (int i = 0; i < 1000 && received.size() < model.size(); ++i) p.read_some(received, 8192);
  EXPECT_EQ(received.size(), model.size());
  EXPECT_TRUE(received == model) << "the stream differs from the model";
  EXPECT_GT(refused, 0u) << "the limit was never reached: the test did not exercise it";
  EXPECT_GT(accepted_parts, 1000u);
  EXPECT_GT(writes, 100u);
}

TEST(SendQueue, AFatalSocketErrorIsReported) {
  Pair p;
  ::close(p.fd[1]);
  p.fd[1] = -1;
  SendQueue q(1000);
  ASSERT_TRUE(q.append({bytes_of(Bytes(10, 1))}));
  errno = 0;
  EXPECT_FALSE(q.write_to(p.fd[0]));
  EXPECT_EQ(errno, EPIPE);
  EXPECT_EQ(q.size(), 10u) << "nothing is lost from the queue by a failed write";
}

}  // namespace
}  // namespace meshwg::control
