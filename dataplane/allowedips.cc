// Allowed-IPs table (whitepaper §2, cryptokey routing): a path-compressed binary trie per
// address family, in the manner of the kernel's drivers/net/wireguard/allowedips.c.
// Longest-prefix lookup walks at most one node per distinct prefix length on the path.
#include "dataplane/allowedips.h"

#include <bit>
#include <cstring>
#include <vector>

namespace meshwg::dataplane {

namespace {

// Keys are left-aligned 128-bit integers: bit 127 is the first bit of the address. IPv4 sits
// in bits 127..96 with the rest zero, so one node type and one set of bit helpers serve both
// families (the two families never share a trie).
__extension__ typedef unsigned __int128 u128;

inline uint64_t load_be64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
  return v;
}

inline uint32_t load_be32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
  return v;
}

inline u128 key_from_bytes(const uint8_t* p, size_t len) {
  if (len == 4) return u128(load_be32(p)) << 96;
  return (u128(load_be64(p)) << 64) | load_be64(p + 8);
}

// The first cidr bits set. cidr 0 is special-cased because a shift by 128 is undefined.
inline u128 prefix_mask(unsigned cidr) { return cidr == 0 ? 0 : ~u128(0) << (128 - cidr); }

// Bit number i counted from the most significant end (i < 128).
inline unsigned bit_at(u128 key, unsigned i) { return unsigned(key >> (127 - i)) & 1; }

// Number of leading bits a and b have in common (128 when equal).
inline unsigned common_bits(u128 a, u128 b) {
  const u128 x = a ^ b;
  const uint64_t hi = uint64_t(x >> 64);
  const uint64_t lo = uint64_t(x);
  if (hi != 0) return unsigned(std::countl_zero(hi));
  return 64 + unsigned(std::countl_zero(lo));  // countl_zero(0) == 64, so equal keys give 128
}

inline unsigned max_bits(uint8_t family) { return family == 4 ? 32 : family == 6 ? 128 : 0; }

}  // namespace

// Lookup touches only the first 48 bytes (key, children, peer, cidr); the parent and
// peer-list links are used on updates only and sit after them.
struct AllowedIps::Node {
  uint64_t key_hi = 0;  // the prefix, masked to cidr bits, as a left-aligned u128
  uint64_t key_lo = 0;
  Node* child[2] = {nullptr, nullptr};  // indexed by the key bit at position cidr
  Peer* peer = nullptr;  // nullptr: a branch-only node, which always has both children
  uint8_t cidr = 0;
  uint8_t family = 0;
  Node* parent = nullptr;
  Node* peer_prev = nullptr;  // this peer's other nodes (list head in by_peer_)
  Node* peer_next = nullptr;

  u128 key() const { return (u128(key_hi) << 64) | key_lo; }
  void set_key(u128 k) {
    key_hi = uint64_t(k >> 64);
    key_lo = uint64_t(k);
  }
  // Does key agree with this node's prefix on its first cidr bits?
  bool covers(u128 k) const { return ((k ^ key()) & prefix_mask(cidr)) == 0; }
};

AllowedIps::AllowedIps() = default;
AllowedIps::~AllowedIps() { clear(); }

size_t AllowedIps::size() const { return size_; }

AllowedIps::Node* AllowedIps::new_node(const Node& init) {
  ++nodes_;
  return new Node(init);  // OOM is fatal by design (no exceptions are caught anywhere)
}

void AllowedIps::delete_node(Node* n) {
  --nodes_;
  delete n;
}

void AllowedIps::unlink_peer(Node* n) {
  if (n->peer_next) n->peer_next->peer_prev = n->peer_prev;
  if (n->peer_prev) {
    n->peer_prev->peer_next = n->peer_next;
  } else if (n->peer_next) {
    by_peer_[n->peer] = n->peer_next;
  } else {
    by_peer_.erase(n->peer);  // last prefix of this peer: drop the entry so churn of peers
                              // does not grow the map
  }
  n->peer_prev = n->peer_next = nullptr;
}

void AllowedIps::set_peer(Node* n, Peer* peer) {
  if (n->peer == peer) return;
  if (n->peer) {
    unlink_peer(n);
  } else {
    ++size_;  // a branch-only node becomes a prefix
  }
  n->peer = peer;
  Node*& head = by_peer_[peer];
  n->peer_next = head;
  if (head) head->peer_prev = n;
  head = n;
}

