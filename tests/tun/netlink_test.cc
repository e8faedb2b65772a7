// rtnetlink helpers (tun/netlink.h) against the real kernel, each result checked against an
// independent reader: iproute2's JSON output (`ip -j link/addr/route show`, parsed with
// nlohmann-json). Needs root (CAP_NET_ADMIN); skipped otherwise.
//
// The whole process moves into a fresh network namespace on first use (unshare(CLONE_NEWNET),
// while gtest is still single-threaded), so nothing touches the host's interfaces and
// everything vanishes when the process exits. Every test starts from the same namespace:
//
//     lo      127.0.0.1/8, ::1/128 (up)
//     mwgnl0  dummy, or a veth (peer mwgnl0p, up) where the kernel has no dummy driver; down
//     mwgnl1  the same; down
//
// IPv6 DAD is switched off in the namespace so link-local addresses are final at once and no
// late DAD notification reaches a NetlinkMonitor test. Waits are bounded (poll with timeouts,
// settle() gives up after 5 s).
#include "tun/netlink.h"

#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/private_netns.h"

namespace meshwg::tun {
namespace {

using dataplane::IpAddress;
using dataplane::IpPrefix;
using nlohmann::json;

constexpr char kIf0[] = "mwgnl0";
constexpr char kIf1[] = "mwgnl1";
constexpr int kGhost = 999999;  // an ifindex no link has (checked in SetUp)

using meshwg::testing::enter_netns;
using meshwg::testing::sh;

// "dummy" or "veth": what make_link() created (the test kernel may lack the dummy driver).
std::string g_link_kind;

bool make_link(const std::string& name) {
  g_link_kind = meshwg::testing::make_link(name);
  return !g_link_kind.empty();
}

// Output of `ip -j ARGS` as JSON (discarded/null on failure).
json ip_json(const std::string& args) {
  std::string cmd = "ip -j " + args + " 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return json();
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  json j = json::parse(out, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? json() : j;
}

json ip_link(const std::string& name) {
  json j = ip_json("link show dev " + name);
  return j.is_array() && j.size() == 1 ? j[0] : json();
}

bool has_flag(const json& link, const std::string& flag) {
  if (!link.contains("flags")) return false;
  for (const auto& f : link["flags"])
    if (f == flag) return true;
  return false;
}

// The addr_info entries of one link as ip reports them.
std::vector<json> ip_addrs(const std::string& name) {
  std::vector<json> v;
  json j = ip_json("addr show dev " + name);
  if (!j.is_array() || j.size() != 1 || !j[0].contains("addr_info")) return v;
  for (const auto& a : j[0]["addr_info"]) v.push_back(a);
  return v;
}

bool ip_has_addr(const std::string& name, const std::string& local, int prefixlen) {
  for (const auto& a : ip_addrs(name))
    if (a.value("local", "") == local && a.value("prefixlen", -1) == prefixlen) return true;
  return false;
}

std::optional<json> ip_route(const std::string& family, const std::string& dst) {
  json j = ip_json(family + " route show table main");
  if (!j.is_array()) return std::nullopt;
  for (const auto& r : j)
    if (r.value("dst", "") == dst) return r;
  return std::nullopt;
}

bool operational(const std::string& name) {
  const json l = ip_link(name);
  if (!has_flag(l, "LOWER_UP") || !has_flag(l, "UP")) return false;
  for (const auto& a : ip_addrs(name))
    if (a.value("scope", "") == "link" && a.value("family", "") == "inet6") return true;
  return false;
}

// Waits until ip shows the link (and its veth peer) operationally up (carrier arrives via
// linkwatch, which can lag up to a second) with an IPv6 link-local address, so two snapshots
// taken afterwards agree.
bool settle(const std::string& name) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < until) {
    if (operational(name) && (g_link_kind != "veth" || operational(name + "p"))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

IpPrefix pfx(const char* addr, int len) {
  IpPrefix p;
  p.addr = *IpAddress::parse(addr);
  p.cidr = static_cast<uint8_t>(len);
  return p;
}

// Bounded wait for the monitor's fd. True if readable within ms.
bool readable(const NetlinkMonitor& m, int ms) {
  pollfd p{m.fd(), POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

// Reads everything pending and waits until the namespace has been quiet for 300 ms, so a test
// starts from "nothing pending".
void quiesce(NetlinkMonitor& m) {
  for (int i = 0; i < 20 && readable(m, 300); ++i) (void)m.drain_changed();
}

class NetlinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = enter_netns();
    if (!why.empty()) GTEST_SKIP() << why;
    cleanup();
    ASSERT_TRUE(make_link(kIf0)) << "cannot create a dummy or veth link";
    ASSERT_TRUE(make_link(kIf1));
    idx0_ = ip_link(kIf0).value("ifindex", 0);
    idx1_ = ip_link(kIf1).value("ifindex", 0);
    ASSERT_GT(idx0_, 0);
    ASSERT_GT(idx1_, 0);
    const json links = ip_json("link show");
    ASSERT_TRUE(links.is_array() && links.size() >= 3) << links.dump();
    for (const auto& l : links) ASSERT_NE(l.value("ifindex", 0), kGhost) << l.dump();
  }
  void TearDown() override {
    if (enter_netns().empty()) cleanup();
  }
  static void cleanup() {
    sh(std::string("ip link del ") + kIf0);  // a veth takes its peer along
    sh(std::string("ip link del ") + kIf1);
  }
  int idx0_ = 0;
  int idx1_ = 0;
};

TEST(NetlinkStrerror, NamesErrnos) {
  EXPECT_EQ(netlink_strerror(-EEXIST), std::strerror(EEXIST));
  EXPECT_EQ(netlink_strerror(-ENODEV), std::strerror(ENODEV));
  EXPECT_EQ(netlink_strerror(0), "success");
}

TEST_F(NetlinkTest, LinkIndexMatchesIp) {
  EXPECT_EQ(link_index(kIf0), idx0_);
  EXPECT_EQ(link_index(kIf1), idx1_);
  EXPECT_EQ(link_index("lo"), ip_link("lo").value("ifindex", -1));
  EXPECT_EQ(link_index("mwgnope0"), -ENODEV);
  EXPECT_EQ(link_index(""), -EINVAL);
  EXPECT_EQ(link_index("a-name-longer-15"), -EINVAL);
  EXPECT_EQ(link_index(std::string_view("lo\0x", 4)), -EINVAL);
}

TEST_F(NetlinkTest, GetAndListLinksMatchIp) {
  LinkInfo li;
  ASSERT_EQ(get_link(idx0_, li), 0);
  EXPECT_EQ(li.ifindex, idx0_);
  EXPECT_EQ(li.name, kIf0);
  EXPECT_EQ(li.mtu, ip_link(kIf0).value("mtu", 0u));
  EXPECT_EQ((li.flags & IFF_UP) != 0, has_flag(ip_link(kIf0), "UP"));
  EXPECT_EQ(get_link(kGhost, li), -ENODEV);
  EXPECT_EQ(get_link(0, li), -EINVAL);

  std::vector<LinkInfo> links;
  ASSERT_EQ(list_links(links), 0);
  std::set<std::tuple<int, std::string, uint32_t, bool>> ours, theirs;
  for (const auto& l : links) ours.emplace(l.ifindex, l.name, l.mtu, (l.flags & IFF_UP) != 0);
  for (const auto& l : ip_json("link show"))
    theirs.emplace(l.value("ifindex", 0), l.value("ifname", ""), l.value("mtu", 0u),
                   has_flag(l, "UP"));
  EXPECT_EQ(ours, theirs);
  EXPECT_GE(ours.size(), 3u);  // lo and the two test links at least
}

TEST_F(NetlinkTest, SetsMtu) {
  ASSERT_EQ(set_link_mtu(idx0_, 1380), 0);
  EXPECT_EQ(ip_link(kIf0).value("mtu", 0), 1380);
  ASSERT_EQ(set_link_mtu(idx0_, 9000), 0);
  EXPECT_EQ(ip_link(kIf0).value("mtu", 0), 9000);
  LinkInfo li;
  ASSERT_EQ(get_link(idx0_, li), 0);
  EXPECT_EQ(li.mtu, 9000u);
  EXPECT_EQ(ip_link(kIf1).value("mtu", 0), 1500);  // the other link is untouched

  EXPECT_EQ(set_link_mtu(kGhost, 1400), -ENODEV);
  EXPECT_EQ(set_link_mtu(0, 1400), -EINVAL);
  EXPECT_EQ(set_link_mtu(idx0_, 0x80000000u), -EINVAL);
  if (g_link_kind == "veth") {
    // The kernel's own range check (veth: min_mtu 68); dummy has no lower bound.
    EXPECT_EQ(set_link_mtu(idx0_, 10), -EINVAL);
    EXPECT_EQ(ip_link(kIf0).value("mtu", 0), 9000);
  }
}

TEST_F(NetlinkTest, SetsLinkUpAndDown) {
  ASSERT_FALSE(has_flag(ip_link(kIf0), "UP"));
  ASSERT_EQ(set_link_up(idx0_, true), 0);
  EXPECT_TRUE(has_flag(ip_link(kIf0), "UP"));
  EXPECT_FALSE(has_flag(ip_link(kIf1), "UP"));
  ASSERT_EQ(set_link_up(idx0_, true), 0);  // idempotent
  ASSERT_EQ(set_link_up(idx0_, false), 0);
  EXPECT_FALSE(has_flag(ip_link(kIf0), "UP"));
  EXPECT_EQ(set_link_up(kGhost, true), -ENODEV);
  EXPECT_EQ(set_link_up(-3, true), -EINVAL);
}

TEST_F(NetlinkTest, AddsAndDeletesIpv4Address) {
  const IpPrefix p = pfx("10.88.0.1", 24);
  ASSERT_EQ(add_address(idx0_, p), 0);
  // The host bits survive (10.88.0.1, not 10.88.0.0) and the peer equals the local address.
  bool found = false;
  for (const auto& a : ip_addrs(kIf0)) {
    if (a.value("family", "") != "inet") continue;
    EXPECT_EQ(a.value("local", ""), "10.88.0.1");
    EXPECT_EQ(a.value("prefixlen", 0), 24);
    EXPECT_EQ(a.value("scope", ""), "global");
    EXPECT_FALSE(a.contains("address")) << "a point-to-point peer was set: " << a.dump();
    found = true;
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(add_address(idx0_, p), -EEXIST);
  EXPECT_FALSE(ip_has_addr(kIf1, "10.88.0.1", 24));
  ASSERT_EQ(add_address(idx1_, pfx("10.88.0.2", 32)), 0);
  EXPECT_TRUE(ip_has_addr(kIf1, "10.88.0.2", 32));

  ASSERT_EQ(del_address(idx0_, p), 0);
  EXPECT_FALSE(ip_has_addr(kIf0, "10.88.0.1", 24));
  EXPECT_TRUE(ip_has_addr(kIf1, "10.88.0.2", 32));
  EXPECT_EQ(del_address(idx0_, p), -EADDRNOTAVAIL);
  EXPECT_EQ(add_address(kGhost, p), -ENODEV);
  EXPECT_EQ(del_address(kGhost, p), -ENODEV);
}

TEST_F(NetlinkTest, AddsAndDeletesIpv6Address) {
  ASSERT_EQ(set_link_up(idx0_, true), 0);
  const IpPrefix p = pfx("fd88::1", 64);
  ASSERT_EQ(add_address(idx0_, p), 0);
  bool found = false;
  for (const auto& a : ip_addrs(kIf0)) {
    if (a.value("local", "") != "fd88::1") continue;
    EXPECT_EQ(a.value("prefixlen", 0), 64);
    EXPECT_EQ(a.value("scope", ""), "global");
    EXPECT_TRUE(a.value("nodad", false));
    EXPECT_FALSE(a.value("tentative", false));
    found = true;
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(add_address(idx0_, p), -EEXIST);
  ASSERT_EQ(del_address(idx0_, p), 0);
  EXPECT_FALSE(ip_has_addr(kIf0, "fd88::1", 64));
  EXPECT_EQ(del_address(idx0_, p), -EADDRNOTAVAIL);
  EXPECT_EQ(add_address(kGhost, p), -ENODEV);
}

TEST_F(NetlinkTest, AddsAndDeletesRoutes) {
  ASSERT_EQ(set_link_up(idx0_, true), 0);
  const IpPrefix r4 = pfx("10.99.0.7", 32), r6 = pfx("fd99::7", 128);

  // The kernel wants the link up (kIf1 is down).
  EXPECT_EQ(add_route(idx1_, r4), -ENETDOWN);
  EXPECT_EQ(add_route(idx1_, r6), -ENETDOWN);
  EXPECT_EQ(add_route(kGhost, r4), -ENODEV);
  EXPECT_EQ(add_route(kGhost, r6), -ENODEV);

  ASSERT_EQ(add_route(idx0_, r4), 0);
  auto j4 = ip_route("-4", "10.99.0.7");
  ASSERT_TRUE(j4.has_value());
  EXPECT_EQ(j4->value("dev", ""), kIf0);
  EXPECT_EQ(j4->value("scope", ""), "link");
  EXPECT_EQ(j4->value("protocol", ""), "static");
  EXPECT_FALSE(j4->contains("gateway"));
  EXPECT_EQ(add_route(idx0_, r4), -EEXIST);

  ASSERT_EQ(add_route(idx0_, r6), 0);
  auto j6 = ip_route("-6", "fd99::7");
  ASSERT_TRUE(j6.has_value());
  EXPECT_EQ(j6->value("dev", ""), kIf0);
  EXPECT_EQ(j6->value("protocol", ""), "static");
  EXPECT_EQ(add_route(idx0_, r6), -EEXIST);

  // A shorter prefix is a different route.
  ASSERT_EQ(add_route(idx0_, pfx("10.99.0.0", 24)), 0);
  EXPECT_TRUE(ip_route("-4", "10.99.0.0/24").has_value());

  ASSERT_EQ(del_route(idx0_, r4), 0);
  EXPECT_FALSE(ip_route("-4", "10.99.0.7").has_value());
  EXPECT_TRUE(ip_route("-4", "10.99.0.0/24").has_value());
  EXPECT_EQ(del_route(idx0_, r4), -ESRCH);
  ASSERT_EQ(del_route(idx0_, r6), 0);
  EXPECT_FALSE(ip_route("-6", "fd99::7").has_value());
  EXPECT_EQ(del_route(idx0_, r6), -ESRCH);
  // The kernel looks the device up only to add a route; a delete just finds no such route.
  EXPECT_EQ(del_route(kGhost, r4), -ESRCH);
  EXPECT_EQ(del_route(kGhost, r6), -ESRCH);
}

TEST_F(NetlinkTest, RejectsInvalidPrefixesAndIndexes) {
  IpPrefix unset;  // family 0
  EXPECT_EQ(add_address(idx0_, unset), -EINVAL);
  EXPECT_EQ(add_route(idx0_, unset), -EINVAL);
  EXPECT_EQ(add_address(idx0_, pfx("10.88.0.1", 33)), -EINVAL);
  EXPECT_EQ(add_address(idx0_, pfx("fd88::1", 129)), -EINVAL);
  EXPECT_EQ(del_address(idx0_, pfx("10.88.0.1", 40)), -EINVAL);
  EXPECT_EQ(add_route(idx0_, pfx("10.99.0.0", 33)), -EINVAL);
  EXPECT_EQ(add_route(idx0_, pfx("fd99::", 200)), -EINVAL);
  // Host bits set beyond the prefix length: not a route destination.
  ASSERT_EQ(set_link_up(idx0_, true), 0);
  EXPECT_EQ(add_route(idx0_, pfx("10.99.0.7", 24)), -EINVAL);
  EXPECT_EQ(add_route(idx0_, pfx("fd99::7", 64)), -EINVAL);
  EXPECT_EQ(add_address(0, pfx("10.88.0.1", 24)), -EINVAL);
  EXPECT_EQ(add_route(-1, pfx("10.99.0.7", 32)), -EINVAL);
  // Nothing of the above reached the kernel.
  EXPECT_FALSE(ip_has_addr(kIf0, "10.88.0.1", 33));
  EXPECT_FALSE(ip_route("-4", "10.99.0.0/24").has_value());
}

// One comparable row per address: ifindex, link name, address, prefix length, scope name as
// ip prints it, and the IPv6 state flags.
using Row = std::tuple<int, std::string, std::string, int, std::string, bool, bool, bool>;

std::string scope_name(uint8_t s) {
  switch (s) {
    case RT_SCOPE_UNIVERSE: return "global";
    case RT_SCOPE_SITE: return "site";
    case RT_SCOPE_LINK: return "link";
    case RT_SCOPE_HOST: return "host";
    default: return std::to_string(s);
  }
}

std::set<Row> rows_of(const std::vector<LinkAddress>& v) {
  std::set<Row> s;
  for (const auto& a : v)
    s.emplace(a.ifindex, a.ifname, a.address.str(), a.prefixlen, scope_name(a.scope),
              (a.flags & IFA_F_TENTATIVE) != 0, (a.flags & IFA_F_DEPRECATED) != 0,
              (a.flags & IFA_F_NODAD) != 0);
  return s;
}

std::set<Row> rows_of_ip() {
  std::set<Row> s;
  for (const auto& l : ip_json("addr show")) {
    if (!l.contains("addr_info")) continue;
    for (const auto& a : l["addr_info"])
      s.emplace(l.value("ifindex", 0), l.value("ifname", ""), a.value("local", ""),
                a.value("prefixlen", -1), a.value("scope", ""), a.value("tentative", false),
                a.value("deprecated", false), a.value("nodad", false));
  }
  return s;
}

std::string dump_rows(const std::set<Row>& s) {
  std::ostringstream o;
  for (const auto& [i, n, a, p, sc, t, d, nd] : s)
    o << "  " << i << " " << n << " " << a << "/" << p << " " << sc << (t ? " tentative" : "")
      << (d ? " deprecated" : "") << (nd ? " nodad" : "") << "\n";
  return o.str();
}

TEST_F(NetlinkTest, ListAddressesMatchesIp) {
  ASSERT_EQ(set_link_up(idx0_, true), 0);
  ASSERT_EQ(add_address(idx0_, pfx("10.88.0.1", 24)), 0);
  ASSERT_EQ(add_address(idx0_, pfx("10.88.0.9", 24)), 0);  // secondary
  ASSERT_EQ(add_address(idx0_, pfx("fd88::1", 64)), 0);
  ASSERT_TRUE(sh(std::string("ip -6 addr add fd88::2/64 dev ") + kIf0 + " preferred_lft 0"));
  ASSERT_EQ(add_address(idx1_, pfx("10.89.0.1", 16)), 0);
  ASSERT_EQ(add_address(idx1_, pfx("fd89::1", 128)), 0);
  ASSERT_TRUE(settle(kIf0));

  std::vector<LinkAddress> v;
  ASSERT_EQ(list_addresses(v), 0);
  const auto ours = rows_of(v), theirs = rows_of_ip();
  EXPECT_EQ(ours, theirs) << "list_addresses:\n" << dump_rows(ours) << "ip -j addr:\n"
                          << dump_rows(theirs);
  // Both families, every link, and the link flags as ip sees them.
  EXPECT_TRUE(theirs.count({1, "lo", "127.0.0.1", 8, "host", false, false, false}));
  EXPECT_TRUE(theirs.count({1, "lo", "::1", 128, "host", false, false, false}));
  EXPECT_TRUE(theirs.count({idx0_, kIf0, "fd88::2", 64, "global", false, true, false}));
  for (const auto& a : v) {
    const json l = ip_link(a.ifname);
    EXPECT_EQ((a.link_flags & IFF_UP) != 0, has_flag(l, "UP")) << a.ifname;
    EXPECT_EQ((a.link_flags & IFF_LOOPBACK) != 0, has_flag(l, "LOOPBACK")) << a.ifname;
  }
  // A previously filled vector is replaced, not appended to.
  ASSERT_EQ(list_addresses(v), 0);
  EXPECT_EQ(rows_of(v).size(), v.size());
}

const LinkAddress* find(const std::vector<LinkAddress>& v, const std::string& addr) {
  for (const auto& a : v)
    if (a.address.str() == addr) return &a;
  return nullptr;
}

const LinkAddress* find_link_local(const std::vector<LinkAddress>& v, int ifindex) {
  for (const auto& a : v)
    if (a.ifindex == ifindex && a.address.family == 6 && a.address.bytes[0] == 0xfe) return &a;
  return nullptr;
}

TEST_F(NetlinkTest, GatherableKeepsOnlyUsefulCandidates) {
  ASSERT_EQ(set_link_up(idx0_, true), 0);
  ASSERT_EQ(add_address(idx0_, pfx("10.88.0.1", 24)), 0);
  ASSERT_EQ(add_address(idx0_, pfx("fd88::1", 64)), 0);
  ASSERT_EQ(add_address(idx0_, pfx("169.254.7.1", 16)), 0);
  ASSERT_TRUE(sh(std::string("ip -6 addr add fd88::2/64 dev ") + kIf0 + " preferred_lft 0"));
  ASSERT_EQ(add_address(idx1_, pfx("10.89.0.1", 24)), 0);  // kIf1 stays down for now
  ASSERT_TRUE(settle(kIf0));

  std::vector<LinkAddress> v;
  ASSERT_EQ(list_addresses(v), 0);
  for (const char* addr : {"127.0.0.1", "::1", "10.88.0.1", "fd88::1", "169.254.7.1",
                           "fd88::2", "10.89.0.1"})
    ASSERT_NE(find(v, addr), nullptr) << addr;
  const LinkAddress* ll = find_link_local(v, idx0_);
  ASSERT_NE(ll, nullptr);

  EXPECT_TRUE(gatherable(*find(v, "10.88.0.1"), 0));
  EXPECT_TRUE(gatherable(*find(v, "fd88::1"), 0));
  EXPECT_TRUE(gatherable(*find(v, "fd88::1"), idx1_));
  EXPECT_FALSE(gatherable(*find(v, "10.88.0.1"), idx0_)) << "the excluded (tunnel) link";
  EXPECT_FALSE(gatherable(*find(v, "fd88::1"), idx0_));
  EXPECT_FALSE(gatherable(*find(v, "127.0.0.1"), 0));
  EXPECT_FALSE(gatherable(*find(v, "::1"), 0));
  EXPECT_FALSE(gatherable(*ll, 0)) << ll->address.str();
  EXPECT_FALSE(gatherable(*find(v, "169.254.7.1"), 0));
  ASSERT_TRUE(find(v, "fd88::2")->flags & IFA_F_DEPRECATED);
  EXPECT_FALSE(gatherable(*find(v, "fd88::2"), 0));
  EXPECT_FALSE(gatherable(*find(v, "10.89.0.1"), 0)) << "a link that is down";

  // Bringing kIf1 up is what makes its address a candidate.
  ASSERT_EQ(set_link_up(idx1_, true), 0);
  ASSERT_TRUE(settle(kIf1));
  ASSERT_EQ(list_addresses(v), 0);
  ASSERT_NE(find(v, "10.89.0.1"), nullptr);
  EXPECT_TRUE(gatherable(*find(v, "10.89.0.1"), 0));
  EXPECT_TRUE(gatherable(*find(v, "10.89.0.1"), idx0_));

  // States the namespace does not produce on its own.
  LinkAddress a = *find(v, "fd88::1");
  ASSERT_TRUE(gatherable(a, 0));
  for (uint32_t f : {IFA_F_TENTATIVE, IFA_F_DADFAILED, IFA_F_DEPRECATED}) {
    LinkAddress b = a;
    b.flags |= f;
    EXPECT_FALSE(gatherable(b, 0)) << "IFA_F 0x" << std::hex << f;
  }
  LinkAddress b = a;
  b.link_flags &= ~static_cast<uint32_t>(IFF_RUNNING);  // up, but no carrier
  EXPECT_FALSE(gatherable(b, 0));
  b = a;
  b.link_flags |= IFF_LOOPBACK;
  EXPECT_FALSE(gatherable(b, 0));
  b = a;
  b.scope = RT_SCOPE_HOST;
  EXPECT_FALSE(gatherable(b, 0));
  b = a;
  b.address = *IpAddress::parse("ff02::1");
  EXPECT_FALSE(gatherable(b, 0));
  b = a;
  b.address = IpAddress{};
  EXPECT_FALSE(gatherable(b, 0));
  b = *find(v, "10.88.0.1");
  b.address = *IpAddress::parse("224.0.0.5");
  EXPECT_FALSE(gatherable(b, 0));
  b.address = *IpAddress::parse("0.0.0.0");
  EXPECT_FALSE(gatherable(b, 0));
}

TEST_F(NetlinkTest, MonitorReportsAddressAndLinkChanges) {
  NetlinkMonitor m;
  EXPECT_EQ(m.fd(), -1);
  EXPECT_FALSE(m.drain_changed());
  ASSERT_EQ(m.open(), 0);
  ASSERT_GE(m.fd(), 0);
  quiesce(m);

  // Nothing happens: nothing is reported.
  EXPECT_FALSE(readable(m, 300));
  EXPECT_FALSE(m.drain_changed());

  ASSERT_EQ(add_address(idx1_, pfx("10.89.0.1", 24)), 0);
  ASSERT_TRUE(readable(m, 2000));
  EXPECT_TRUE(m.drain_changed());
  EXPECT_FALSE(m.drain_changed()) << "everything was drained";

  ASSERT_EQ(del_address(idx1_, pfx("10.89.0.1", 24)), 0);
  ASSERT_TRUE(readable(m, 2000));
  EXPECT_TRUE(m.drain_changed());

  ASSERT_EQ(add_address(idx1_, pfx("fd89::1", 64)), 0);
  ASSERT_TRUE(readable(m, 2000));
  EXPECT_TRUE(m.drain_changed());

  ASSERT_EQ(set_link_mtu(idx1_, 1400), 0);
  ASSERT_TRUE(readable(m, 2000));
  EXPECT_TRUE(m.drain_changed());
  quiesce(m);
  EXPECT_FALSE(m.drain_changed());
  EXPECT_EQ(m.overruns(), 0u);

  // Moving keeps the subscription.
  NetlinkMonitor m2 = std::move(m);
  EXPECT_EQ(m.fd(), -1);
  ASSERT_GE(m2.fd(), 0);
  ASSERT_TRUE(sh(std::string("ip addr add 10.89.0.2/24 dev ") + kIf1));
  ASSERT_TRUE(readable(m2, 2000));
  EXPECT_TRUE(m2.drain_changed());
}

TEST_F(NetlinkTest, MonitorReportsRoutesOnlyWhenAsked) {
  ASSERT_EQ(set_link_up(idx0_, true), 0);
  ASSERT_TRUE(settle(kIf0));
  NetlinkMonitor plain, routes;
  ASSERT_EQ(plain.open(false), 0);
  ASSERT_EQ(routes.open(true), 0);
  quiesce(plain);
  quiesce(routes);

  ASSERT_EQ(add_route(idx0_, pfx("10.99.0.7", 32)), 0);
  ASSERT_TRUE(readable(routes, 2000));
  EXPECT_TRUE(routes.drain_changed());
  // The route group was not joined; an empty queue is the proof (not a filter in drain).
  EXPECT_FALSE(readable(plain, 300));
  EXPECT_FALSE(plain.drain_changed());
}

// Sends well-formed RTM_NEWADDR messages from an ordinary netlink socket (as any other process
// could) to the monitor's port id, until count are sent or, with MSG_DONTWAIT, its receive
// queue is full. Returns how many were delivered.
int forge_notifications(const NetlinkMonitor& m, int ifindex, int count) {
  sockaddr_nl self{};
  socklen_t len = sizeof self;
  if (::getsockname(m.fd(), reinterpret_cast<sockaddr*>(&self), &len) != 0) return -1;
  mnl_socket* nl = mnl_socket_open(NETLINK_ROUTE);
  if (!nl) return -1;
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) != 0) {
    mnl_socket_close(nl);
    return -1;
  }
  alignas(nlmsghdr) uint8_t buf[256] = {};
  nlmsghdr* h = mnl_nlmsg_put_header(buf);
  h->nlmsg_type = RTM_NEWADDR;
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(h, sizeof(ifaddrmsg)));
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = 32;
  ifa->ifa_index = static_cast<uint32_t>(ifindex);
  const uint8_t addr[4] = {10, 91, 0, 1};
  mnl_attr_put(h, IFA_LOCAL, sizeof addr, addr);
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  to.nl_pid = self.nl_pid;
  int sent = 0;
  while (sent < count && ::sendto(mnl_socket_get_fd(nl), h, h->nlmsg_len, MSG_DONTWAIT,
                                  reinterpret_cast<sockaddr*>(&to), sizeof to) ==
                             static_cast<ssize_t>(h->nlmsg_len))
    ++sent;
  mnl_socket_close(nl);
  return sent;
}

TEST_F(NetlinkTest, MonitorIgnoresMessagesNotFromKernel) {
  NetlinkMonitor m;
  ASSERT_EQ(m.open(), 0);
  quiesce(m);
  ASSERT_EQ(forge_notifications(m, idx0_, 3), 3) << std::strerror(errno);
  ASSERT_TRUE(readable(m, 2000)) << "the forged messages did not arrive";
  EXPECT_FALSE(m.drain_changed());
  EXPECT_FALSE(readable(m, 0)) << "they were read, not left in the queue";
}

TEST_F(NetlinkTest, MonitorOverrunCountsAsChange) {
  NetlinkMonitor m;
  ASSERT_EQ(m.open(), 0);
  quiesce(m);
  // Fill the (smallest possible) receive queue with forged messages, which drain_changed()
  // ignores, so that the kernel's notification of the next change is dropped: the ENOBUFS
  // that this leaves on the socket is then the only sign of the change.
  int one = 1;
  ASSERT_EQ(::setsockopt(m.fd(), SOL_SOCKET, SO_RCVBUF, &one, sizeof one), 0);
  const int forged = forge_notifications(m, idx0_, 10000);
  ASSERT_GT(forged, 0);
  ASSERT_LT(forged, 10000) << "the receive queue never filled";
  ASSERT_EQ(add_address(idx1_, pfx("10.90.0.1", 32)), 0);
  ASSERT_TRUE(readable(m, 2000));
  EXPECT_TRUE(m.drain_changed());
  EXPECT_EQ(m.overruns(), 1u);
  EXPECT_FALSE(m.drain_changed());

  // A burst of real changes that overflows the queue is reported too.
  for (int i = 2; i <= 64; ++i)
    ASSERT_EQ(add_address(idx1_, pfx(("10.90.0." + std::to_string(i)).c_str(), 32)), 0);
  ASSERT_TRUE(readable(m, 2000));
  EXPECT_TRUE(m.drain_changed());
  EXPECT_GE(m.overruns(), 2u);
  EXPECT_FALSE(m.drain_changed());
}

}  // namespace
}  // namespace meshwg::tun
