// Tests for dataplane/allowedips: the kernel selftest and wireguard-go op lists
// (tests/vectors/allowedips.json), and randomized differential tests against a deliberately
// naive model (a flat list with linear longest match), as the kernel's selftest does.
#include "dataplane/allowedips.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace meshwg::dataplane {
namespace {

using nlohmann::json;

Peer* P(uintptr_t n) { return reinterpret_cast<Peer*>(n); }

// MESHWG_TEST_VECTORS is set by meson test; when the binary is run by hand, look next to
// this source file, then relative to the working directory and to the executable
// (build-dir/tests/dataplane/).
std::filesystem::path vectors_file() {
  namespace fs = std::filesystem;
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("MESHWG_TEST_VECTORS")) dirs.emplace_back(env);
  dirs.push_back(fs::path(__FILE__).parent_path() / ".." / "vectors");
  dirs.emplace_back("tests/vectors");
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) dirs.push_back(exe.parent_path() / ".." / ".." / ".." / "tests" / "vectors");
  for (const auto& d : dirs)
    if (fs::exists(d / "allowedips.json", ec)) return d / "allowedips.json";
  return dirs.front() / "allowedips.json";
}

json load_vectors() {
  const auto path = vectors_file();
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path << " (set MESHWG_TEST_VECTORS)";
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

IpPrefix prefix(const std::string& s) {
  auto p = IpPrefix::parse(s);
  EXPECT_TRUE(p.has_value()) << s;
  return p.value_or(IpPrefix{});
}

IpAddress addr(const std::string& s) {
  auto a = IpAddress::parse(s);
  EXPECT_TRUE(a.has_value()) << s;
  return a.value_or(IpAddress{});
}

// Peers in the vectors are labels "a".."h"; null is no peer.
Peer* label(const json& j) {
  if (j.is_null()) return nullptr;
  const std::string s = j.get<std::string>();
  return P(uintptr_t(s.at(0) - 'a' + 1));
}

std::vector<std::string> prefixes_of(const AllowedIps& t, Peer* peer) {
  std::vector<std::string> out;
  t.for_each(peer, [&](const IpPrefix& p) { out.push_back(p.str()); });
  std::sort(out.begin(), out.end());
  return out;
}

void run_ops(AllowedIps& t, const json& ops) {
  size_t i = 0;
  for (const json& op : ops) {
    const std::string kind = op["op"];
    SCOPED_TRACE("op " + std::to_string(i++) + ": " + op.dump());
    if (kind == "insert") {
      t.insert(prefix(op["prefix"]), label(op["peer"]));
    } else if (kind == "remove") {
      t.remove(prefix(op["prefix"]), label(op["peer"]));
    } else if (kind == "remove_by_peer") {
      t.remove_by_peer(label(op["peer"]));
    } else if (kind == "reset") {
      t.clear();
      EXPECT_EQ(t.size(), 0u);
      EXPECT_EQ(t.node_count(), 0u);
    } else if (kind == "lookup") {
      EXPECT_EQ(t.lookup(addr(op["addr"])), label(op["expect"]));
    } else if (kind == "lookup_not") {
      EXPECT_NE(t.lookup(addr(op["addr"])), label(op["expect_not"]));
    } else {
      ADD_FAILURE() << "unknown op " << kind;
    }
    ASSERT_TRUE(t.self_check());
  }
}

TEST(AllowedIps, KernelStaticOps) {
  const json v = load_vectors();
  ASSERT_TRUE(v.contains("kernel_static_ops"));
  ASSERT_GT(v["kernel_static_ops"].size(), 60u);
  AllowedIps t;
  run_ops(t, v["kernel_static_ops"]);
}

TEST(AllowedIps, WireguardGoRemoveOps) {
  const json v = load_vectors();
  ASSERT_TRUE(v.contains("wireguard_go_remove_ops"));
  AllowedIps t;
  run_ops(t, v["wireguard_go_remove_ops"]);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.node_count(), 0u);
}

