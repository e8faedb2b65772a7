// Tests for control/portmap.cc against fake gateways written here: a NAT-PMP responder built
// from RFC 6886 §3 on 127.0.0.1:5351, and a UPnP IGD (an HTTP server giving a root description
// and answering the WANIPConnection:1 SOAP actions) reached by its root description URL.
// Needs root: the process moves into a fresh network namespace on first use (unshare while
// gtest is still single-threaded, as tests/tun/netlink_test.cc does), so port 5351 is ours and
// there is no gateway:
//
//     fresh netns: lo 127.0.0.1/8 up; no other link, no route, no default gateway
//       map_udp_port ──UDP──► 127.0.0.1:5351       FakeNatPmp (its own thread)
//                    ──TCP──► 127.0.0.1:<any port> FakeIgd    (its own thread)
//
// Expected bytes and values are written out by hand from the RFC and UPnP specs. Every fake
// loop ends by a stop flag polled every 20 ms and by an overall time limit.
#include "control/portmap.h"
#include "tests/private_netns.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace meshwg::control {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Bytes = std::vector<uint8_t>;

constexpr uint16_t kInternalPort = 51820;
// The longest any fake thread runs, whatever the test does: a bound besides the stop flag.
constexpr auto kFakeLifetime = 30s;

// ---- the namespace ----

// The private namespace (tests/private_netns.h), and SIGPIPE ignored: a fake closing a
// connection while libminiupnpc writes must not kill the test; the daemons ignore SIGPIPE the
// same way (tools/meshwg.cc).
std::string enter_netns() {
  ::signal(SIGPIPE, SIG_IGN);
  return testing::enter_netns();
}

// Waits (bounded) until no UPnP thread of control/portmap.cc is left.
bool portmap_threads_done(std::chrono::milliseconds limit = 15s) {
  const auto end = Clock::now() + limit;
  while (portmap_threads_running() != 0) {
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

class PortMap : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = enter_netns();
    if (!why.empty()) GTEST_SKIP() << why;
  }
  void TearDown() override {
    // No test leaves a UPnP thread behind: a given-up exchange ends once its fake is gone.
    EXPECT_TRUE(portmap_threads_done());
  }
};

PortMapOptions natpmp_only(std::chrono::milliseconds timeout = 1500ms) {
  PortMapOptions o;
  o.timeout = timeout;
  o.upnp = false;
  o.natpmp_gateway = dataplane::IpAddress::parse("127.0.0.1");
  return o;
}

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
void put16(Bytes& b, uint16_t v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}
void put32(Bytes& b, uint32_t v) {
  put16(b, uint16_t(v >> 16));
  put16(b, uint16_t(v));
}

// ---- fake NAT-PMP gateway (RFC 6886 §3) ----

struct NatPmpBehaviour {
  uint8_t public_ip[4] = {203, 0, 113, 7};
  uint16_t public_result = 0;   // result code of the public address answer
  uint16_t map_result = 0;      // result code of the map answer
  uint16_t mapped_port = 40123;
  uint32_t granted_lifetime = 3600;
  bool silent = false;          // read requests, never answer
  bool garbage_only = false;    // answer each request with malformed datagrams only
  bool garbage_first = false;   // malformed datagrams, then the right answer
};