void AllowedIps::insert(const IpPrefix& prefix, Peer* peer) {
  const unsigned maxbits = max_bits(prefix.addr.family);
  // A null peer would be indistinguishable from a branch-only node; bad prefixes are ignored.
  if (peer == nullptr || maxbits == 0 || prefix.cidr > maxbits) return;
  const unsigned cidr = prefix.cidr;
  const u128 key = key_from_bytes(prefix.addr.bytes.data(), prefix.addr.size()) & prefix_mask(cidr);

  // Descend while the node is a (not longer) prefix of the new one.
  Node* parent = nullptr;
  Node** slot = &root(prefix.addr.family);
  Node* n = *slot;
  while (n && n->cidr <= cidr && n->covers(key)) {
    if (n->cidr == cidr) {  // identical prefix: it moves to the new peer
      set_peer(n, peer);
      return;
    }
    parent = n;
    slot = &n->child[bit_at(key, n->cidr)];
    n = *slot;
  }

  Node init;
  init.set_key(key);
  init.cidr = uint8_t(cidr);
  init.family = prefix.addr.family;
  init.parent = parent;
  Node* fresh = new_node(init);
  set_peer(fresh, peer);

  if (!n) {
    *slot = fresh;
    return;
  }
  // n is either more specific than the new prefix and inside it, or it diverges from the new
  // key before both lengths end. common is where the two paths split.
  const u128 nkey = n->key();
  const unsigned common = std::min(common_bits(key, nkey), cidr);
  if (common == cidr) {  // n lies inside the new prefix: hang it below
    fresh->child[bit_at(nkey, cidr)] = n;
    n->parent = fresh;
    *slot = fresh;
    return;
  }
  // Diverging: a branch-only node at the split point gets both as children. common is past
  // parent's cidr because both keys took the same child slot of parent.
  Node glue_init;
  glue_init.set_key(key & prefix_mask(common));
  glue_init.cidr = uint8_t(common);
  glue_init.family = prefix.addr.family;
  glue_init.parent = parent;
  Node* glue = new_node(glue_init);
  glue->child[bit_at(key, common)] = fresh;
  glue->child[bit_at(nkey, common)] = n;
  fresh->parent = glue;
  n->parent = glue;
  *slot = glue;
}

AllowedIps::Node* AllowedIps::find_exact(const IpPrefix& prefix) const {
  const uint8_t family = prefix.addr.family;
  const unsigned maxbits = max_bits(family);
  if (maxbits == 0 || prefix.cidr > maxbits) return nullptr;
  const unsigned cidr = prefix.cidr;
  const u128 key = key_from_bytes(prefix.addr.bytes.data(), prefix.addr.size()) & prefix_mask(cidr);
  Node* n = family == 4 ? root4_ : root6_;
  while (n && n->cidr <= cidr && n->covers(key)) {
    if (n->cidr == cidr) return n->peer ? n : nullptr;
    n = n->child[bit_at(key, n->cidr)];
  }
  return nullptr;
}

// Drops n's prefix and frees whatever nodes became redundant, so the trie holds at most
// 2 * size() - 1 nodes whatever the history of inserts and removals.
void AllowedIps::remove_node(Node* n) {
  unlink_peer(n);
  n->peer = nullptr;
  --size_;
  if (n->child[0] && n->child[1]) return;  // still needed as a branch point

  auto slot_of = [this](Node* x) -> Node*& {
    if (x->parent) return x->parent->child[x->parent->child[1] == x];
    return root(x->family);
  };
  Node* parent = n->parent;
  Node* child = n->child[0] ? n->child[0] : n->child[1];
  slot_of(n) = child;
  if (child) child->parent = parent;
  delete_node(n);
  // With a child spliced up, parent keeps its child count. Otherwise parent lost a child; a
  // branch-only parent then has a single child and is spliced out too.
  if (child || !parent || parent->peer) return;
  Node* other = parent->child[0] ? parent->child[0] : parent->child[1];
  slot_of(parent) = other;
  other->parent = parent->parent;
  delete_node(parent);
}

