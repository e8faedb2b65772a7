// Tests for control/uapi_server.cc over real UNIX sockets in a temporary directory: reply
// framing, set/get dispatch, bad input (the handler must not be called, the server must
// survive), socket lifecycle (in use, stale file, modes, removal) and timeouts.
#include "control/uapi_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace meshwg::control {
namespace {

using namespace std::chrono_literals;

constexpr char kPub1[] = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";

class FakeHandler : public UapiHandler {
 public:
  int apply_set(const SetRequest& req) override {
    std::lock_guard lk(mu_);
    sets_.push_back(req);
    return result_;
  }
  DeviceSnapshot snapshot() override {
    std::lock_guard lk(mu_);
    ++gets_;
    DeviceSnapshot s;
    s.listen_port = port_;
    PeerSnapshot p;
    EXPECT_TRUE(from_hex(kPub1, p.public_key));
    p.tx_bytes = 42;
    p.allowed_ips.push_back(*dataplane::IpPrefix::parse("10.0.0.1/32"));
    s.peers.push_back(p);
    return s;
  }
  size_t set_count() {
    std::lock_guard lk(mu_);
    return sets_.size();
  }
  SetRequest last_set() {
    std::lock_guard lk(mu_);
    return sets_.back();
  }
  void set_result(int r) {
    std::lock_guard lk(mu_);
    result_ = r;
  }