class FakeNatPmp {
 public:
  explicit FakeNatPmp(const NatPmpBehaviour& b) : b_(b) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(5351);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (fd_ >= 0) thread_ = std::thread([this] { run(); });
  }
  ~FakeNatPmp() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::vector<Bytes> requests() {
    std::lock_guard lk(mu_);
    return requests_;
  }

 private:
  // The answer §3.2 / §3.3 / §3.4 prescribe for request q; empty for anything else.
  Bytes answer(const Bytes& q) const {
    Bytes r;
    if (q.size() == 2 && q[0] == 0 && q[1] == 0) {
      r = {0, 128};
      put16(r, b_.public_result);
      put32(r, 1234);  // seconds since start of epoch
      r.insert(r.end(), b_.public_ip, b_.public_ip + 4);
    } else if (q.size() == 12 && q[0] == 0 && q[1] == 1) {
      const bool remove = be32(&q[8]) == 0;
      r = {0, 129};
      put16(r, b_.map_result);
      put32(r, 1234);
      put16(r, be16(&q[4]));  // internal port, repeated
      put16(r, remove ? 0 : b_.mapped_port);
      put32(r, remove ? 0 : b_.granted_lifetime);
    }
    return r;
  }

  // Datagrams that must not be taken for the answer to q: each is a different lie.
  static std::vector<Bytes> garbage(const Bytes& q, const Bytes& good) {
    std::vector<Bytes> g;
    g.push_back({});                          // empty
    g.push_back({0, uint8_t(128 | q[1]), 0});  // shorter than the header
    Bytes v = good;
    v[0] = 2;  // another version (PCP)
    g.push_back(v);
    Bytes other = good;
    other[1] = q[1] == 0 ? 129 : 128;  // the answer to the other request
    other.resize(16, 0x55);
    g.push_back(other);
    Bytes cut = good;
    cut.resize(q[1] == 0 ? 10 : 12);  // truncated success
    g.push_back(cut);
    if (q[1] == 1) {
      Bytes port = good;
      port[8] ^= 0x40;  // someone else's internal port
      g.push_back(port);
    }
    Bytes request = q;  // a request is not an answer
    g.push_back(request);
    g.push_back(Bytes(20, 0xff));
    return g;
  }

  void run() {
    const auto end = Clock::now() + kFakeLifetime;
    while (!stop_ && Clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      uint8_t buf[64];
      sockaddr_in from{};
      socklen_t flen = sizeof from;
      const ssize_t n =
          ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (n < 0) continue;
      const Bytes q(buf, buf + n);
      {
        std::lock_guard lk(mu_);
        requests_.push_back(q);
      }
      if (b_.silent || q.size() < 2) continue;
      const Bytes good = answer(q);
      if (good.empty()) continue;
      auto send = [&](const Bytes& d) {
        (void)::sendto(fd_, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&from), flen);
      };
      if (b_.garbage_only || b_.garbage_first)
        for (const Bytes& g : garbage(q, good)) send(g);
      if (!b_.garbage_only) send(good);
    }
  }

  NatPmpBehaviour b_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<Bytes> requests_;  // guarded by mu_
  std::thread thread_;
};

// ---- fake UPnP IGD ----

struct IgdBehaviour {
  std::string external_ip = "198.51.100.9";
  int add_error = 0;            // UPnP errorCode for every AddPortMapping; 0 = success
  bool permanent_only = false;  // 725 OnlyPermanentLeasesSupported unless the lease is 0
  bool conflict = false;        // 718 for AddPortMapping; AddAnyPortMapping reserves any_port
  uint16_t any_port = 40000;
  bool hang = false;            // accept connections, never answer
  std::chrono::milliseconds add_delay{0};  // wait this long before answering AddPortMapping
};

struct HttpRequest {
  std::string method, path, action, body;  // action: the SOAPAction after '#'
};

// The text of the first <name>...</name> in xml, or "(absent)".
std::string tag(const std::string& xml, const std::string& name) {
  const std::string open = "<" + name + ">", close = "</" + name + ">";
  const size_t a = xml.find(open);
  if (a == std::string::npos) return "(absent)";
  const size_t b = xml.find(close, a);
  if (b == std::string::npos) return "(absent)";
  return xml.substr(a + open.size(), b - a - open.size());
}

