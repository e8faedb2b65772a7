// Allowed-IPs table (whitepaper §2, cryptokey routing): longest-prefix match from an inner
// IPv4/IPv6 address to the peer that owns it. A binary (path-compressed) trie per family,
// as the kernel's allowedips.c. Not thread-safe: the device serialises writers and readers
// (see device.h for the locking rule).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

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

 private:
  struct Node;
  std::unique_ptr<Node> root4_;
  std::unique_ptr<Node> root6_;
  size_t size_ = 0;
};

}  // namespace meshwg::dataplane
