// Plain STUN server and the UDP socket of the control-plane services (see stun_server.h).
#include "control/stun_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace meshwg::control {

using dataplane::Endpoint;
using dataplane::IpAddress;

// ---- UdpServerSocket ----

void make_dual_stack(int fd, int family) {
  const int off = 0;
  if (family == AF_INET6) (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
}

bool bound_address(int fd, Endpoint& out, std::string& err) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    err = "getsockname: " + std::string(std::strerror(errno));
    return false;
  }
  out = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
  return true;
}

UdpServerSocket::~UdpServerSocket() { close(); }

void UdpServerSocket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool UdpServerSocket::open(const Endpoint& bind, std::string& err) {
  close();
  if (!bind.valid()) {
    err = "bind address is not IPv4 or IPv6";
    return false;
  }
  family_ = bind.addr.sa.sa_family;
  const int fd = ::socket(family_, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = "socket: " + std::string(std::strerror(errno));
    return false;
  }
  const int one = 1;
  // Both kinds of packet info: an IPv6 socket receives IPv4 (mapped) datagrams with
  // IP_PKTINFO.
  bool ok = ::setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) == 0;
  if (family_ == AF_INET6)
    ok = ok && ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) == 0;
  if (!ok) {
    err = "setsockopt(PKTINFO): " + std::string(std::strerror(errno));
    ::close(fd);
    return false;
  }
  make_dual_stack(fd, family_);
  if (::bind(fd, &bind.addr.sa, bind.socklen()) != 0) {
    err = "cannot bind UDP " + bind.str() + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  if (!bound_address(fd, local_, err)) {
    ::close(fd);
    return false;
  }
  fd_ = fd;
  return true;
}

ssize_t UdpServerSocket::recv(std::span<uint8_t> buf, Endpoint& from, bool& truncated) {
  sockaddr_storage ss{};
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(in_pktinfo))];
  msghdr msg{};
  msg.msg_name = &ss;
  msg.msg_namelen = sizeof(ss);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT);
  if (n < 0) return -1;
  truncated = (msg.msg_flags & MSG_TRUNC) != 0;
  from = unmap_v4_endpoint(
      Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), msg.msg_namelen));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(in_pktinfo))) {
      in_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof(pi));
      from.local = IpAddress::v4(reinterpret_cast<const uint8_t*>(&pi.ipi_spec_dst));
      from.local_ifindex = uint32_t(pi.ipi_ifindex);
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
               c->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) {
      in6_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof(pi));
      from.local = IpAddress::v6(reinterpret_cast<const uint8_t*>(&pi.ipi6_addr));
      from.local_ifindex = pi.ipi6_ifindex;
      if (IN6_IS_ADDR_V4MAPPED(&pi.ipi6_addr)) from.local = IpAddress::v4(from.local.bytes.data() + 12);
    }
  }
  return n;
}

bool UdpServerSocket::send(std::span<const uint8_t> data, const Endpoint& to) {
  if (fd_ < 0 || !to.valid()) return false;
  // An IPv4 destination on an IPv6 socket goes out as an IPv4-mapped address.
  Endpoint dst = to;
  if (family_ == AF_INET6 && to.addr.sa.sa_family == AF_INET) {
    dst = Endpoint{};
    dst.addr.in6.sin6_family = AF_INET6;
    dst.addr.in6.sin6_port = to.addr.in4.sin_port;
    uint8_t* a = reinterpret_cast<uint8_t*>(&dst.addr.in6.sin6_addr);
    a[10] = a[11] = 0xff;
    std::memcpy(a + 12, &to.addr.in4.sin_addr, 4);
  } else if (family_ != to.addr.sa.sa_family) {
    return false;  // an IPv6 destination on an IPv4 socket
  }
  iovec iov{const_cast<uint8_t*>(data.data()), data.size()};
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr*>(&dst.addr.sa);
  msg.msg_namelen = dst.socklen();
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // An IPv4 reply (mapped or not) takes IP_PKTINFO, an IPv6 one IPV6_PKTINFO.
  if (to.local.family == 4 && to.addr.sa.sa_family == AF_INET) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
    in_pktinfo pi{};
    std::memcpy(&pi.ipi_spec_dst, to.local.bytes.data(), 4);
    std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
  } else if (to.local.family == 6 && to.addr.sa.sa_family == AF_INET6) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
    in6_pktinfo pi{};
    std::memcpy(&pi.ipi6_addr, to.local.bytes.data(), 16);
    // The interface matters only for a link-local source (fe80::/10).
    if (to.local.bytes[0] == 0xfe && (to.local.bytes[1] & 0xc0) == 0x80)
      pi.ipi6_ifindex = to.local_ifindex;
    std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
  }
  if (::sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == ssize_t(data.size())) return true;
  if (msg.msg_control == nullptr || errno == EAGAIN || errno == EWOULDBLOCK) return false;
  // The address it came to may be gone (or is not ours to send from): let the kernel choose.
  msg.msg_control = nullptr;
  msg.msg_controllen = 0;
  return ::sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == ssize_t(data.size());
}

