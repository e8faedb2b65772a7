// Linux TUN device: /dev/net/tun with IFF_TUN | IFF_NO_PI, so every read() and write() is
// exactly one bare IP packet (no packet-information prefix). The MTU is set and read with
// SIOCSIFMTU/SIOCGIFMTU on a throwaway AF_INET datagram socket, which the kernel accepts for
// any interface in the caller's network namespace.
//
// Threads: read() may be called from any number of reader threads, write() from any number
// of writer threads (the kernel serialises per packet). close() may be called from any
// thread, any number of times; it only signals (a wake pipe) and never closes the
// fd, so a reader that is between poll() and read() can never touch a recycled descriptor.
// The fd is released in the destructor, which removes the (non-persistent) interface; the
// owner must join its readers before destroying the object.
#include "tun/tun_linux.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace meshwg::tun {
namespace {

constexpr int kWriteRetries = 8;        // EINTR/EAGAIN retries for one packet
constexpr int kWritePollMs = 100;       // how long one EAGAIN waits for room

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

void close_fd(int& fd) {
  if (fd >= 0) {
    ::close(fd);
    fd = -1;
  }
}

// Fills ifr with name (truncated names are rejected by the caller).
void fill_ifreq(struct ifreq& ifr, const std::string& name) {
  std::memset(&ifr, 0, sizeof ifr);
  std::memcpy(ifr.ifr_name, name.data(), name.size());
}

}  // namespace

std::unique_ptr<LinuxTun> LinuxTun::create(const std::string& ifname, int mtu, std::string& err,
                                           bool offload) {
  // IFNAMSIZ includes the terminating NUL; a longer name would be silently truncated by the
  // kernel and we would then manage an interface with a different name than asked for.
  if (ifname.empty() || ifname.size() >= IFNAMSIZ || ifname.find('/') != std::string::npos) {
    err = "invalid interface name '" + ifname + "'";
    return nullptr;
  }
  std::unique_ptr<LinuxTun> t(new LinuxTun());
  // O_NONBLOCK: read() waits in poll(), so a packet taken by another reader between poll()
  // and read() yields EAGAIN instead of blocking forever past a close().
  t->fd_ = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (t->fd_ < 0) {
    err = errno_text("open /dev/net/tun");
    return nullptr;
  }
  struct ifreq ifr;
  fill_ifreq(ifr, ifname);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
  if (::ioctl(t->fd_, TUNSETIFF, &ifr) < 0) {
    // EBUSY: another process (e.g. a second daemon) already has this TUN open.
    err = errno_text(("TUNSETIFF " + ifname).c_str());
    return nullptr;
  }
  if (offload) {
    // USO flags arrived in Linux 6.2 (and in its headers); older kernels reject them with
    // EINVAL, so fall back to checksum + TSO, and to no offloads at all if even that fails.
    constexpr unsigned kUso4 = 0x20, kUso6 = 0x40;  // TUN_F_USO4 / TUN_F_USO6
    const unsigned base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (::ioctl(t->fd_, TUNSETOFFLOAD, base | kUso4 | kUso6) == 0) {
      t->vnet_hdr_ = t->uso_ = true;
    } else if (::ioctl(t->fd_, TUNSETOFFLOAD, base) == 0) {
      t->vnet_hdr_ = true;
    } else {
      // IFF_VNET_HDR is set but unusable without offloads: start over without it.
      close_fd(t->fd_);
      return create(ifname, mtu, err, false);
    }
  }
  t->name_.assign(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ));
  if (::pipe2(t->wake_, O_CLOEXEC | O_NONBLOCK) < 0) {
    err = errno_text("pipe2");
    return nullptr;
  }
  if (mtu > 0 && !t->set_mtu(mtu)) {
    err = errno_text(("SIOCSIFMTU " + t->name_).c_str());
    return nullptr;
  }
  return t;
}

LinuxTun::~LinuxTun() {
  close();
  close_fd(fd_);
  close_fd(wake_[0]);
  close_fd(wake_[1]);
}

long LinuxTun::try_read(std::span<uint8_t> buf) {
  const ssize_t n = ::read(fd_, buf.data(), buf.size());
  if (n > 0) return n;
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return kWouldBlock;
  return read(buf);  // closed, deleted or an error: read() reports it as usual
}

long LinuxTun::read(std::span<uint8_t> buf) {
  // Bounded only by close(): this is the blocking read the contract asks for. Every pass
  // either returns or sleeps in poll(), so it never spins.
  // Under load a packet is usually waiting: try before paying for a poll(). The wake pipe is
  // still seen: the first read that finds nothing goes to poll().
  if (ssize_t n = ::read(fd_, buf.data(), buf.size()); n > 0) return n;
  for (;;) {
    struct pollfd p[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int r = ::poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    // The wake pipe is never drained, so once close() wrote to it every reader, present
    // and future, sees it readable and returns.
    if (p[1].revents != 0) return 0;
    if (p[0].revents & POLLIN) {
      ssize_t n = ::read(fd_, buf.data(), buf.size());
      if (n > 0) return n;
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;  // another reader won
      // EBADFD/EIO: the interface was deleted under us (ip link del). Report "closed": the
      // fd can never deliver again and returning -1 would make the caller spin.
      if (n < 0 && (errno == EBADFD || errno == EIO)) return 0;
      return -1;
    }
    // POLLERR without POLLIN is what a detached TUN (deleted interface) reports.
    if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL)) return 0;
  }
}

bool LinuxTun::write(std::span<const uint8_t> pkt) {
  for (int i = 0; i < kWriteRetries; ++i) {
    ssize_t n = ::write(fd_, pkt.data(), pkt.size());
    if (n == static_cast<ssize_t>(pkt.size())) return true;
    if (n >= 0) return false;  // a TUN write is all or nothing; a short one is an error
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      // The fd is non-blocking for read()'s sake; wait briefly rather than drop at once.
      struct pollfd p = {fd_, POLLOUT, 0};
      (void)::poll(&p, 1, kWritePollMs);
      continue;
    }
    return false;  // EINVAL (malformed packet), EBADFD (interface gone), ...
  }
  return false;
}

int LinuxTun::mtu() const {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ifreq ifr;
  fill_ifreq(ifr, name_);
  int r = ::ioctl(s, SIOCGIFMTU, &ifr);
  ::close(s);
  return r < 0 ? -1 : ifr.ifr_mtu;
}

bool LinuxTun::set_mtu(int mtu) {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return false;
  struct ifreq ifr;
  fill_ifreq(ifr, name_);
  ifr.ifr_mtu = mtu;
  int r = ::ioctl(s, SIOCSIFMTU, &ifr);
  int saved = errno;
  ::close(s);
  errno = saved;
  return r == 0;
}

void LinuxTun::close() {
  if (wake_[1] < 0) return;
  // One byte is enough (the pipe is never drained); EAGAIN means it is already full, which
  // also wakes everyone.
  const uint8_t b = 1;
  ssize_t r;
  do {
    r = ::write(wake_[1], &b, 1);
  } while (r < 0 && errno == EINTR);
}

bool LinuxTun::exists() const { return ::if_nametoindex(name_.c_str()) != 0; }

}  // namespace meshwg::tun
