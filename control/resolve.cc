// getaddrinfo wrappers for HOST:PORT (see resolve.h).
#include "control/resolve.h"

#include <netdb.h>
#include <sys/socket.h>

namespace meshwg::control {

bool split_host_port(const std::string& s, HostPort& h, std::string& err) {
  std::string host, port;
  const bool literal6 = !s.empty() && s.front() == '[';
  if (literal6) {
    const size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      err = "'" + s + "' is not [IPV6]:PORT";
      return false;
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    const size_t colon = s.rfind(':');
    if (colon == std::string::npos) {
      err = "'" + s + "' has no :PORT";
      return false;
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      err = "'" + s + "': write an IPv6 address in brackets, as [ADDR]:PORT";
      return false;
    }
  }
  const bool digits = !port.empty() && port.size() <= 5 &&
                      port.find_first_not_of("0123456789") == std::string::npos;
  if (host.empty() || !digits || std::stoul(port) == 0 || std::stoul(port) > 65535) {
    err = "'" + s + "' is not HOST:PORT with a port 1-65535";
    return false;
  }
  h.host = host;
  h.port = uint16_t(std::stoul(port));
  h.address.reset();
  if (auto e = dataplane::Endpoint::parse(literal6 ? "[" + host + "]:" + port : s);
      e && e->valid())
    h.address = *e;
  else if (literal6) {
    err = "'" + s + "': '" + host + "' is not an IPv6 address";
    return false;
  }
  return true;
}

std::vector<dataplane::Endpoint> resolve(const HostPort& h, std::string& err) {
  if (h.address) return {*h.address};
  constexpr size_t kMaxAddresses = 8;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(h.port);
  const int rc = ::getaddrinfo(h.host.c_str(), port.c_str(), &hints, &res);
  std::vector<dataplane::Endpoint> out;
  if (rc != 0) {
    err = "cannot resolve '" + h.host + "': " + ::gai_strerror(rc);
    return out;
  }
  for (const addrinfo* a = res; a != nullptr && out.size() < kMaxAddresses; a = a->ai_next) {
    const auto e = dataplane::Endpoint::from_sockaddr(a->ai_addr, a->ai_addrlen);
    if (e.valid()) out.push_back(e);
  }
  ::freeaddrinfo(res);
  if (out.empty()) err = "'" + h.host + "' has no IPv4 or IPv6 address";
  return out;
}

}  // namespace meshwg::control