class FakeIgd {
 public:
  explicit FakeIgd(const IgdBehaviour& b) : b_(b) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ >= 0 && (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
                     ::listen(fd_, 8) != 0 ||
                     ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)) {
      ::close(fd_);
      fd_ = -1;
    }
    if (fd_ < 0) return;
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeIgd() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (int c : held_) ::close(c);
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string root_url() const { return base_url() + "/rootDesc.xml"; }
  std::vector<HttpRequest> requests() {
    std::lock_guard lk(mu_);
    return requests_;
  }
  std::vector<HttpRequest> actions(const std::string& name) {
    std::vector<HttpRequest> out;
    for (auto& r : requests())
      if (r.action == name) out.push_back(r);
    return out;
  }

 private:
  static constexpr const char* kService = "urn:schemas-upnp-org:service:WANIPConnection:1";

  static std::string root_description() {
    return R"(<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<friendlyName>meshwg fake IGD</friendlyName>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId>
<controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL>
<SCPDURL>/WANCfg.xml</SCPDURL>
</service></serviceList>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL>
<SCPDURL>/WANIPCn.xml</SCPDURL>
</service></serviceList>
</device></deviceList>
</device></deviceList>
</device>
</root>
)";
  }

  static std::string soap_ok(const std::string& action, const std::string& args) {
    return std::string(
               "<?xml version=\"1.0\"?>\r\n<s:Envelope "
               "xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" "
               "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:") +
           action + "Response xmlns:u=\"" + kService + "\">" + args + "</u:" + action +
           "Response></s:Body></s:Envelope>\r\n";
  }
  static std::string soap_fault(int code, const std::string& text) {
    return "<?xml version=\"1.0\"?>\r\n<s:Envelope "
           "xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" "
           "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><s:Fault>"
           "<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
           "<UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>" +
           std::to_string(code) + "</errorCode><errorDescription>" + text +
           "</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n";
  }

  // Sleeps up to d, in steps that notice the stop flag.
  void pause(std::chrono::milliseconds d) {
    const auto end = Clock::now() + d;
    while (!stop_ && Clock::now() < end) std::this_thread::sleep_for(10ms);
  }

  // Status line and body for one request (the UPnP errors a real IGD sends, UPnP IGD:1
  // WANIPConnection:1 §2.4).
  std::pair<int, std::string> respond(const HttpRequest& q) {
    if (q.method == "GET" && q.path == "/rootDesc.xml") return {200, root_description()};
    if (q.method != "POST" || q.path != "/ctl/IPConn") return {404, "not found"};
    if (q.action == "GetExternalIPAddress")
      return {200, soap_ok(q.action, "<NewExternalIPAddress>" + b_.external_ip +
                                         "</NewExternalIPAddress>")};
    if (q.action == "AddPortMapping") {
      pause(b_.add_delay);
      if (b_.add_error != 0) return {500, soap_fault(b_.add_error, "Refused")};
      if (b_.conflict) return {500, soap_fault(718, "ConflictInMappingEntry")};
      if (b_.permanent_only && tag(q.body, "NewLeaseDuration") != "0")
        return {500, soap_fault(725, "OnlyPermanentLeasesSupported")};
      return {200, soap_ok(q.action, "")};
    }
    if (q.action == "AddAnyPortMapping")
      return {200, soap_ok(q.action, "<NewReservedPort>" + std::to_string(b_.any_port) +
                                         "</NewReservedPort>")};
    if (q.action == "DeletePortMapping") return {200, soap_ok(q.action, "")};
    return {500, soap_fault(401, "Invalid Action")};
  }

  // Reads one request from c: headers, then Content-Length bytes. Bounded in size and time.
  bool read_request(int c, HttpRequest& q) {
    std::string in;
    const auto end = Clock::now() + 3s;
    size_t need = std::string::npos;  // total length once the headers are in
    while (!stop_ && Clock::now() < end && in.size() < 65536) {
      if (need != std::string::npos && in.size() >= need) break;
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return false;
      in.append(buf, size_t(n));
      const size_t hend = in.find("\r\n\r\n");
      if (need == std::string::npos && hend != std::string::npos) {
        std::string lower = in.substr(0, hend);
        for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
        size_t length = 0;
        if (size_t at = lower.find("\r\ncontent-length:"); at != std::string::npos)
          length = std::strtoul(lower.c_str() + at + 17, nullptr, 10);
        need = hend + 4 + length;
        const size_t sp1 = in.find(' '), sp2 = in.find(' ', sp1 + 1);
        if (sp1 == std::string::npos || sp2 == std::string::npos) return false;
        q.method = in.substr(0, sp1);
        q.path = in.substr(sp1 + 1, sp2 - sp1 - 1);
        if (size_t at = lower.find("\r\nsoapaction:"); at != std::string::npos) {
          const size_t eol = lower.find("\r\n", at + 2);
          const std::string v = in.substr(at + 13, eol - at - 13);
          const size_t hash = v.find('#');
          if (hash != std::string::npos) {
            q.action = v.substr(hash + 1);
            q.action.erase(q.action.find_last_not_of("\" \t") + 1);
          }
        }
      }
    }
    if (need == std::string::npos || in.size() < need) return false;
    q.body = in.substr(in.find("\r\n\r\n") + 4);
    return true;
  }

  void serve(int c) {
    HttpRequest q;
    if (!read_request(c, q)) return;
    {
      std::lock_guard lk(mu_);
      requests_.push_back(q);
    }
    const auto [status, body] = respond(q);
    const std::string text = status == 200 ? "OK" : status == 404 ? "Not Found"
                                                                  : "Internal Server Error";
    const std::string out = "HTTP/1.1 " + std::to_string(status) + " " + text +
                            "\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n"
                            "Connection: close\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    (void)::send(c, out.data(), out.size(), MSG_NOSIGNAL);
  }

  void run() {
    const auto end = Clock::now() + kFakeLifetime;
    while (!stop_ && Clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      if (b_.hang) {
        held_.push_back(c);  // closed by the destructor, which ends the client's wait
        continue;
      }
      serve(c);
      ::close(c);
    }
  }

  IgdBehaviour b_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<int> held_;  // only the fake's thread, then the destructor after join
  std::mutex mu_;
  std::vector<HttpRequest> requests_;  // guarded by mu_
  std::thread thread_;
};

