// Allowed-IPs table (whitepaper §2, cryptokey routing): longest-prefix match from an inner
// IPv4/IPv6 address to the peer that owns it. A binary (path-compressed) trie per family,
// as the kernel's allowedips.c. Not thread-safe: the device serialises writers and readers
// (see device.h for the locking rule).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>

#include "dataplane/ip.h"

namespace meshwg::dataplane {

class Peer;  // opaque here: the table stores and returns pointers, never dereferences them

class AllowedIps {
 public:
  AllowedIps();
  ~AllowedIps();
  AllowedIps(const AllowedIps&) = delete;
  AllowedIps& operator=(const AllowedIps&) = delete;

  // Inserts prefix (host bits are masked) for peer; an existing identical prefix moves to peer.
  void insert(const IpPrefix& prefix, Peer* peer);
  // Removes prefix only if it is owned by peer. Returns whether something was removed.
  bool remove(const IpPrefix& prefix, Peer* peer);
  void remove_by_peer(Peer* peer);
  void clear();
  // Longest-prefix match. addr is 4 (IPv4) or 16 (IPv6) bytes; nullptr if nothing matches.
  Peer* lookup(std::span<const uint8_t> addr) const;
  Peer* lookup(const IpAddress& a) const { return lookup(a.span()); }
  // Calls fn for every prefix owned by peer (masked form), in no particular order.
  void for_each(Peer* peer, const std::function<void(const IpPrefix&)>& fn) const;
  size_t size() const;  // number of prefixes

  // For tests and fuzzing: trie nodes allocated (prefixes plus branch-only nodes; at most
  // 2 * size() - 1), and a full walk checking every structural invariant.
  size_t node_count() const { return nodes_; }
  bool self_check() const;

 private:
  struct Node;
  Node*& root(uint8_t family) { return family == 4 ? root4_ : root6_; }
  Node* new_node(const Node& init);
  void delete_node(Node* n);
  void set_peer(Node* n, Peer* peer);
  void unlink_peer(Node* n);
  void remove_node(Node* n);
  Node* find_exact(const IpPrefix& prefix) const;

  Node* root4_ = nullptr;
  Node* root6_ = nullptr;
  // Head of each peer's intrusive list of nodes, so remove_by_peer and for_each cost
  // O(prefixes of that peer) rather than a walk of the whole table (as the kernel's peer_list).
  std::unordered_map<Peer*, Node*> by_peer_;
  size_t size_ = 0;
  size_t nodes_ = 0;
};

}  // namespace meshwg::dataplane
