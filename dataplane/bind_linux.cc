// Linux UDP sockets for the data plane (see bind_linux.h). Receivers block in poll() on their
// socket and a wake pipe; a re-open (listen_port change) wakes them so they pick up the new
// socket.
#include "dataplane/bind_linux.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace meshwg::dataplane {

namespace {
int make_socket(int family, uint16_t port, int& err) {
  int fd = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    err = errno;
    return -1;
  }
  int one = 1;
  if (family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (family == AF_INET)
    ::setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
  else
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
  // Large buffers absorb bursts between the TUN and the socket (root may exceed rmem_max).
  int size = 4 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  sockaddr_storage ss{};
  socklen_t len;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    len = sizeof(*a);
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    err = errno;
    ::close(fd);
    return -1;
  }
  return fd;
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}
}  // namespace

LinuxBind::LinuxBind() {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
}

LinuxBind::~LinuxBind() {
  close();
  if (wake_[0] >= 0) ::close(wake_[0]);
  if (wake_[1] >= 0) ::close(wake_[1]);
}

int LinuxBind::open(uint16_t port) {
  std::lock_guard lk(open_mu_);
  // With port 0 the v4 socket picks a port and v6 must get the same one; it may be taken on
  // v6, so try a few times (as wireguard-go does). The old sockets stay until the new ones
  // exist, so a failed re-open changes nothing.
  for (int attempt = 0; attempt < 100; ++attempt) {
    int err = 0;
    int fd4 = make_socket(AF_INET, port, err);
    if (fd4 < 0) return -err;
    const uint16_t p = bound_port(fd4);
    int err6 = 0;
    int fd6 = make_socket(AF_INET6, p, err6);
    if (fd6 < 0 && err6 == EADDRINUSE && port == 0) {
      ::close(fd4);
      continue;
    }
    if (fd6 < 0 && err6 != EAFNOSUPPORT && err6 != EADDRNOTAVAIL) {
      ::close(fd4);
      return -err6;
    }
    const int old4 = fd4_.exchange(fd4);
    const int old6 = fd6_.exchange(fd6);
    // Receivers re-read the descriptors after every poll timeout, so they move to the new
    // sockets within one timeout; a read on the old number in between is harmless.
    if (old4 >= 0) ::close(old4);
    if (old6 >= 0) ::close(old6);
    if (closed_) {
      char b[64];
      while (::read(wake_[0], b, sizeof(b)) > 0) {
      }
      closed_ = false;
    }
    return p;
  }
  return -EADDRINUSE;
}

void LinuxBind::close() {
  std::lock_guard lk(open_mu_);
  closed_ = true;
  if (wake_[1] >= 0) (void)!::write(wake_[1], "x", 1);  // level-triggered: wakes every receiver
  const int fd4 = fd4_.exchange(-1);
  const int fd6 = fd6_.exchange(-1);
  if (fd4 >= 0) ::close(fd4);
  if (fd6 >= 0) ::close(fd6);
}

long LinuxBind::receive(int i, std::span<uint8_t> buf, Endpoint& from) {
  for (;;) {
    if (closed_) return kClosed;
    const int fd = i == 0 ? fd4_.load() : fd6_.load();
    pollfd pfd[2] = {{wake_[0], POLLIN, 0}, {fd, POLLIN, 0}};
    const int r = ::poll(pfd, fd >= 0 ? 2 : 1, 200);
    if (closed_) return kClosed;
    if (r < 0 && errno != EINTR) return -1;
    if (fd < 0 || !(pfd[1].revents & POLLIN)) continue;
    sockaddr_storage ss{};
    alignas(cmsghdr) uint8_t control[256];
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_name = &ss;
    msg.msg_namelen = sizeof(ss);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return -1;
    }
    if (msg.msg_flags & MSG_TRUNC) return -1;
    from = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), msg.msg_namelen);
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
        in_pktinfo pi;
        std::memcpy(&pi, CMSG_DATA(c), sizeof(pi));
        from.local = IpAddress::v4(reinterpret_cast<const uint8_t*>(&pi.ipi_spec_dst));
        from.local_ifindex = uint32_t(pi.ipi_ifindex);
      } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
        in6_pktinfo pi;
        std::memcpy(&pi, CMSG_DATA(c), sizeof(pi));
        from.local = IpAddress::v6(reinterpret_cast<const uint8_t*>(&pi.ipi6_addr));
        from.local_ifindex = pi.ipi6_ifindex;
      }
    }
    return n;
  }
}

bool LinuxBind::send(std::span<const uint8_t> data, Endpoint& to) {
  const bool v6 = to.addr.sa.sa_family == AF_INET6;
  const int fd = v6 ? fd6_.load() : fd4_.load();
  if (fd < 0) return false;
  iovec iov{const_cast<uint8_t*>(data.data()), data.size()};
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
  msghdr msg{};
  msg.msg_name = &to.addr;
  msg.msg_namelen = to.socklen();
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  const bool sticky = (!v6 && to.local.family == 4) || (v6 && to.local.family == 6);
  if (sticky) {
    msg.msg_control = control;
    cmsghdr* c = reinterpret_cast<cmsghdr*>(control);
    if (!v6) {
      msg.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
      in_pktinfo pi{};
      std::memcpy(&pi.ipi_spec_dst, to.local.bytes.data(), 4);
      std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
    } else {
      msg.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo));
      c->cmsg_level = IPPROTO_IPV6;
      c->cmsg_type = IPV6_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
      in6_pktinfo pi{};
      std::memcpy(&pi.ipi6_addr, to.local.bytes.data(), 16);
      // A link-local source needs its interface; otherwise let routing pick it.
      if (pi.ipi6_addr.s6_addr[0] == 0xfe && (pi.ipi6_addr.s6_addr[1] & 0xc0) == 0x80)
        pi.ipi6_ifindex = to.local_ifindex;
      std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
    }
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    const ssize_t n = ::sendmsg(fd, &msg, MSG_DONTWAIT);
    if (n >= 0) return true;
    if (errno == EAGAIN || errno == ENOBUFS) {
      // Socket buffer full: wait briefly for room rather than dropping under a burst.
      pollfd pfd{fd, POLLOUT, 0};
      ::poll(&pfd, 1, 10);
      continue;
    }
    if (sticky && (errno == EINVAL || errno == EADDRNOTAVAIL || errno == ENETUNREACH)) {
      // The remembered source address went away: let the kernel choose again.
      to.local = {};
      to.local_ifindex = 0;
      msg.msg_control = nullptr;
      msg.msg_controllen = 0;
      continue;
    }
    return false;
  }
  return false;
}

bool LinuxBind::set_fwmark(uint32_t mark) {
  bool ok = true;
  for (int fd : {fd4_.load(), fd6_.load()}) {
    if (fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) ok = false;
  }
  return ok;
}

}  // namespace meshwg::dataplane
