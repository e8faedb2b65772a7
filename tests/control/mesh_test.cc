// Mesh mode's control plane (control/mesh.h) in a private network namespace: setup() applies
// the interface settings over rtnetlink (checked with `ip -j`) and hands the device one set
// with the config's peers plus the WG-STUN server (checked on a recording driver); the
// control thread gathers local candidates (and follows address changes), the check socket's
// mapping from a real STUN server on loopback, the WG-STUN probe's answer, and serves it all
// on its status socket. Needs root; skipped otherwise. Waits are bounded (5 s).
#include "control/mesh.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sodium.h>

#include <atomic>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "control/status.h"
#include "control/stun_server.h"
#include "control/uapi_client.h"
#include "control/wgstun_server.h"
#include "tests/private_netns.h"

namespace meshwg::control {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::sh;

constexpr char kTun[] = "mwmt0";  // stands in for the TUN
constexpr char kLan[] = "mwmt1";
constexpr char kPeerPub[] = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
constexpr char kServerPub[] = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

std::string b64(std::span<const uint8_t, 32> key) {
  char out[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(out, sizeof(out), key.data(), key.size(), sodium_base64_VARIANT_ORIGINAL);
  return out;
}

json ip_json(const std::string& args) {
  std::string out;
  if (FILE* f = ::popen(("ip -j " + args + " 2>/dev/null").c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    ::pclose(f);
  }
  return json::parse(out, nullptr, false);
}

class RecordingDriver final : public WgDriver {
 public:
  int set(const SetRequest& req) override {
    sets.push_back(req);
    return 0;
  }
  std::optional<DeviceSnapshot> get() override {
    DeviceSnapshot s;
    s.listen_port = 51000;
    return s;
  }
  std::vector<SetRequest> sets;
};

// A real STUN server (control/stun_server.h) on its own thread.
struct StunThread {
  StunServer server;
  std::atomic<bool> stop{false};
  std::thread t;
  bool open(const std::string& addr) {
    std::string err;
    if (!server.open(*dataplane::Endpoint::parse(addr), err)) return false;
    t = std::thread([this] {
      for (int i = 0; i < 10000 && !stop; ++i) {
        pollfd p{server.fd(), POLLIN, 0};
        if (::poll(&p, 1, 50) > 0) (void)server.on_readable();
      }
    });
    return true;
  }
  ~StunThread() {
    stop = true;
    if (t.joinable()) t.join();
  }
};

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

bool has(const std::vector<Candidate>& cs, CandidateKind k, const std::string& addr) {
  for (const auto& c : cs)
    if (c.kind == k && unmap_v4_endpoint(c.address).str() == addr) return true;
  return false;
}
size_t count(const std::vector<Candidate>& cs, CandidateKind k) {
  size_t n = 0;
  for (const auto& c : cs) n += c.kind == k;
  return n;
}

class MeshTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = testing::enter_netns(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(crypto::init());
    ASSERT_FALSE(testing::make_link(kTun).empty());
    ASSERT_FALSE(testing::make_link(kLan).empty());
    ASSERT_TRUE(sh(std::string("ip addr add 192.0.2.10/24 dev ") + kLan));
    ASSERT_TRUE(sh(std::string("ip link set ") + kLan + " up"));
  }
  void TearDown() override {
    sh(std::string("ip link del ") + kTun);
    sh(std::string("ip link del ") + kLan);
    sh("ip addr del 100.100.100.100/32 dev lo");
  }
  MeshConfig config(const std::string& stun) {
    crypto::Key priv;
    crypto::x25519_generate(priv.span());
    const std::string text =
        "[Interface]\nPrivateKey = " + b64(priv.span()) +
        "\nListenPort = 51000\nAddress = 10.99.0.2/24\nMTU = 1380\n"
        "[Peer]\nPublicKey = " + kPeerPub +
        "\nAllowedIPs = 10.50.0.0/16, 0.0.0.0/0\nEndpoint = 192.0.2.7:51820\n"
        "PersistentKeepalive = 15\n"
        "[WGStun]\nEndpoint = 192.0.2.1:51820\nPublicKey = " + kServerPub +
        "\nStun = " + stun + "\n";
    ConfigError err;
    auto c = parse_mesh_config(text, "m.conf", err);
    EXPECT_TRUE(c) << err.message;
    return c ? *c : MeshConfig{};
  }
  MeshOptions options() {
    MeshOptions o;
    o.ifname = kTun;
    o.status_socket = "/tmp/meshwg-mesh-test-" + std::to_string(::getpid()) + ".mesh";
    o.portmap_options.timeout = 300ms;  // nothing answers in this namespace
    return o;
  }
};

TEST_F(MeshTest, SetupConfiguresTheInterfaceAndHandsTheDeviceOneSet) {
  RecordingDriver drv;
  MeshControl mesh(config("127.0.0.1:3478"), drv, options());
  std::string err;
  ASSERT_TRUE(mesh.setup(err)) << err;
  EXPECT_EQ(mesh.listen_port(), 51000);

  const json link = ip_json(std::string("addr show dev ") + kTun);
  ASSERT_TRUE(link.is_array() && link.size() == 1);
  EXPECT_EQ(link[0]["mtu"], 1380);
  bool addr = false;
  for (const auto& a : link[0]["addr_info"])
    addr |= a["local"] == "10.99.0.2" && a["prefixlen"] == 24;
  EXPECT_TRUE(addr) << link.dump();
  const auto flags = link[0]["flags"];
  EXPECT_NE(std::find(flags.begin(), flags.end(), "UP"), flags.end());
  const json routes = ip_json(std::string("route show dev ") + kTun);
  std::set<std::string> dsts;
  for (const auto& r : routes) dsts.insert(r["dst"].get<std::string>());
  EXPECT_TRUE(dsts.count("10.50.0.0/16"));
  EXPECT_TRUE(dsts.count("100.100.100.100"));
  EXPECT_FALSE(dsts.count("default")) << "the default route stays the user's business";
  const json r6 = ip_json(std::string("-6 route show dev ") + kTun);
  bool v6 = false;
  for (const auto& r : r6) v6 |= r["dst"] == "fd6d:6573:6877::1";
  EXPECT_TRUE(v6) << r6.dump();

  ASSERT_EQ(drv.sets.size(), 1u) << "one atomic set";
  const SetRequest& s = drv.sets[0];
  EXPECT_TRUE(s.private_key);
  EXPECT_EQ(s.listen_port, 51000);
  EXPECT_TRUE(s.replace_peers);
  ASSERT_EQ(s.peers.size(), 2u);
  EXPECT_EQ(b64(s.peers[0].public_key), kPeerPub);
  ASSERT_TRUE(s.peers[0].endpoint);
  EXPECT_EQ(s.peers[0].endpoint->str(), "192.0.2.7:51820");
  EXPECT_EQ(s.peers[0].persistent_keepalive, 15);
  EXPECT_EQ(s.peers[0].allowed_ips.size(), 2u);
  EXPECT_EQ(b64(s.peers[1].public_key), kServerPub);
  ASSERT_TRUE(s.peers[1].endpoint);
  EXPECT_EQ(s.peers[1].endpoint->str(), "192.0.2.1:51820");
  EXPECT_EQ(s.peers[1].persistent_keepalive, 25);
  ASSERT_EQ(s.peers[1].allowed_ips.size(), 2u);
  EXPECT_EQ(s.peers[1].allowed_ips[0].prefix.str(), "100.100.100.100/32");
  EXPECT_EQ(s.peers[1].allowed_ips[1].prefix.str(), "fd6d:6573:6877::1/128");
}

TEST_F(MeshTest, WgStunServerKeyEqualToAPeerIsRefused) {
  RecordingDriver drv;
  MeshConfig c = config("127.0.0.1:3478");
  c.wgstun->public_key = c.peers[0].public_key;
  MeshControl mesh(c, drv, options());
  std::string err;
  EXPECT_FALSE(mesh.setup(err));
  EXPECT_NE(err.find("[WGStun]"), std::string::npos) << err;
  EXPECT_TRUE(drv.sets.empty());
}

TEST_F(MeshTest, GathersLocalStunAndWgStunCandidatesAndFollowsAddressChanges) {
  StunThread stun;
  ASSERT_TRUE(stun.open("127.0.0.1:0"));
  // The WG-STUN probe goes to 100.100.100.100:3478. Here no WireGuard carries it: that
  // address is local, so a STUN server bound to it answers (the netns lab tests the tunnel).
  ASSERT_TRUE(sh("ip addr add 100.100.100.100/32 dev lo"));
  StunThread wgstun;
  ASSERT_TRUE(wgstun.open("100.100.100.100:3478"));

  RecordingDriver drv;
  MeshControl mesh(config(stun.server.local().str()), drv, options());
  std::string err;
  ASSERT_TRUE(mesh.setup(err)) << err;
  ASSERT_TRUE(mesh.start(err)) << err;
  ASSERT_NE(mesh.check_port(), 0);
  const std::string check = "127.0.0.1:" + std::to_string(mesh.check_port());
  ASSERT_TRUE(eventually([&] {
    const auto cs = mesh.candidates();
    return has(cs, CandidateKind::kStun, check) && count(cs, CandidateKind::kWgStun) == 1;
  })) << mesh.status_json().dump();
  auto cs = mesh.candidates();
  EXPECT_TRUE(has(cs, CandidateKind::kLocal, "192.0.2.10:51000"));
  EXPECT_EQ(count(cs, CandidateKind::kLocal), 1u) << "not the tunnel, not loopback";
  EXPECT_EQ(count(cs, CandidateKind::kUpnp) + count(cs, CandidateKind::kNatPmp), 0u);
  EXPECT_GE(stun.server.count(StunServerCounter::kSuccess), 1u);

  // rtnetlink events refresh the local candidates.
  ASSERT_TRUE(sh(std::string("ip addr add 198.51.100.9/24 dev ") + kLan));
  EXPECT_TRUE(eventually(
      [&] { return has(mesh.candidates(), CandidateKind::kLocal, "198.51.100.9:51000"); }));
  ASSERT_TRUE(sh(std::string("ip addr del 198.51.100.9/24 dev ") + kLan));
  EXPECT_TRUE(eventually(
      [&] { return !has(mesh.candidates(), CandidateKind::kLocal, "198.51.100.9:51000"); }));
  ASSERT_TRUE(sh(std::string("ip link set ") + kLan + " down"));
  EXPECT_TRUE(eventually([&] { return count(mesh.candidates(), CandidateKind::kLocal) == 0; }))
      << "a link that is down offers nothing";

  // The status socket serves what `meshwg status` merges.
  const auto doc = read_mesh_status(options().status_socket, err);
  ASSERT_TRUE(doc) << err;
  InterfaceStatus st;
  ASSERT_TRUE(merge_mesh_status(st, *doc)) << *doc;
  EXPECT_EQ(st.check_port, mesh.check_port());
  bool listed = false;
  for (const auto& c : st.candidates) listed |= c.kind == "stun" && c.address == check;
  EXPECT_TRUE(listed) << *doc;

  mesh.stop();
  EXPECT_NE(::access(options().status_socket.c_str(), F_OK), 0) << "stop() removes the socket";
}

}  // namespace
}  // namespace meshwg::control