TEST(AllowedIps, KernelReadback) {
  const json v = load_vectors();
  ASSERT_TRUE(v.contains("kernel_readback"));
  const json& rb = v["kernel_readback"];
  AllowedIps t;
  for (const json& p : rb["inserted_for_peer_a"]) t.insert(prefix(p), P(1));
  std::vector<std::string> want;
  for (const json& p : rb["expected_enumeration_exactly"]) want.push_back(p);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(prefixes_of(t, P(1)), want);
  EXPECT_EQ(t.size(), want.size());
  EXPECT_TRUE(prefixes_of(t, P(2)).empty());
}

// The kernel inserts 128 /128s that are all-ones except one cleared bit, which builds the
// deepest possible chain; it checks that nothing overflows (bit index < 128).
TEST(AllowedIps, KernelLargeV6Insert) {
  AllowedIps t;
  std::vector<IpAddress> inserted;
  for (int i = 0; i < 128; ++i) {
    uint8_t b[16];
    std::memset(b, 0xff, 16);
    const uint64_t half = ~(uint64_t(1) << (i % 64));
    for (int k = 0; k < 8; ++k) b[(i < 64 ? 0 : 8) + k] = uint8_t(half >> (56 - 8 * k));
    IpPrefix p;
    p.addr = IpAddress::v6(b);
    p.cidr = 128;
    t.insert(p, P(1));
    inserted.push_back(p.addr);
  }
  ASSERT_TRUE(t.self_check());
  EXPECT_EQ(t.size(), 128u);
  for (const auto& a : inserted) EXPECT_EQ(t.lookup(a), P(1)) << a.str();
  uint8_t ones[16];
  std::memset(ones, 0xff, 16);
  EXPECT_EQ(t.lookup(IpAddress::v6(ones)), nullptr);
  t.remove_by_peer(P(1));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.node_count(), 0u);
}

TEST(AllowedIps, Basics) {
  AllowedIps t;
  t.insert(prefix("10.1.2.3/8"), P(1));  // host bits masked
  EXPECT_EQ(prefixes_of(t, P(1)), std::vector<std::string>{"10.0.0.0/8"});
  EXPECT_EQ(t.lookup(addr("10.200.0.1")), P(1));
  EXPECT_EQ(t.lookup(addr("11.0.0.1")), nullptr);

  t.insert(prefix("10.0.0.0/8"), P(2));  // identical prefix moves
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(prefixes_of(t, P(1)).empty());
  EXPECT_EQ(t.lookup(addr("10.200.0.1")), P(2));

  EXPECT_FALSE(t.remove(prefix("10.0.0.0/8"), P(1)));  // not the owner
  EXPECT_FALSE(t.remove(prefix("10.0.0.0/8"), nullptr));
  EXPECT_FALSE(t.remove(prefix("10.0.0.0/9"), P(2)));  // other length
  EXPECT_TRUE(t.remove(prefix("10.0.0.0/8"), P(2)));
  EXPECT_FALSE(t.remove(prefix("10.0.0.0/8"), P(2)));
  EXPECT_EQ(t.size(), 0u);

  // Families are separate tables; /0 is a valid default route.
  t.insert(prefix("::/0"), P(3));
  EXPECT_EQ(t.lookup(addr("1.2.3.4")), nullptr);
  EXPECT_EQ(t.lookup(addr("2001:db8::1")), P(3));
  t.insert(prefix("0.0.0.0/0"), P(4));
  EXPECT_EQ(t.lookup(addr("1.2.3.4")), P(4));

  // Bad input is ignored rather than trusted.
  IpPrefix bad = prefix("1.2.3.4/32");
  bad.cidr = 33;
  t.insert(bad, P(5));
  t.insert(prefix("1.2.3.4/32"), nullptr);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.lookup(addr("1.2.3.4")), P(4));
  const uint8_t five[5] = {1, 2, 3, 4, 5};
  EXPECT_EQ(t.lookup(std::span<const uint8_t>(five, 5)), nullptr);
  EXPECT_EQ(t.lookup(std::span<const uint8_t>()), nullptr);

  // A branch-only node turned into a prefix and back.
  t.clear();
  t.insert(prefix("10.0.0.0/24"), P(1));
  t.insert(prefix("10.0.1.0/24"), P(2));
  EXPECT_EQ(t.node_count(), 3u);  // the /23 branch point
  t.insert(prefix("10.0.0.0/23"), P(3));
  EXPECT_EQ(t.node_count(), 3u);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_TRUE(t.remove(prefix("10.0.0.0/23"), P(3)));
  EXPECT_EQ(t.node_count(), 3u);
  EXPECT_TRUE(t.remove(prefix("10.0.0.0/24"), P(1)));
  EXPECT_EQ(t.node_count(), 1u);
  EXPECT_EQ(t.lookup(addr("10.0.1.9")), P(2));
  EXPECT_EQ(t.lookup(addr("10.0.0.9")), nullptr);
  ASSERT_TRUE(t.self_check());
}