bool AllowedIps::remove(const IpPrefix& prefix, Peer* peer) {
  if (peer == nullptr) return false;
  Node* n = find_exact(prefix);
  if (!n || n->peer != peer) return false;
  remove_node(n);
  return true;
}

void AllowedIps::remove_by_peer(Peer* peer) {
  if (peer == nullptr) return;
  auto it = by_peer_.find(peer);
  if (it == by_peer_.end()) return;
  Node* n = it->second;
  // remove_node frees n and possibly a branch-only parent, never another node of this list.
  while (n) {
    Node* next = n->peer_next;
    remove_node(n);
    n = next;
  }
}

void AllowedIps::clear() {
  std::vector<Node*> stack;
  for (Node* r : {root4_, root6_})
    if (r) stack.push_back(r);
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n->child[0]) stack.push_back(n->child[0]);
    if (n->child[1]) stack.push_back(n->child[1]);
    delete_node(n);
  }
  root4_ = root6_ = nullptr;
  by_peer_.clear();
  size_ = 0;
}

Peer* AllowedIps::lookup(std::span<const uint8_t> addr) const {
  const Node* n;
  unsigned maxbits;
  if (addr.size() == 4) {
    n = root4_;
    maxbits = 32;
  } else if (addr.size() == 16) {
    n = root6_;
    maxbits = 128;
  } else {
    return nullptr;
  }
  const u128 key = key_from_bytes(addr.data(), addr.size());
  Peer* best = nullptr;
  // Every node on the path whose prefix covers key is a candidate; deeper ones are longer.
  while (n && n->covers(key)) {
    if (n->peer) best = n->peer;
    if (n->cidr >= maxbits) break;  // full-length prefix: no children, and no bit to read
    n = n->child[bit_at(key, n->cidr)];
  }
  return best;
}

void AllowedIps::for_each(Peer* peer, const std::function<void(const IpPrefix&)>& fn) const {
  auto it = by_peer_.find(peer);
  if (it == by_peer_.end()) return;
  for (const Node* n = it->second; n; n = n->peer_next) {
    IpPrefix p;
    p.addr.family = n->family;
    p.cidr = n->cidr;
    uint8_t be[16];
    const uint64_t words[2] = {n->key_hi, n->key_lo};
    for (int i = 0; i < 16; ++i) be[i] = uint8_t(words[i / 8] >> (56 - 8 * (i % 8)));
    std::memcpy(p.addr.bytes.data(), be, p.addr.size());
    fn(p);
  }
}

bool AllowedIps::self_check() const {
  size_t prefixes = 0;
  size_t nodes = 0;
  struct Item {
    const Node* n;
    const Node* parent;
  };
  std::vector<Item> stack;
  for (const Node* r : {root4_, root6_})
    if (r) stack.push_back({r, nullptr});
  while (!stack.empty()) {
    const auto [n, parent] = stack.back();
    stack.pop_back();
    ++nodes;
    if (n->parent != parent) return false;
    if (n->family != (n == root4_ || (parent && parent->family == 4) ? 4 : 6)) return false;
    if (n->cidr > max_bits(n->family)) return false;
    if ((n->key() & ~prefix_mask(n->cidr)) != 0) return false;  // host bits stored
    if (parent) {
      if (n->cidr <= parent->cidr || !parent->covers(n->key())) return false;
      if (parent->child[bit_at(n->key(), parent->cidr)] != n) return false;
    }
    if (n->peer) {
      ++prefixes;
      auto it = by_peer_.find(n->peer);
      if (it == by_peer_.end()) return false;
      if ((n->peer_prev == nullptr) != (it->second == n)) return false;
    } else if (!n->child[0] || !n->child[1]) {
      return false;  // a branch-only node must branch
    }
    for (const Node* c : n->child)
      if (c) stack.push_back({c, n});
  }
  size_t listed = 0;
  for (const auto& [peer, head] : by_peer_) {
    if (!head || head->peer_prev) return false;
    for (const Node* n = head; n; n = n->peer_next) {
      if (n->peer != peer || (n->peer_next && n->peer_next->peer_prev != n)) return false;
      ++listed;
    }
  }
  return prefixes == size_ && listed == size_ && nodes == nodes_;
}

}  // namespace meshwg::dataplane