 private:
  std::mutex mu_;
  std::vector<SetRequest> sets_;
  int gets_ = 0;
  int result_ = 0;
  uint16_t port_ = 51820;
};

std::string expected_get_reply() {
  FakeHandler h;
  return serialize_get(h.snapshot()) + "errno=0\n\n";
}

// A connected client with a receive timeout so a broken server fails the test, not hangs it.
class Client {
 public:
  explicit Client(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~Client() { close(); }
  bool connected() const { return connected_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool send(std::string_view s) {
    while (!s.empty()) {
      const ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      s.remove_prefix(size_t(n));
    }
    return true;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }
  // Returns the next reply: everything up to and including its terminating empty line
  // ("\n\n"; no reply contains one earlier), or what arrived before EOF/timeout.
  std::string read_reply() {
    char buf[4096];
    for (;;) {
      const size_t end = pending_.find("\n\n");
      if (end != std::string::npos) {
        std::string r = pending_.substr(0, end + 2);
        pending_.erase(0, end + 2);
        return r;
      }
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return std::exchange(pending_, {});
      pending_.append(buf, size_t(n));
    }
  }
  // True if the server closed the connection (EOF) within the receive timeout.
  bool closed_by_peer() {
    char buf[256];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string pending_;
};

class UapiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshwg-uapi-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/run/wireguard";  // does not exist yet: listen() must create it
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  std::unique_ptr<UapiServer> started(const std::string& ifname = "wgtest0") {
    auto s = std::make_unique<UapiServer>(ifname, handler_, dir_);
    std::string err;
    EXPECT_TRUE(s->listen(err)) << err;
    s->start();
    return s;
  }

  std::string root_;
  std::string dir_;
  FakeHandler handler_;
};

TEST_F(UapiServerTest, GetReplyFraming) {
  auto srv = started();
  EXPECT_EQ(srv->path(), dir_ + "/wgtest0.sock");
  Client c(srv->path());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("get=1\n\n"));
  const std::string reply = c.read_reply();
  EXPECT_EQ(reply, expected_get_reply());
  EXPECT_NE(reply.find("listen_port=51820\npublic_key="), std::string::npos);
  ASSERT_GE(reply.size(), 10u);
  EXPECT_EQ(reply.substr(reply.size() - 10), "\nerrno=0\n\n");
}

TEST_F(UapiServerTest, SetIsAppliedAndReplyIsErrnoZero) {
  auto srv = started();
  Client c(srv->path());
  ASSERT_TRUE(c.send(std::string("set=1\nlisten_port=1234\npublic_key=") + kPub1 +
                     "\nallowed_ip=10.1.0.0/16\n\n"));
  EXPECT_EQ(c.read_reply(), "errno=0\n\n");
  ASSERT_EQ(handler_.set_count(), 1u);
  const SetRequest r = handler_.last_set();
  EXPECT_EQ(r.listen_port.value_or(0), 1234);
  ASSERT_EQ(r.peers.size(), 1u);
  EXPECT_EQ(r.peers[0].allowed_ips.at(0).prefix.str(), "10.1.0.0/16");
}

TEST_F(UapiServerTest, HandlerErrnoIsReportedPositive) {
  auto srv = started();
  handler_.set_result(EADDRINUSE);
  Client c(srv->path());
  ASSERT_TRUE(c.send("set=1\nlisten_port=1\n\n"));
  EXPECT_EQ(c.read_reply(), "errno=" + std::to_string(EADDRINUSE) + "\n\n");
  handler_.set_result(-EADDRINUSE);  // a wireguard-go-style negative is normalised
  ASSERT_TRUE(c.send("set=1\nlisten_port=1\n\n"));
  EXPECT_EQ(c.read_reply(), "errno=" + std::to_string(EADDRINUSE) + "\n\n");
}

TEST_F(UapiServerTest, BadSetLineIsRejectedWithoutCallingHandler) {
  auto srv = started();
  Client c(srv->path());
  ASSERT_TRUE(c.send("set=1\nlisten_port=1\nfwmark=x\n\n"));
  EXPECT_EQ(c.read_reply(), "errno=22\n\n");
  ASSERT_TRUE(c.send("set=1\nlisten_port\n\n"));
  EXPECT_EQ(c.read_reply(), "errno=71\n\n");  // EPROTO
  EXPECT_EQ(handler_.set_count(), 0u);
  // The connection is still usable.
  ASSERT_TRUE(c.send("get=1\n\n"));
  EXPECT_EQ(c.read_reply(), expected_get_reply());
}

TEST_F(UapiServerTest, SeveralOperationsOnOneConnection) {
  auto srv = started();
  Client c(srv->path());
  // Pipelined in one write, as a client may do.
  ASSERT_TRUE(c.send("get=1\n\nset=1\nfwmark=7\n\nget=1\n\nset=1\n\n"));
  EXPECT_EQ(c.read_reply(), expected_get_reply());
  EXPECT_EQ(c.read_reply(), "errno=0\n\n");
  EXPECT_EQ(c.read_reply(), expected_get_reply());
  EXPECT_EQ(c.read_reply(), "errno=0\n\n");
  ASSERT_EQ(handler_.set_count(), 2u);
  EXPECT_TRUE(handler_.last_set().peers.empty());
}

TEST_F(UapiServerTest, GetWithTrailingDataIsEINVAL) {
  auto srv = started();
  Client c(srv->path());
  ASSERT_TRUE(c.send("get=1\nx\n"));
  EXPECT_EQ(c.read_reply(), "errno=22\n\n");
  ASSERT_TRUE(c.send("get=1\n\n"));
  EXPECT_EQ(c.read_reply(), expected_get_reply());
}

TEST_F(UapiServerTest, UnknownOperationClosesConnection) {
  auto srv = started();
  for (const char* op : {"bogus=1\n", "\n", "get=2\n", "GET=1\n", "set=1\r\n"}) {
    Client c(srv->path());
    ASSERT_TRUE(c.send(op));
    EXPECT_TRUE(c.closed_by_peer()) << op;
  }
  EXPECT_EQ(handler_.set_count(), 0u);
}

TEST_F(UapiServerTest, EofMidRequestAppliesNothing) {
  auto srv = started();
  {
    Client c(srv->path());
    ASSERT_TRUE(c.send("set=1\nlisten_port=1\n"));
    c.shutdown_write();
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    Client c(srv->path());
    ASSERT_TRUE(c.send("set=1\nlisten_port=1"));  // no newline at all
  }
  Client c(srv->path());
  ASSERT_TRUE(c.send("get=1\n\n"));
  EXPECT_EQ(c.read_reply(), expected_get_reply());
  EXPECT_EQ(handler_.set_count(), 0u);
}

TEST_F(UapiServerTest, JunkDoesNotKillTheServer) {
  auto srv = started();
  std::mt19937 rng(1234);
  for (int i = 0; i < 20; ++i) {
    Client c(srv->path());
    ASSERT_TRUE(c.connected());
    std::string junk(size_t(rng() % 3000 + 1), '\0');
    for (char& ch : junk) ch = char(rng());
    // Half of them look like a set to reach the parser.
    if (i % 2) junk = "set=1\n" + junk + "\n\n";
    c.send(junk);
    c.shutdown_write();
    c.closed_by_peer();
  }
  {
    Client c(srv->path());  // a 10 KB line: the connection is closed, nothing applied
    ASSERT_TRUE(c.send("set=1\nlisten_port=" + std::string(10000, '1') + "\n\n"));
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    Client c(srv->path());  // a 10 KB operation line
    c.send(std::string(10000, 'g') + "\n");
    EXPECT_TRUE(c.closed_by_peer());
  }
  EXPECT_EQ(handler_.set_count(), 0u);
  Client c(srv->path());
  ASSERT_TRUE(c.send("set=1\nlisten_port=9\n\nget=1\n\n"));
  EXPECT_EQ(c.read_reply(), "errno=0\n\n");
  EXPECT_EQ(c.read_reply(), expected_get_reply());
  EXPECT_EQ(handler_.last_set().listen_port.value_or(0), 9);
}

TEST_F(UapiServerTest, TooManyLinesIsEINVALAndNotApplied) {
  auto srv = started();
  Client c(srv->path());
  std::string body = "set=1\n";
  body.reserve(6 + (kMaxSetLines + 1) * 4 + 1);
  for (size_t i = 0; i <= kMaxSetLines; ++i) body += "a=b\n";
  body += "\n";
  std::thread writer([&] { c.send(body); });
  const std::string reply = c.read_reply();
  writer.join();
  EXPECT_EQ(reply, "errno=22\n\n");
  EXPECT_EQ(handler_.set_count(), 0u);
}

TEST_F(UapiServerTest, LargeSetAndGetRoundTrip) {
  // netns.sh "split responses": a big set must fit the bounds and a big get must be written
  // out completely. 70,000 allowed IPs ≈ 1.7 MB, far beyond one socket buffer.
  auto srv = started();
  Client c(srv->path());
  std::string body = std::string("set=1\npublic_key=") + kPub1 + "\n";
  for (int i = 0; i < 70000; ++i)
    body += "allowed_ip=10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) +
            "." + std::to_string(i & 255) + "/32\n";
  body += "\n";
  std::thread writer([&] { c.send(body); });
  EXPECT_EQ(c.read_reply(), "errno=0\n\n");
  writer.join();
  ASSERT_EQ(handler_.set_count(), 1u);
  EXPECT_EQ(handler_.last_set().peers.at(0).allowed_ips.size(), 70000u);
}

TEST_F(UapiServerTest, SilentClientTimesOutAndOthersGetServed) {
  auto srv = std::make_unique<UapiServer>("wgtest0", handler_, dir_);
  srv->set_idle_timeout(200ms);
  std::string err;
  ASSERT_TRUE(srv->listen(err)) << err;
  srv->start();
  Client stuck(srv->path());
  Client half(srv->path());
  ASSERT_TRUE(stuck.connected() && half.connected());
  ASSERT_TRUE(half.send("set=1\nlisten_port=5\n"));  // never finishes its request
  const auto t0 = std::chrono::steady_clock::now();
  Client c(srv->path());
  ASSERT_TRUE(c.send("get=1\n\n"));
  EXPECT_EQ(c.read_reply(), expected_get_reply());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(stuck.closed_by_peer());
  EXPECT_TRUE(half.closed_by_peer());
  EXPECT_EQ(handler_.set_count(), 0u);
}

TEST_F(UapiServerTest, StopIsPromptWithAClientConnected) {
  auto srv = started();  // default 5 s idle timeout
  Client c(srv->path());
  ASSERT_TRUE(c.send("get=1\n\n"));
  EXPECT_EQ(c.read_reply(), expected_get_reply());
  const auto t0 = std::chrono::steady_clock::now();
  srv->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(UapiServerTest, SecondInstanceFailsWithInUse) {
  auto srv = started();
  FakeHandler other;
  UapiServer second("wgtest0", other, dir_);
  std::string err;
  EXPECT_FALSE(second.listen(err));
  EXPECT_NE(err.find("in use"), std::string::npos) << err;
  EXPECT_NE(err.find(srv->path()), std::string::npos) << err;
  second.stop();  // must not remove the first instance's socket
  Client c(srv->path());
  ASSERT_TRUE(c.send("get=1\n\n"));
  EXPECT_EQ(c.read_reply(), expected_get_reply());
  // A different interface name is independent.
  UapiServer third("wgtest1", other, dir_);
  EXPECT_TRUE(third.listen(err)) << err;
}

TEST_F(UapiServerTest, InUseEvenWhenTheOtherBacklogIsFull) {
  // Another process that never accepts: the probe must not block on its full backlog.
  std::filesystem::create_directories(dir_);
  const std::string path = dir_ + "/wgtest0.sock";
  const int lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(lfd, 0), 0);
  std::vector<int> fillers;
  for (int i = 0; i < 8; ++i) {
    const int c = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    fillers.push_back(c);
  }
  UapiServer srv("wgtest0", handler_, dir_);
  std::string err;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(srv.listen(err));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_NE(err.find("in use"), std::string::npos) << err;
  for (int c : fillers) ::close(c);
  ::close(lfd);
}

TEST_F(UapiServerTest, StaleSocketIsReplaced) {
  std::filesystem::create_directories(dir_);
  const std::string path = dir_ + "/wgtest0.sock";
  {
    // Bind and close without unlinking: what a crashed instance leaves behind.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ::close(fd);
  }
  {
    Client dead(path);
    ASSERT_FALSE(dead.connected());  // really stale: nobody answers
  }
  auto srv = started();
  Client c(path);
  ASSERT_TRUE(c.send("get=1\n\n"));
  EXPECT_EQ(c.read_reply(), expected_get_reply());
}

TEST_F(UapiServerTest, RegularFileAtSocketPathIsNotDeleted) {
  std::filesystem::create_directories(dir_);
  const std::string path = dir_ + "/wgtest0.sock";
  { FILE* f = std::fopen(path.c_str(), "w"); ASSERT_NE(f, nullptr); std::fclose(f); }
  UapiServer srv("wgtest0", handler_, dir_);
  std::string err;
  EXPECT_FALSE(srv.listen(err));
  EXPECT_TRUE(std::filesystem::is_regular_file(path));
}

TEST_F(UapiServerTest, ModesAreUmaskProof) {
  const mode_t old = ::umask(0077);  // would give a 0700 directory and a 0600 socket
  auto srv = std::make_unique<UapiServer>("wgtest0", handler_, dir_);
  std::string err;
  const bool ok = srv->listen(err);
  ::umask(0);  // would give a 0777 socket if the server relied on the umask
  UapiServer srv2("wgtest2", handler_, dir_);
  const bool ok2 = srv2.listen(err);
  ::umask(old);
  ASSERT_TRUE(ok && ok2) << err;
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((root_ + "/run").c_str(), &st), 0);  // created parent
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat(srv->path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat(srv2.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(UapiServerTest, StopRemovesSocketAndSocketRemovedDetectsDeletion) {
  auto srv = started();
  const std::string path = srv->path();
  EXPECT_FALSE(srv->socket_removed());
  srv->stop();
  EXPECT_FALSE(std::filesystem::exists(path));
  srv->stop();  // idempotent

  auto srv2 = started();
  EXPECT_FALSE(srv2->socket_removed());
  ASSERT_EQ(::unlink(path.c_str()), 0);
  EXPECT_TRUE(srv2->socket_removed());
  // Replaced by someone else's file (a new inode): still "removed", and stop() leaves it.
  { FILE* f = std::fopen(path.c_str(), "w"); ASSERT_NE(f, nullptr); std::fclose(f); }
  EXPECT_TRUE(srv2->socket_removed());
  srv2->stop();
  EXPECT_TRUE(std::filesystem::exists(path));
}

TEST_F(UapiServerTest, ServeOnSocketpairWithoutThread) {
  // serve() is usable directly (fuzzing): EOF ends it, and it does not close the fd.
  UapiServer srv("wgtest0", handler_, dir_);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  const std::string req = "get=1\n\nset=1\nfwmark=3\n\n";
  ASSERT_EQ(::write(sv[0], req.data(), req.size()), ssize_t(req.size()));
  ::shutdown(sv[0], SHUT_WR);
  srv.serve(sv[1]);
  EXPECT_NE(::fcntl(sv[1], F_GETFD), -1);  // still open
  ::close(sv[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(sv[0], buf, sizeof(buf))) > 0) out.append(buf, size_t(n));
  ::close(sv[0]);
  EXPECT_EQ(out, expected_get_reply() + "errno=0\n\n");
  EXPECT_EQ(handler_.last_set().fwmark.value_or(0), 3u);
}

}  // namespace
}  // namespace meshwg::control