// ---- Randomized differential test -------------------------------------------------------

bool covers(const IpPrefix& p, const IpAddress& a) {
  if (p.addr.family != a.family) return false;
  for (unsigned i = 0; i < p.cidr; ++i) {
    const unsigned bit = 7 - i % 8;
    if (((p.addr.bytes[i / 8] >> bit) & 1) != ((a.bytes[i / 8] >> bit) & 1)) return false;
  }
  return true;
}

// Deliberately naive: a flat list, linear scan for the longest covering prefix.
struct Model {
  struct Entry {
    IpPrefix prefix;
    Peer* peer;
  };
  std::vector<Entry> entries;

  void insert(IpPrefix p, Peer* peer) {
    p.mask();
    for (auto& e : entries)
      if (e.prefix == p) {
        e.peer = peer;
        return;
      }
    entries.push_back({p, peer});
  }
  bool remove(IpPrefix p, Peer* peer) {
    p.mask();
    for (size_t i = 0; i < entries.size(); ++i)
      if (entries[i].prefix == p && entries[i].peer == peer) {
        entries.erase(entries.begin() + long(i));
        return true;
      }
    return false;
  }
  void remove_by_peer(Peer* peer) {
    std::erase_if(entries, [peer](const Entry& e) { return e.peer == peer; });
  }
  Peer* lookup(const IpAddress& a) const {
    const Entry* best = nullptr;
    for (const auto& e : entries)
      if (covers(e.prefix, a) && (!best || e.prefix.cidr > best->prefix.cidr)) best = &e;
    return best ? best->peer : nullptr;
  }
  std::vector<std::string> prefixes_of(Peer* peer) const {
    std::vector<std::string> out;
    for (const auto& e : entries)
      if (e.peer == peer) out.push_back(e.prefix.str());
    std::sort(out.begin(), out.end());
    return out;
  }
};

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  uint64_t below(uint64_t n) { return gen() % n; }
  bool chance(unsigned percent) { return below(100) < percent; }
  IpAddress address(uint8_t family) {
    IpAddress a;
    a.family = family;
    for (size_t i = 0; i < a.size(); ++i) a.bytes[i] = uint8_t(gen());
    return a;
  }
};

void set_bit(IpAddress& a, unsigned i, unsigned v) {
  const uint8_t m = uint8_t(0x80 >> (i % 8));
  a.bytes[i / 8] = v ? (a.bytes[i / 8] | m) : (a.bytes[i / 8] & ~m);
}
unsigned get_bit(const IpAddress& a, unsigned i) { return (a.bytes[i / 8] >> (7 - i % 8)) & 1; }

// a + delta (delta = +1 or -1), wrapping within the family's width.
IpAddress step(IpAddress a, int delta) {
  for (size_t i = a.size(); i-- > 0;) {
    const uint8_t before = a.bytes[i];
    a.bytes[i] = uint8_t(before + delta);
    if ((delta > 0 && before != 0xff) || (delta < 0 && before != 0x00)) break;
  }
  return a;
}

class Differential {
 public:
  explicit Differential(uint64_t seed) : rng_(seed) {}