PortMapOptions upnp_only(const FakeIgd& igd, std::chrono::milliseconds timeout = 1500ms) {
  PortMapOptions o;
  o.timeout = timeout;
  o.natpmp = false;
  o.upnp_root_url = igd.root_url();
  return o;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- tests ----

TEST(PortMapKindTest, Names) {
  EXPECT_STREQ(portmap_kind_name(PortMapKind::kUpnp), "upnp");
  EXPECT_STREQ(portmap_kind_name(PortMapKind::kNatPmp), "nat-pmp");
}

TEST_F(PortMap, NoGatewayReturnsNothingWithinTheTimeout) {
  // Both protocols, SSDP discovery included: no default route, nothing answers.
  PortMapOptions o;
  o.timeout = 800ms;
  const auto t0 = Clock::now();
  EXPECT_TRUE(map_udp_port(kInternalPort, o).empty());
  EXPECT_LT(seconds_since(t0), 3.0);
}

TEST_F(PortMap, PortZeroIsNotMapped) {
  FakeNatPmp gw({});
  ASSERT_TRUE(gw.ok());
  EXPECT_TRUE(map_udp_port(0, natpmp_only()).empty());
  EXPECT_TRUE(gw.requests().empty());
}

TEST_F(PortMap, NatPmpNothingListening) {
  // 127.0.0.1:5351 closed: ICMP port unreachable, given up at once or at the deadline.
  const auto t0 = Clock::now();
  EXPECT_TRUE(map_udp_port(kInternalPort, natpmp_only(800ms)).empty());
  EXPECT_LT(seconds_since(t0), 3.0);
}

TEST_F(PortMap, NatPmpSilentGatewayIsGivenUpAtTheDeadline) {
  NatPmpBehaviour b;
  b.silent = true;
  FakeNatPmp gw(b);
  ASSERT_TRUE(gw.ok());
  const auto t0 = Clock::now();
  EXPECT_TRUE(map_udp_port(kInternalPort, natpmp_only(800ms)).empty());
  // Not given up before the deadline (a lower bound the code sets, not the scheduler).
  EXPECT_GE(seconds_since(t0), 0.75);
  EXPECT_LT(seconds_since(t0), 3.0);
  // §3.1: the request is retransmitted (after 250 ms, then 500 ms more), never a map request
  // before the public address is known.
  const auto reqs = gw.requests();
  EXPECT_GE(reqs.size(), 2u);
  for (const Bytes& q : reqs) EXPECT_EQ(q, (Bytes{0, 0}));
}

TEST_F(PortMap, NatPmpIpv6GatewayIsRefused) {
  PortMapOptions o = natpmp_only(800ms);
  o.natpmp_gateway = dataplane::IpAddress::parse("::1");
  const auto t0 = Clock::now();
  EXPECT_TRUE(map_udp_port(kInternalPort, o).empty());
  EXPECT_LT(seconds_since(t0), 3.0);
}

TEST_F(PortMap, NatPmpMapsAndUnmaps) {
  FakeNatPmp gw({});
  ASSERT_TRUE(gw.ok());
  PortMapOptions o = natpmp_only();
  o.lifetime_s = 7200;
  const auto t0 = Clock::now();
  const auto maps = map_udp_port(kInternalPort, o);
  EXPECT_LT(seconds_since(t0), 1.5);  // answered at once: no waiting for the deadline
  ASSERT_EQ(maps.size(), 1u);
  const PortMapping& m = maps[0];
  EXPECT_EQ(m.kind, PortMapKind::kNatPmp);
  EXPECT_EQ(m.external.str(), "203.0.113.7:40123");
  EXPECT_EQ(m.internal_port, kInternalPort);
  EXPECT_EQ(m.lifetime_s, 3600u);  // what the gateway granted, not what was asked
  EXPECT_EQ(m.natpmp_gateway.str(), "127.0.0.1");

  auto reqs = gw.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0], (Bytes{0, 0}));  // §3.2: version 0, opcode 0
  // §3.3: version 0, opcode 1 (UDP), reserved 0, internal port, suggested external port
  // (ours), requested lifetime.
  const Bytes want_map = {0, 1, 0, 0, 0xca, 0x6c, 0xca, 0x6c, 0, 0, 0x1c, 0x20};
  EXPECT_EQ(reqs[1], want_map);

  unmap_udp_port(m, o);
  reqs = gw.requests();
  ASSERT_EQ(reqs.size(), 3u);
  // §3.4: delete = the map request with lifetime 0 and suggested external port 0.
  const Bytes want_unmap = {0, 1, 0, 0, 0xca, 0x6c, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(reqs[2], want_unmap);
}

