// Parsing and formatting of IP addresses, prefixes and UDP endpoints.
#include "dataplane/ip.h"

#include <arpa/inet.h>
#include <net/if.h>

#include <charconv>
#include <cstring>

namespace meshwg::dataplane {

IpAddress IpAddress::v4(const uint8_t* b) {
  IpAddress a;
  a.family = 4;
  std::memcpy(a.bytes.data(), b, 4);
  return a;
}

IpAddress IpAddress::v6(const uint8_t* b) {
  IpAddress a;
  a.family = 6;
  std::memcpy(a.bytes.data(), b, 16);
  return a;
}

std::optional<IpAddress> IpAddress::parse(std::string_view s) {
  if (s.empty() || s.size() > INET6_ADDRSTRLEN) return std::nullopt;
  // inet_pton stops at a NUL, so "1.2.3.4\0junk" would otherwise be accepted.
  if (s.find('\0') != std::string_view::npos) return std::nullopt;
  char buf[INET6_ADDRSTRLEN + 1];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = 0;
  IpAddress a;
  if (s.find(':') == std::string_view::npos) {
    if (inet_pton(AF_INET, buf, a.bytes.data()) != 1) return std::nullopt;
    a.family = 4;
  } else {
    if (inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
    a.family = 6;
  }
  return a;
}

std::string IpAddress::str() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == 4)
    inet_ntop(AF_INET, bytes.data(), buf, sizeof(buf));
  else if (family == 6)
    inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf));
  return buf;
}

void IpPrefix::mask() {
  const size_t bits = addr.size() * 8;
  for (size_t i = 0; i < addr.size(); ++i) {
    const size_t lo = i * 8;
    if (lo >= cidr) {
      addr.bytes[i] = 0;
    } else if (lo + 8 > cidr) {
      addr.bytes[i] &= uint8_t(0xff << (8 - (cidr - lo)));
    }
  }
  (void)bits;
}

std::optional<IpPrefix> IpPrefix::parse(std::string_view s) {
  const auto slash = s.find('/');
  auto a = IpAddress::parse(s.substr(0, slash));
  if (!a) return std::nullopt;
  IpPrefix p;
  p.addr = *a;
  const unsigned max = a->family == 4 ? 32 : 128;
  if (slash == std::string_view::npos) {
    p.cidr = uint8_t(max);
  } else {
    auto c = s.substr(slash + 1);
    if (c.empty() || c.size() > 3) return std::nullopt;
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(c.data(), c.data() + c.size(), v);
    if (ec != std::errc() || ptr != c.data() + c.size() || v > max) return std::nullopt;
    p.cidr = uint8_t(v);
  }
  p.mask();
  return p;
}

std::string IpPrefix::str() const { return addr.str() + "/" + std::to_string(cidr); }

IpAddress Endpoint::ip() const {
  if (addr.sa.sa_family == AF_INET)
    return IpAddress::v4(reinterpret_cast<const uint8_t*>(&addr.in4.sin_addr));
  if (addr.sa.sa_family == AF_INET6)
    return IpAddress::v6(reinterpret_cast<const uint8_t*>(&addr.in6.sin6_addr));
  return {};
}

Endpoint Endpoint::from_ip(const IpAddress& a, uint16_t port) {
  Endpoint e;
  if (a.family == 4) {
    e.addr.in4.sin_family = AF_INET;
    e.addr.in4.sin_port = htons(port);
    std::memcpy(&e.addr.in4.sin_addr, a.bytes.data(), 4);
  } else if (a.family == 6) {
    e.addr.in6.sin6_family = AF_INET6;
    e.addr.in6.sin6_port = htons(port);
    std::memcpy(&e.addr.in6.sin6_addr, a.bytes.data(), 16);
  }
  return e;
}