  // Random prefixes, half of them "mutated" from an existing one (same leading bits, then
  // random) so the trie gets long shared paths, as the kernel's randomized selftest does.
  IpPrefix random_prefix() {
    const uint8_t family = rng_.chance(50) ? 4 : 6;
    const unsigned maxbits = family == 4 ? 32 : 128;
    IpPrefix p;
    p.addr = rng_.address(family);
    std::vector<const Model::Entry*> same;
    for (const auto& e : model_.entries)
      if (e.prefix.addr.family == family) same.push_back(&e);
    if (!same.empty() && rng_.chance(50)) {
      const IpPrefix& base = same[rng_.below(same.size())]->prefix;
      const unsigned keep = unsigned(rng_.below(maxbits + 1));
      for (unsigned i = 0; i < keep; ++i) set_bit(p.addr, i, get_bit(base.addr, i));
    }
    // Mostly long prefixes, some short ones including /0.
    p.cidr = uint8_t(rng_.chance(10) ? rng_.below(maxbits / 4 + 1) : rng_.below(maxbits + 1));
    return p;  // not masked: the table must do it
  }

  Peer* random_peer() { return P(1 + rng_.below(kPeers)); }

  void mutate() {
    const uint64_t r = rng_.below(100);
    if (r < 60) {
      IpPrefix p;
      Peer* peer = random_peer();
      if (!model_.entries.empty() && rng_.chance(15)) {
        p = model_.entries[rng_.below(model_.entries.size())].prefix;  // move an existing one
      } else {
        p = random_prefix();
      }
      table_.insert(p, peer);
      model_.insert(p, peer);
    } else if (r < 95) {
      IpPrefix p;
      Peer* peer;
      if (!model_.entries.empty() && rng_.chance(70)) {
        const auto& e = model_.entries[rng_.below(model_.entries.size())];
        p = e.prefix;
        peer = rng_.chance(80) ? e.peer : random_peer();
        if (rng_.chance(10) && p.cidr > 0) p.cidr--;  // neighbouring length: a no-op
      } else {
        p = random_prefix();
        peer = random_peer();
      }
      const bool want = model_.remove(p, peer);
      ASSERT_EQ(table_.remove(p, peer), want) << p.str();
    } else {
      Peer* peer = random_peer();
      table_.remove_by_peer(peer);
      model_.remove_by_peer(peer);
    }
    ASSERT_EQ(table_.size(), model_.entries.size());
  }

  void check_query(const IpAddress& a) {
    ASSERT_EQ(table_.lookup(a), model_.lookup(a)) << a.str();
  }

  // Uniform addresses rarely hit short-lived edges, so most queries sit at or next to a
  // stored prefix's boundaries: first and last address, one outside either end, and the
  // bits just before and at the prefix length flipped.
  void check_queries(int n) {
    for (int i = 0; i < n; ++i) {
      if (model_.entries.empty() || rng_.chance(20)) {
        check_query(rng_.address(rng_.chance(50) ? 4 : 6));
        continue;
      }
      const IpPrefix& p = model_.entries[rng_.below(model_.entries.size())].prefix;
      const unsigned maxbits = unsigned(p.addr.size() * 8);
      IpAddress first = p.addr;
      IpAddress last = p.addr;
      for (unsigned b = p.cidr; b < maxbits; ++b) set_bit(last, b, 1);
      IpAddress inside = p.addr;
      for (unsigned b = p.cidr; b < maxbits; ++b) set_bit(inside, b, unsigned(rng_.below(2)));
      check_query(first);
      check_query(last);
      check_query(step(first, -1));
      check_query(step(last, +1));
      check_query(inside);
      if (p.cidr > 0) {
        IpAddress flip = inside;
        set_bit(flip, p.cidr - 1, !get_bit(flip, p.cidr - 1));
        check_query(flip);
      }
      if (p.cidr < maxbits) {
        IpAddress flip = inside;
        set_bit(flip, p.cidr, !get_bit(flip, p.cidr));
        check_query(flip);
      }
    }
  }

