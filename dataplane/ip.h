// IP addresses, prefixes and UDP endpoints as the data plane and the UAPI see them
// (IPv4 and IPv6; endpoint text forms "a.b.c.d:port" and "[v6%scope]:port" as wg(8) sends).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace meshwg::dataplane {

struct IpAddress {
  uint8_t family = 0;  // 4 or 6; 0 = unset
  std::array<uint8_t, 16> bytes{};  // v4 uses the first 4 bytes

  size_t size() const { return family == 4 ? 4 : family == 6 ? 16 : 0; }
  std::span<const uint8_t> span() const { return {bytes.data(), size()}; }
  bool operator==(const IpAddress&) const = default;

  static IpAddress v4(const uint8_t* b);
  static IpAddress v6(const uint8_t* b);
  // Accepts dotted quad or any inet_pton IPv6 form; nullopt otherwise.
  static std::optional<IpAddress> parse(std::string_view s);
  std::string str() const;
};

struct IpPrefix {
  IpAddress addr;
  uint8_t cidr = 0;
  bool operator==(const IpPrefix&) const = default;

  // "addr/cidr" or a bare address (full length). The host bits are masked off.
  static std::optional<IpPrefix> parse(std::string_view s);
  // Masks the host bits of addr in place.
  void mask();
  std::string str() const;
};

// A UDP peer address, plus the local address a packet from it arrived on so replies leave
// from the same address (netns.sh "reply to sender"; IP_PKTINFO / IPV6_PKTINFO).
struct Endpoint {
  // The largest member comes first: `addr{}` value-initialises only the first member of a
  // union, and with sockaddr first the tail of sockaddr_in6 (sin6_scope_id) was left
  // uninitialised (found by uapi_fuzz under clang -O2).
  union {
    sockaddr_in6 in6;
    sockaddr_in in4;
    sockaddr sa;
  } addr{};
  IpAddress local;      // unset = let the kernel choose
  uint32_t local_ifindex = 0;

  static_assert(sizeof(sockaddr_in6) >= sizeof(sockaddr_in) && sizeof(sockaddr_in6) >= sizeof(sockaddr));
  bool valid() const { return addr.sa.sa_family == AF_INET || addr.sa.sa_family == AF_INET6; }
  socklen_t socklen() const {
    return addr.sa.sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  }
  IpAddress ip() const;
  uint16_t port() const;
  // Same remote address and port (the local source is not compared).
  bool same_remote(const Endpoint& o) const;
  // Bytes that identify the remote for cookies and rate limiting: address || port.
  size_t key_bytes(uint8_t out[18]) const;

  // Parses the UAPI form: "1.2.3.4:51820" or "[fd00::1%eth0]:51820". Names are not resolved.
  static std::optional<Endpoint> parse(std::string_view s);
  static Endpoint from_sockaddr(const sockaddr* sa, socklen_t len);
  // The inverse of ip() and port(); an unset address gives an invalid endpoint.
  static Endpoint from_ip(const IpAddress& a, uint16_t port);
  std::string str() const;
};

}  // namespace meshwg::dataplane
