// LinuxTun against the real kernel. Needs root (CAP_NET_ADMIN); skipped otherwise.
//
// The whole test process moves into a fresh network namespace on first use
// (unshare(CLONE_NEWNET)): each gtest binary is its own process, so the namespace, its TUN
// devices and addresses vanish when the process exits, and nothing touches the host's
// interfaces. Inside it:
//
//     test process ── UDP ──► 10.77.0.2 (route 10.77.0.0/24 dev mwgtun0) ──► LinuxTun::read()
//     LinuxTun::write() ──► mwgtun0 (10.77.0.1) ──► UDP socket bound to 10.77.0.1
//
// Every wait is bounded (poll with a timeout, joins with a deadline) so a broken TUN fails
// the test instead of hanging it.
#include "tun/tun_linux.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace meshwg::tun {
namespace {

constexpr char kIf[] = "mwgtun0";
constexpr char kLocal[] = "10.77.0.1";
constexpr char kPeer[] = "10.77.0.2";

// Enters a private network namespace once per process. Returns an empty string on success,
// else why the test must be skipped.
std::string enter_netns() {
  static std::string why = [] () -> std::string {
    if (::geteuid() != 0) return "needs root for TUN and network namespaces";
    if (::unshare(CLONE_NEWNET) != 0) return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
    if (std::system("ip -V >/dev/null 2>&1") != 0) return "ip(8) not found";
    return "";
  }();
  return why;
}

#define REQUIRE_NETNS()                                       \
  do {                                                        \
    std::string why_ = enter_netns();                         \
    if (!why_.empty()) GTEST_SKIP() << why_;                  \
  } while (0)

bool sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

std::unique_ptr<LinuxTun> make_up_tun(int mtu) {
  std::string err;
  auto t = LinuxTun::create(kIf, mtu, err);
  EXPECT_NE(t, nullptr) << err;
  if (!t) return nullptr;
  EXPECT_TRUE(sh(std::string("ip addr add ") + kLocal + "/24 dev " + kIf));
  EXPECT_TRUE(sh(std::string("ip link set ") + kIf + " up"));
  return t;
}

uint16_t ip_checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n & 1) sum += p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Runs tun.read() on a thread; returns its result, or nullopt (and leaks the thread and
// the TUN, so nothing is freed under a blocked reader) if it did not return in time.
struct ReadResult {
  bool returned = false;
  long n = -2;
};

ReadResult read_with_deadline(std::unique_ptr<LinuxTun>& t, std::span<uint8_t> buf,
                              std::chrono::milliseconds deadline,
                              const std::function<void()>& after_start = {}) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto n = std::make_shared<std::atomic<long>>(-2);
  LinuxTun* raw = t.get();
  std::thread th([raw, buf, done, n] {
    n->store(raw->read(buf));
    done->store(true);
  });
  if (after_start) after_start();
  auto until = std::chrono::steady_clock::now() + deadline;
  while (!done->load() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!done->load()) {
    th.detach();
    (void)t.release();  // the reader still uses it: never destroy it
    return {};
  }
  th.join();
  return {true, n->load()};
}

TEST(LinuxTun, RejectsBadNames) {
  std::string err;
  EXPECT_EQ(LinuxTun::create("", 1420, err), nullptr);
  EXPECT_EQ(LinuxTun::create("a-name-longer-than-15", 1420, err), nullptr);
  EXPECT_NE(err.find("invalid interface name"), std::string::npos);
}

TEST(LinuxTun, CreatesWithMtuAndChangesIt) {
  REQUIRE_NETNS();
  std::string err;
  auto t = LinuxTun::create(kIf, 1420, err);
  ASSERT_NE(t, nullptr) << err;
  EXPECT_EQ(t->name(), kIf);
  EXPECT_TRUE(t->exists());
  EXPECT_EQ(t->mtu(), 1420);
  ASSERT_TRUE(t->set_mtu(1280));
  EXPECT_EQ(t->mtu(), 1280);
  // A change made behind our back (ip link set mtu) is what mtu() must report.
  ASSERT_TRUE(sh(std::string("ip link set ") + kIf + " mtu 1380"));
  EXPECT_EQ(t->mtu(), 1380);
}

TEST(LinuxTun, SecondOpenOfSameNameFails) {
  REQUIRE_NETNS();
  std::string err;
  auto t = LinuxTun::create(kIf, 1420, err);
  ASSERT_NE(t, nullptr) << err;
  std::string err2;
  EXPECT_EQ(LinuxTun::create(kIf, 1420, err2), nullptr);
  EXPECT_NE(err2.find("TUNSETIFF"), std::string::npos) << err2;
}