  void check_readback() {
    for (uintptr_t i = 1; i <= kPeers; ++i)
      ASSERT_EQ(prefixes_of(table_, P(i)), model_.prefixes_of(P(i))) << "peer " << i;
  }

  void check_structure() {
    ASSERT_TRUE(table_.self_check());
    // Compaction: branch-only nodes are never more than prefixes - 1.
    ASSERT_LE(table_.node_count(), std::max<size_t>(1, 2 * table_.size()) - (table_.size() ? 1 : 0));
  }

  AllowedIps& table() { return table_; }
  Model& model() { return model_; }
  static constexpr uintptr_t kPeers = 24;

 private:
  Rng rng_;
  AllowedIps table_;
  Model model_;
};

TEST(AllowedIps, RandomDifferential) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Differential d(seed);
    for (int round = 0; round < 300; ++round) {
      for (int i = 0; i < 50; ++i) {
        ASSERT_NO_FATAL_FAILURE(d.mutate());
      }
      ASSERT_NO_FATAL_FAILURE(d.check_queries(60));
      ASSERT_NO_FATAL_FAILURE(d.check_structure());
      if (round % 10 == 0) {
        ASSERT_NO_FATAL_FAILURE(d.check_readback());
      }
    }
    ASSERT_NO_FATAL_FAILURE(d.check_readback());
    // Removing every peer must leave nothing behind: no leaked branch-only nodes.
    for (uintptr_t i = 1; i <= Differential::kPeers; ++i) {
      d.table().remove_by_peer(P(i));
      d.model().remove_by_peer(P(i));
      ASSERT_NO_FATAL_FAILURE(d.check_queries(20));
    }
    EXPECT_EQ(d.table().size(), 0u);
    EXPECT_EQ(d.table().node_count(), 0u);
  }
}

// Bulk shape of wireguard-go's TestTrieRandom: a large table built at once, many queries,
// then peers removed one by one with re-checks.
TEST(AllowedIps, RandomBulkThenRemoveByPeer) {
  Differential d(42);
  Rng rng(7);
  for (int i = 0; i < 1500; ++i) {
    const IpPrefix p = d.random_prefix();
    Peer* peer = d.random_peer();
    d.table().insert(p, peer);
    d.model().insert(p, peer);
  }
  ASSERT_NO_FATAL_FAILURE(d.check_structure());
  ASSERT_NO_FATAL_FAILURE(d.check_readback());
  ASSERT_NO_FATAL_FAILURE(d.check_queries(3000));
  for (uintptr_t i = 1; i <= Differential::kPeers; ++i) {
    d.table().remove_by_peer(P(i));
    d.model().remove_by_peer(P(i));
    ASSERT_NO_FATAL_FAILURE(d.check_structure());
    ASSERT_NO_FATAL_FAILURE(d.check_queries(200));
  }
  EXPECT_EQ(d.table().node_count(), 0u);
}

// Memory must not grow with churn: the same working set inserted and removed many times
// ends with the same node count.
TEST(AllowedIps, ChurnKeepsNodeCountBounded) {
  AllowedIps t;
  Rng rng(9);
  std::vector<IpPrefix> set;
  for (int i = 0; i < 200; ++i) {
    IpPrefix p;
    p.addr = rng.address(i % 2 ? 4 : 6);
    p.cidr = uint8_t(rng.below(p.addr.size() * 8 + 1));
    p.mask();
    set.push_back(p);
  }
  for (const auto& p : set) t.insert(p, P(1));
  const size_t nodes = t.node_count();
  for (int cycle = 0; cycle < 50; ++cycle) {
    for (size_t i = 0; i < set.size(); i += 2) t.remove(set[i], P(1));
    for (size_t i = 0; i < set.size(); i += 2) t.insert(set[i], P(1 + cycle % 3));
    for (size_t i = 0; i < set.size(); i += 2) t.insert(set[i], P(1));
  }
  EXPECT_EQ(t.node_count(), nodes);
  EXPECT_TRUE(t.self_check());
  t.remove_by_peer(P(1));
  EXPECT_EQ(t.node_count(), 0u);
}

}  // namespace
}  // namespace meshwg::dataplane