bool LogLimiter::allow(std::chrono::steady_clock::time_point now) {
  if (logged_ && now - last_ < interval_) return false;
  logged_ = true;
  last_ = now;
  return true;
}

Endpoint unmap_v4_endpoint(const Endpoint& e) {
  if (e.addr.sa.sa_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&e.addr.in6.sin6_addr)) return e;
  Endpoint v4;
  v4.addr.in4.sin_family = AF_INET;
  v4.addr.in4.sin_port = e.addr.in6.sin6_port;
  std::memcpy(&v4.addr.in4.sin_addr, reinterpret_cast<const uint8_t*>(&e.addr.in6.sin6_addr) + 12, 4);
  v4.local = e.local;
  v4.local_ifindex = e.local_ifindex;
  return v4;
}

// ---- the STUN server ----

const char* stun_server_counter_name(StunServerCounter c) {
  switch (c) {
    case StunServerCounter::kSuccess: return "success";
    case StunServerCounter::kUnknownAttributes: return "unknown_attributes_420";
    case StunServerCounter::kNotRequest: return "not_request";
    case StunServerCounter::kMalformed: return "malformed";
    case StunServerCounter::kTruncated: return "truncated";
    case StunServerCounter::kSendFailed: return "send_failed";
    case StunServerCounter::kCount: break;
  }
  return "?";
}

StunServerReply stun_server_answer(std::span<const uint8_t> datagram, const Endpoint& from,
                                   std::string_view software) {
  StunServerReply r;
  StunDecodeFailure fail;
  const StunEncodeOptions opt{.software = software};
  const auto m = stun_decode(datagram, fail);
  if (!m) {
    if (fail.error == StunError::kUnknownRequired && fail.cls == StunClass::kRequest) {
      r.outcome = StunServerCounter::kUnknownAttributes;
      r.datagram = stun_encode_binding_error(fail.txid, 420, "Unknown Attribute",
                                             fail.unknown_required, opt);
      return r;
    }
    // A 420-worthy indication or response is still only "not a request".
    r.outcome = fail.cls && fail.cls != StunClass::kRequest ? StunServerCounter::kNotRequest
                                                            : StunServerCounter::kMalformed;
    r.error = fail.error;
    return r;
  }
  if (m->cls != StunClass::kRequest) {
    r.outcome = StunServerCounter::kNotRequest;
    return r;
  }
  r.outcome = StunServerCounter::kSuccess;
  r.datagram = stun_encode_binding_success(m->txid, unmap_v4_endpoint(from), opt);
  return r;
}

StunServer::StunServer(StunServerOptions opt) : opt_(std::move(opt)) {
  if (opt_.software.size() > kStunMaxTextEncode) opt_.software.resize(kStunMaxTextEncode);
  if (opt_.max_batch == 0) opt_.max_batch = 1;
}

void StunServer::bump(StunServerCounter c) {
  auto& a = counters_[size_t(c)];
  a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

size_t StunServer::on_readable() {
  size_t n = 0;
  for (; n < opt_.max_batch; ++n) {
    Endpoint from;
    bool truncated = false;
    const ssize_t len = sock_.recv(buf_, from, truncated);
    if (len < 0) break;
    if (truncated) {
      bump(StunServerCounter::kTruncated);
      continue;
    }
    StunServerReply r = stun_server_answer({buf_.data(), size_t(len)}, from, opt_.software);
    bump(r.outcome);
    if (r.outcome == StunServerCounter::kMalformed) {
      auto& a = malformed_[size_t(r.error)];
      a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      if (log_limit_.allow(std::chrono::steady_clock::now()))
        spdlog::debug("stun: ignored a datagram from {}: {}", from.str(), stun_error_name(r.error));
    }
    if (r.datagram.empty()) continue;
    if (!sock_.send(r.datagram, from)) bump(StunServerCounter::kSendFailed);
  }
  return n;
}

}  // namespace meshwg::control