TEST(LinuxTun, ReadsUdpPacketRoutedIntoIt) {
  REQUIRE_NETNS();
  auto t = make_up_tun(1420);
  ASSERT_NE(t, nullptr);

  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(5555);
  ASSERT_EQ(::inet_pton(AF_INET, kPeer, &to.sin_addr), 1);
  const char payload[] = "hello through the tun";
  ASSERT_EQ(::sendto(s, payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&to), sizeof to),
            static_cast<ssize_t>(sizeof payload));
  ::close(s);

  // The kernel may also queue its own traffic on a fresh interface (IPv6 router
  // solicitations, MLD): skip anything that is not our IPv4 datagram, a bounded number of times.
  std::array<uint8_t, 2048> buf{};
  bool found = false;
  for (int i = 0; i < 16 && !found; ++i) {
    ReadResult r = read_with_deadline(t, buf, std::chrono::seconds(3));
    ASSERT_TRUE(r.returned) << "read() did not return a packet within 3 s";
    ASSERT_GT(r.n, 0);
    const uint8_t* p = buf.data();
    if ((p[0] >> 4) != 4) continue;
    size_t ihl = (p[0] & 0x0f) * 4u;
    ASSERT_GE(ihl, 20u);
    ASSERT_GE(static_cast<size_t>(r.n), ihl + 8);
    // Well formed: total length is exactly what read() returned (IFF_NO_PI: no prefix).
    EXPECT_EQ(static_cast<long>((p[2] << 8) | p[3]), r.n);
    EXPECT_EQ(ip_checksum(p, ihl), 0) << "IPv4 header checksum";
    if (p[9] != IPPROTO_UDP) continue;
    in_addr src{}, dst{};
    std::memcpy(&src, p + 12, 4);
    std::memcpy(&dst, p + 16, 4);
    EXPECT_STREQ(::inet_ntoa(src), kLocal);
    EXPECT_STREQ(::inet_ntoa(dst), kPeer);
    const uint8_t* udp = p + ihl;
    EXPECT_EQ((udp[2] << 8) | udp[3], 5555);
    EXPECT_EQ(static_cast<size_t>((udp[4] << 8) | udp[5]), 8 + sizeof payload);
    ASSERT_EQ(static_cast<size_t>(r.n), ihl + 8 + sizeof payload);
    EXPECT_EQ(std::memcmp(udp + 8, payload, sizeof payload), 0);
    found = true;
  }
  EXPECT_TRUE(found) << "no IPv4/UDP packet among the first 16 read";
}

TEST(LinuxTun, WriteDeliversPacketToLocalSocket) {
  REQUIRE_NETNS();
  auto t = make_up_tun(1420);
  ASSERT_NE(t, nullptr);

  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  sockaddr_in me{};
  me.sin_family = AF_INET;
  me.sin_port = htons(5556);
  ASSERT_EQ(::inet_pton(AF_INET, kLocal, &me.sin_addr), 1);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&me), sizeof me), 0) << std::strerror(errno);

  // 10.77.0.2:6666 -> 10.77.0.1:5556, UDP checksum 0 (allowed for IPv4).
  const char payload[] = "from the peer";
  std::vector<uint8_t> pkt(20 + 8 + sizeof payload);
  pkt[0] = 0x45;
  pkt[2] = static_cast<uint8_t>(pkt.size() >> 8);
  pkt[3] = static_cast<uint8_t>(pkt.size());
  pkt[8] = 64;
  pkt[9] = IPPROTO_UDP;
  ASSERT_EQ(::inet_pton(AF_INET, kPeer, pkt.data() + 12), 1);
  ASSERT_EQ(::inet_pton(AF_INET, kLocal, pkt.data() + 16), 1);
  uint16_t c = ip_checksum(pkt.data(), 20);
  pkt[10] = static_cast<uint8_t>(c >> 8);
  pkt[11] = static_cast<uint8_t>(c);
  pkt[20] = 6666 >> 8;
  pkt[21] = 6666 & 0xff;
  pkt[22] = 5556 >> 8;
  pkt[23] = 5556 & 0xff;
  pkt[24] = static_cast<uint8_t>((8 + sizeof payload) >> 8);
  pkt[25] = static_cast<uint8_t>(8 + sizeof payload);
  std::memcpy(pkt.data() + 28, payload, sizeof payload);
  ASSERT_TRUE(t->write(pkt));

  pollfd p{s, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1) << "written packet not delivered within 3 s";
  char got[64] = {};
  EXPECT_EQ(::recv(s, got, sizeof got, 0), static_cast<ssize_t>(sizeof payload));
  EXPECT_STREQ(got, payload);
  ::close(s);

  // A malformed packet (IP version 7) is refused by the kernel: write() reports it.
  std::vector<uint8_t> junk(40, 0x70);
  EXPECT_FALSE(t->write(junk));
}

TEST(LinuxTun, CloseUnblocksBlockedRead) {
  REQUIRE_NETNS();
  std::string err;
  // Link left down: nothing can arrive, so read() blocks until close().
  auto t = LinuxTun::create(kIf, 1420, err);
  ASSERT_NE(t, nullptr) << err;
  std::array<uint8_t, 2048> buf{};
  LinuxTun* raw = t.get();
  ReadResult r = read_with_deadline(t, buf, std::chrono::seconds(3), [raw] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    raw->close();
  });
  ASSERT_TRUE(r.returned) << "close() did not unblock read()";
  EXPECT_EQ(r.n, 0);
  // Later reads return at once as well, and close() may be repeated.
  t->close();
  EXPECT_EQ(t->read(buf), 0);
}

TEST(LinuxTun, DeletedInterfaceEndsReadAndExists) {
  REQUIRE_NETNS();
  std::string err;
  auto t = LinuxTun::create(kIf, 1420, err);
  ASSERT_NE(t, nullptr) << err;
  ASSERT_TRUE(t->exists());
  std::array<uint8_t, 2048> buf{};
  ReadResult r = read_with_deadline(t, buf, std::chrono::seconds(3), [] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_TRUE(sh(std::string("ip link del ") + kIf));
  });
  ASSERT_TRUE(r.returned) << "read() still blocked after the interface was deleted";
  EXPECT_EQ(r.n, 0);
  EXPECT_FALSE(t->exists());
}

}  // namespace
}  // namespace meshwg::tun