TEST_F(PortMap, NatPmpZeroLifetimeOptionAsksForTwoHours) {
  FakeNatPmp gw({});
  ASSERT_TRUE(gw.ok());
  PortMapOptions o = natpmp_only();
  o.lifetime_s = 0;  // would read as "delete" on the wire
  ASSERT_EQ(map_udp_port(kInternalPort, o).size(), 1u);
  const auto reqs = gw.requests();
  ASSERT_EQ(reqs.size(), 2u);
  ASSERT_EQ(reqs[1].size(), 12u);
  EXPECT_EQ(be32(&reqs[1][8]), 7200u);
}

TEST_F(PortMap, NatPmpMapErrorResultGivesNoMapping) {
  NatPmpBehaviour b;
  b.map_result = 2;  // Not Authorized/Refused
  FakeNatPmp gw(b);
  ASSERT_TRUE(gw.ok());
  EXPECT_TRUE(map_udp_port(kInternalPort, natpmp_only()).empty());
  EXPECT_EQ(gw.requests().size(), 2u);  // an error answer is final: not retried
}

TEST_F(PortMap, NatPmpPublicAddressErrorStopsBeforeMapping) {
  NatPmpBehaviour b;
  b.public_result = 3;  // Network Failure: the NAT has no public address yet
  FakeNatPmp gw(b);
  ASSERT_TRUE(gw.ok());
  EXPECT_TRUE(map_udp_port(kInternalPort, natpmp_only()).empty());
  for (const Bytes& q : gw.requests()) EXPECT_EQ(q, (Bytes{0, 0}));
}

TEST_F(PortMap, NatPmpUnusablePublicAddressGivesNoMapping) {
  NatPmpBehaviour b;
  b.public_ip[0] = 0;  // 0.0.113.7: "this network"
  FakeNatPmp gw(b);
  ASSERT_TRUE(gw.ok());
  EXPECT_TRUE(map_udp_port(kInternalPort, natpmp_only()).empty());
  for (const Bytes& q : gw.requests()) EXPECT_EQ(q, (Bytes{0, 0}));
}

TEST_F(PortMap, NatPmpGarbageOnlyGivesNoMapping) {
  NatPmpBehaviour b;
  b.garbage_only = true;
  FakeNatPmp gw(b);
  ASSERT_TRUE(gw.ok());
  const auto t0 = Clock::now();
  EXPECT_TRUE(map_udp_port(kInternalPort, natpmp_only(800ms)).empty());
  EXPECT_GE(seconds_since(t0), 0.75);  // junk does not end the wait early
  EXPECT_LT(seconds_since(t0), 3.0);
  // None of it was taken for the public address answer: no map request followed, and the
  // request was retransmitted as if nothing had come.
  const auto reqs = gw.requests();
  EXPECT_GE(reqs.size(), 2u);
  for (const Bytes& q : reqs) EXPECT_EQ(q, (Bytes{0, 0}));
}