uint16_t Endpoint::port() const {
  if (addr.sa.sa_family == AF_INET) return ntohs(addr.in4.sin_port);
  if (addr.sa.sa_family == AF_INET6) return ntohs(addr.in6.sin6_port);
  return 0;
}

bool Endpoint::same_remote(const Endpoint& o) const {
  if (addr.sa.sa_family != o.addr.sa.sa_family) return false;
  if (addr.sa.sa_family == AF_INET)
    return addr.in4.sin_port == o.addr.in4.sin_port &&
           addr.in4.sin_addr.s_addr == o.addr.in4.sin_addr.s_addr;
  if (addr.sa.sa_family == AF_INET6)
    return addr.in6.sin6_port == o.addr.in6.sin6_port &&
           std::memcmp(&addr.in6.sin6_addr, &o.addr.in6.sin6_addr, 16) == 0 &&
           addr.in6.sin6_scope_id == o.addr.in6.sin6_scope_id;
  return false;
}

size_t Endpoint::key_bytes(uint8_t out[18]) const {
  const IpAddress a = ip();
  const uint16_t p = port();
  std::memcpy(out, a.bytes.data(), a.size());
  out[a.size()] = uint8_t(p >> 8);
  out[a.size() + 1] = uint8_t(p);
  return a.size() + 2;
}

std::optional<Endpoint> Endpoint::parse(std::string_view s) {
  Endpoint e;
  std::string_view host;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return std::nullopt;
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // v6 needs brackets
  }
  if (port.empty() || port.size() > 5) return std::nullopt;
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || ptr != port.data() + port.size() || p > 65535) return std::nullopt;

  std::string_view scope;
  if (const auto pct = host.find('%'); pct != std::string_view::npos) {
    scope = host.substr(pct + 1);
    host = host.substr(0, pct);
    // A NUL would end the name early for if_nametoindex and accept trailing garbage.
    if (scope.empty() || scope.size() >= IF_NAMESIZE ||
        scope.find('\0') != std::string_view::npos)
      return std::nullopt;
  }
  auto a = IpAddress::parse(host);
  if (!a) return std::nullopt;
  if (a->family == 4 && !scope.empty()) return std::nullopt;
  e = from_ip(*a, uint16_t(p));
  if (!scope.empty()) {  // IPv6 only (checked above)
    unsigned id = 0;
    auto [sp, sec] = std::from_chars(scope.data(), scope.data() + scope.size(), id);
    if (sec == std::errc() && sp == scope.data() + scope.size()) {
      e.addr.in6.sin6_scope_id = id;
    } else {
      char name[IF_NAMESIZE] = {};
      std::memcpy(name, scope.data(), scope.size());
      id = if_nametoindex(name);
      if (id == 0) return std::nullopt;
      e.addr.in6.sin6_scope_id = id;
    }
  }
  return e;
}

Endpoint Endpoint::from_sockaddr(const sockaddr* sa, socklen_t len) {
  Endpoint e;
  if (sa->sa_family == AF_INET && len >= socklen_t(sizeof(sockaddr_in)))
    std::memcpy(&e.addr.in4, sa, sizeof(sockaddr_in));
  else if (sa->sa_family == AF_INET6 && len >= socklen_t(sizeof(sockaddr_in6)))
    std::memcpy(&e.addr.in6, sa, sizeof(sockaddr_in6));
  return e;
}

std::string Endpoint::str() const {
  if (addr.sa.sa_family == AF_INET) return ip().str() + ":" + std::to_string(port());
  if (addr.sa.sa_family == AF_INET6) {
    std::string s = "[" + ip().str();
    if (addr.in6.sin6_scope_id != 0) {
      char name[IF_NAMESIZE] = {};
      if (if_indextoname(addr.in6.sin6_scope_id, name))
        s += std::string("%") + name;
      else
        s += "%" + std::to_string(addr.in6.sin6_scope_id);
    }
    return s + "]:" + std::to_string(port());
  }
  return "";
}

}  // namespace meshwg::dataplane