TEST_F(PortMap, NatPmpGarbageBeforeTheAnswerIsSkipped) {
  NatPmpBehaviour b;
  b.garbage_first = true;
  FakeNatPmp gw(b);
  ASSERT_TRUE(gw.ok());
  const auto maps = map_udp_port(kInternalPort, natpmp_only());
  ASSERT_EQ(maps.size(), 1u);
  EXPECT_EQ(maps[0].external.str(), "203.0.113.7:40123");
  EXPECT_EQ(maps[0].lifetime_s, 3600u);
  EXPECT_EQ(gw.requests().size(), 2u);  // one of each: no retransmission was needed
}

TEST_F(PortMap, UpnpMapsAndUnmaps) {
  FakeIgd igd({});
  ASSERT_TRUE(igd.ok());
  PortMapOptions o = upnp_only(igd);
  o.lifetime_s = 7200;
  o.description = "meshwg-test";
  const auto maps = map_udp_port(kInternalPort, o);
  ASSERT_EQ(maps.size(), 1u);
  const PortMapping& m = maps[0];
  EXPECT_EQ(m.kind, PortMapKind::kUpnp);
  EXPECT_EQ(m.external.str(), "198.51.100.9:51820");
  EXPECT_EQ(m.internal_port, kInternalPort);
  EXPECT_EQ(m.lifetime_s, 7200u);
  EXPECT_EQ(m.upnp_control_url, igd.base_url() + "/ctl/IPConn");
  EXPECT_EQ(m.upnp_service_type, "urn:schemas-upnp-org:service:WANIPConnection:1");

  const auto reqs = igd.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].method, "GET");
  EXPECT_EQ(reqs[0].path, "/rootDesc.xml");
  EXPECT_EQ(reqs[1].action, "GetExternalIPAddress");
  ASSERT_EQ(reqs[2].action, "AddPortMapping");
  EXPECT_EQ(reqs[2].path, "/ctl/IPConn");
  const std::string& body = reqs[2].body;
  EXPECT_EQ(tag(body, "NewExternalPort"), "51820");
  EXPECT_EQ(tag(body, "NewProtocol"), "UDP");
  EXPECT_EQ(tag(body, "NewInternalPort"), "51820");
  EXPECT_EQ(tag(body, "NewInternalClient"), "127.0.0.1");
  EXPECT_EQ(tag(body, "NewEnabled"), "1");
  EXPECT_EQ(tag(body, "NewPortMappingDescription"), "meshwg-test");
  EXPECT_EQ(tag(body, "NewLeaseDuration"), "7200");

  unmap_udp_port(m, o);
  const auto del = igd.actions("DeletePortMapping");
  ASSERT_EQ(del.size(), 1u);
  EXPECT_EQ(tag(del[0].body, "NewExternalPort"), "51820");
  EXPECT_EQ(tag(del[0].body, "NewProtocol"), "UDP");
}

TEST_F(PortMap, UpnpOnlyPermanentLeases) {
  IgdBehaviour b;
  b.permanent_only = true;
  FakeIgd igd(b);
  ASSERT_TRUE(igd.ok());
  const auto maps = map_udp_port(kInternalPort, upnp_only(igd));
  ASSERT_EQ(maps.size(), 1u);
  EXPECT_EQ(maps[0].lifetime_s, 0u);  // permanent
  const auto adds = igd.actions("AddPortMapping");
  ASSERT_EQ(adds.size(), 2u);
  EXPECT_EQ(tag(adds[0].body, "NewLeaseDuration"), "7200");
  EXPECT_EQ(tag(adds[1].body, "NewLeaseDuration"), "0");
}

TEST_F(PortMap, UpnpConflictTakesAnyPort) {
  IgdBehaviour b;
  b.conflict = true;
  FakeIgd igd(b);
  ASSERT_TRUE(igd.ok());
  const auto maps = map_udp_port(kInternalPort, upnp_only(igd));
  ASSERT_EQ(maps.size(), 1u);
  EXPECT_EQ(maps[0].external.str(), "198.51.100.9:40000");
  EXPECT_EQ(maps[0].internal_port, kInternalPort);
  const auto any = igd.actions("AddAnyPortMapping");
  ASSERT_EQ(any.size(), 1u);
  EXPECT_EQ(tag(any[0].body, "NewInternalPort"), "51820");
  EXPECT_EQ(tag(any[0].body, "NewProtocol"), "UDP");
}

TEST_F(PortMap, UpnpRefusedGivesNoMapping) {
  IgdBehaviour b;
  b.add_error = 606;  // Action not authorized
  FakeIgd igd(b);
  ASSERT_TRUE(igd.ok());
  EXPECT_TRUE(map_udp_port(kInternalPort, upnp_only(igd)).empty());
  EXPECT_EQ(igd.actions("AddPortMapping").size(), 1u);
}

TEST_F(PortMap, UpnpUnusableExternalAddressGivesNoMapping) {
  for (const char* ext : {"0.0.0.0", "not an address", "", "2001:db8::1"}) {
    SCOPED_TRACE(ext);
    IgdBehaviour b;
    b.external_ip = ext;
    FakeIgd igd(b);
    ASSERT_TRUE(igd.ok());
    EXPECT_TRUE(map_udp_port(kInternalPort, upnp_only(igd)).empty());
    EXPECT_EQ(igd.actions("GetExternalIPAddress").size(), 1u);
    EXPECT_TRUE(igd.actions("AddPortMapping").empty());
  }
}

TEST_F(PortMap, UpnpNoDescriptionAtTheUrl) {
  FakeIgd igd({});
  ASSERT_TRUE(igd.ok());
  PortMapOptions o = upnp_only(igd);
  o.upnp_root_url = igd.base_url() + "/nothing.xml";
  EXPECT_TRUE(map_udp_port(kInternalPort, o).empty());
  EXPECT_TRUE(igd.actions("AddPortMapping").empty());
}

TEST_F(PortMap, UpnpHungIgdIsGivenUpAtTheDeadline) {
  IgdBehaviour b;
  b.hang = true;
  auto t0 = Clock::now();
  {
    FakeIgd igd(b);
    ASSERT_TRUE(igd.ok());
    t0 = Clock::now();
    EXPECT_TRUE(map_udp_port(kInternalPort, upnp_only(igd, 800ms)).empty());
    EXPECT_LT(seconds_since(t0), 3.0);
  }  // the fake closes the held connection: the library call returns, the thread ends
  EXPECT_TRUE(portmap_threads_done());
}

TEST_F(PortMap, UpnpLateMappingIsDeletedAgain) {
  IgdBehaviour b;
  b.add_delay = 1500ms;  // the mapping is made after the caller's 800 ms deadline
  FakeIgd igd(b);
  ASSERT_TRUE(igd.ok());
  const auto t0 = Clock::now();
  EXPECT_TRUE(map_udp_port(kInternalPort, upnp_only(igd, 800ms)).empty());
  EXPECT_LT(seconds_since(t0), 3.0);
  // Nobody holds the late mapping, so its thread removes it.
  ASSERT_TRUE(portmap_threads_done());
  EXPECT_EQ(igd.actions("AddPortMapping").size(), 1u);
  const auto del = igd.actions("DeletePortMapping");
  ASSERT_EQ(del.size(), 1u);
  EXPECT_EQ(tag(del[0].body, "NewExternalPort"), "51820");
}

TEST_F(PortMap, BothProtocolsAtOnce) {
  FakeNatPmp gw({});
  ASSERT_TRUE(gw.ok());
  FakeIgd igd({});
  ASSERT_TRUE(igd.ok());
  PortMapOptions o = upnp_only(igd);
  o.natpmp = true;
  o.natpmp_gateway = dataplane::IpAddress::parse("127.0.0.1");
  const auto t0 = Clock::now();
  const auto maps = map_udp_port(kInternalPort, o);
  EXPECT_LT(seconds_since(t0), 1.5);
  ASSERT_EQ(maps.size(), 2u);
  EXPECT_EQ(maps[0].kind, PortMapKind::kNatPmp);
  EXPECT_EQ(maps[0].external.str(), "203.0.113.7:40123");
  EXPECT_EQ(maps[1].kind, PortMapKind::kUpnp);
  EXPECT_EQ(maps[1].external.str(), "198.51.100.9:51820");
  for (const auto& m : maps) unmap_udp_port(m, o);
  EXPECT_EQ(igd.actions("DeletePortMapping").size(), 1u);
  const auto reqs = gw.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(be32(&reqs[2][8]), 0u);
}

}  // namespace
}  // namespace meshwg::control
