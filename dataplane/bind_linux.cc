// Linux UDP sockets for the data plane (see bind_linux.h). Receivers block in poll() on their
// socket and a wake pipe; a re-open (listen_port change) wakes them so they pick up the new
// socket.
//
// Batching and offloads (the facts wireguard-go's conn/bind_std.go relies on):
// - recvmmsg/sendmmsg move up to kMaxBatch messages per syscall.
// - UDP_SEGMENT (SOL_UDP, Linux 4.18): a sendmsg carrying a uint16 segment size in a cmsg
//   sends its payload as consecutive datagrams of that size, the last possibly shorter; at
//   most 64 segments (UDP_MAX_SEGMENTS) and one IP packet's worth of payload (65507 bytes
//   over IPv4). Support is probed with getsockopt(UDP_SEGMENT). The kernel returns EIO when
//   the egress device cannot checksum the segments and EMSGSIZE for oversized trains: then
//   GSO is switched off for that socket family (for good, with a warning) and the batch is
//   re-sent without it, so no datagram is lost. EINVAL (segment larger than the path MTU,
//   which GSO never fragments) re-sends that batch without GSO but keeps GSO on.
// - UDP_GRO (setsockopt SOL_UDP, Linux 5.0): the kernel may deliver a train of same-flow
//   datagrams as one message; a UDP_GRO cmsg (int) gives the segment size, and the message
//   is split here. Without the option the kernel never coalesces (and segments GSO trains
//   from local senders before delivery), so a socket without GRO gets plain datagrams.
#include "dataplane/bind_linux.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/udp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace meshwg::dataplane {

namespace {

constexpr int kMaxGsoSegments = 64;  // UDP_MAX_SEGMENTS
// Payload limits of one GSO send: the IPv4 total length is 16 bits (65535 - 20 - 8); for IPv6
// the conservative figure wireguard-go uses (65535 - 40 - 8), safely below the kernel's.
constexpr size_t kMaxGsoPayload4 = 65507;
constexpr size_t kMaxGsoPayload6 = 65487;
// iovecs on the stack per sendmmsg call (each GSO send takes one per datagram).
constexpr int kMaxSendIov = 256;
// Room for IPV6_PKTINFO or IP_PKTINFO plus a UDP_GRO / UDP_SEGMENT cmsg.
constexpr size_t kControlSize = 128;
// A blocked receiver re-reads its descriptor after every poll timeout (re-open), and gives
// up with -1 (transient; the caller retries) after this many, so no wait is unbounded.
constexpr int kPollTimeoutMs = 200;
constexpr int kMaxPollRounds = 50;
// Socket buffer full: wait this long for room, at most this many times per send_batch(),
// rather than drop a burst at once.
constexpr int kSendWaitMs = 10;
constexpr int kMaxSendWaits = 2;

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

// Reads the local address (pktinfo) into from and returns the GRO segment size (0 = the
// message is one datagram).
size_t parse_control(msghdr& msg, Endpoint& from) {
  size_t gso = 0;
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
    } else if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
      int size = 0;
      std::memcpy(&size, CMSG_DATA(c), sizeof(size));
      if (size > 0) gso = size_t(size);
    }
  }
  return gso;
}

// Writes the send cmsgs (sticky source, GSO segment size) into control; returns their length.
size_t build_control(uint8_t* control, const Endpoint& to, bool v6, bool sticky, uint16_t segment) {
  std::memset(control, 0, kControlSize);
  size_t used = 0;
  if (sticky) {
    cmsghdr* c = reinterpret_cast<cmsghdr*>(control);
    if (!v6) {
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
      in_pktinfo pi{};
      std::memcpy(&pi.ipi_spec_dst, to.local.bytes.data(), 4);
      std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
      used += CMSG_SPACE(sizeof(in_pktinfo));
    } else {
      c->cmsg_level = IPPROTO_IPV6;
      c->cmsg_type = IPV6_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
      in6_pktinfo pi{};
      std::memcpy(&pi.ipi6_addr, to.local.bytes.data(), 16);
      // A link-local source needs its interface; otherwise let routing pick it.
      if (pi.ipi6_addr.s6_addr[0] == 0xfe && (pi.ipi6_addr.s6_addr[1] & 0xc0) == 0x80)
        pi.ipi6_ifindex = to.local_ifindex;
      std::memcpy(CMSG_DATA(c), &pi, sizeof(pi));
      used += CMSG_SPACE(sizeof(in6_pktinfo));
    }
  }
  if (segment != 0) {
    cmsghdr* c = reinterpret_cast<cmsghdr*>(control + used);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    std::memcpy(CMSG_DATA(c), &segment, sizeof(segment));
    used += CMSG_SPACE(sizeof(uint16_t));
  }
  return used;
}

int sys_sendmmsg(int fd, mmsghdr* msgs, unsigned int n, int flags) {
  return ::sendmmsg(fd, msgs, n, flags);
}

}  // namespace

void LinuxBind::Pending::append(const uint8_t* p, size_t len, const Endpoint& from) {
  if (data.size() < used + len) data.resize(std::max(data.size() * 2, used + len));
  if (len != 0) std::memcpy(data.data() + used, p, len);
  segs.push_back({used, len, from});
  used += len;
}

LinuxBind::LinuxBind(LinuxBindOptions options) : options_(options), sendmmsg_(sys_sendmmsg) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
}

LinuxBind::~LinuxBind() {
  close();
  if (wake_[0] >= 0) ::close(wake_[0]);
  if (wake_[1] >= 0) ::close(wake_[1]);
}

void LinuxBind::probe_offloads(int fd, int fam) {
  const char* name = fam == 0 ? "IPv4" : "IPv6";
  bool gso = false;
  if (fd >= 0 && options_.gso && !gso_failed_[fam]) {
    // Reading the option succeeds exactly when the kernel knows it.
    int v = 0;
    socklen_t len = sizeof(v);
    gso = ::getsockopt(fd, SOL_UDP, UDP_SEGMENT, &v, &len) == 0;
    if (!gso)
      spdlog::warn("{} UDP GSO (UDP_SEGMENT, Linux 4.18+) unavailable ({}); sending without it",
                   name, std::strerror(errno));
  }
  bool gro = false;
  if (fd >= 0 && options_.gro) {
    int one = 1;
    gro = ::setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0;
    if (!gro)
      spdlog::warn("{} UDP GRO (UDP_GRO, Linux 5.0+) unavailable ({}); receiving without it", name,
                   std::strerror(errno));
  }
  gso_[fam] = gso;
  gro_[fam] = gro;
}

void LinuxBind::disable_gso(int fam, int err) {
  gso_failed_[fam] = true;
  if (gso_[fam].exchange(false))
    spdlog::warn("{} UDP GSO send failed ({}); sending without GSO from now on",
                 fam == 0 ? "IPv4" : "IPv6", std::strerror(err));
}

bool LinuxBind::gso_enabled(int family) const {
  return family == 4 ? gso_[0].load() : family == 6 ? gso_[1].load() : false;
}

bool LinuxBind::gro_enabled(int family) const {
  return family == 4 ? gro_[0].load() : family == 6 ? gro_[1].load() : false;
}

// Registers a user of the current socket generation. seq_cst on both sides (users_ then gen_
// here, gen_ then users_ in retire) so retire() cannot miss a user that saw the old sockets.
class LinuxBind::Use {
 public:
  explicit Use(LinuxBind& b) : b_(b) {
    for (;;) {
      const uint32_t g = b_.gen_.load();
      slot_ = int(g & 1);
      b_.users_[slot_].fetch_add(1);
      if (b_.gen_.load() == g) return;
      b_.users_[slot_].fetch_sub(1);
    }
  }
  ~Use() { b_.users_[slot_].fetch_sub(1); }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;

 private:
  LinuxBind& b_;
  int slot_ = 0;
};

void LinuxBind::retire(int old4, int old6) {
  const int slot = int(gen_.fetch_add(1) & 1);
  // shutdown() wakes a receiver polling the old socket at once instead of after its timeout.
  if (old4 >= 0) ::shutdown(old4, SHUT_RDWR);
  if (old6 >= 0) ::shutdown(old6, SHUT_RDWR);
  for (int i = 0; i < 2 * kPollTimeoutMs && users_[slot].load() != 0; ++i)
    ::usleep(1000);  // bounded: a user holds a Use for at most one poll timeout
  if (old4 >= 0) ::close(old4);
  if (old6 >= 0) ::close(old6);
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
    // Offloads are settled before the sockets are published, so a sender never uses GSO on
    // a socket that was not probed.
    probe_offloads(fd4, 0);
    probe_offloads(fd6, 1);
    retire(fd4_.exchange(fd4), fd6_.exchange(fd6));
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
  retire(fd4_.exchange(-1), fd6_.exchange(-1));
}

long LinuxBind::receive(int i, std::span<uint8_t> buf, Endpoint& from) {
  RecvMsg m{buf, 0, {}};
  const int n = receive_batch(i, {&m, 1});
  if (n <= 0) return n;
  from = m.from;
  return long(m.len);
}

int LinuxBind::try_receive_batch(int i, std::span<RecvMsg> msgs) {
  if (i < 0 || i > 1 || msgs.empty()) return -1;
  msgs = msgs.first(std::min(msgs.size(), size_t(kMaxBatch)));
  if (closed_) return int(kClosed);
  if (!pending_[i].empty()) {
    const size_t n = drain(pending_[i], msgs);
    if (n > 0) return int(n);
  }
  Use use(*this);
  const int fd = i == 0 ? fd4_.load() : fd6_.load();
  if (fd < 0) return kWouldBlock;
  const int n = read_socket(i, fd, msgs);
  return n == 0 ? kWouldBlock : n;
}

int LinuxBind::receive_batch(int i, std::span<RecvMsg> msgs) {
  if (i < 0 || i > 1 || msgs.empty()) return -1;
  msgs = msgs.first(std::min(msgs.size(), size_t(kMaxBatch)));
  Pending& pend = pending_[i];
  if (closed_) {
    pend.reset();
    return int(kClosed);
  }
  // The rest of an earlier train comes before anything newer on the socket.
  if (!pend.empty()) {
    const size_t n = drain(pend, msgs);
    if (n > 0) return int(n);
  }
  {
    // Under load a datagram is usually waiting: try before paying for a poll().
    Use use(*this);
    const int fd = i == 0 ? fd4_.load() : fd6_.load();
    if (fd >= 0) {
      const int n = read_socket(i, fd, msgs);
      if (n != 0) return n;
    }
  }
  for (int round = 0; round < kMaxPollRounds; ++round) {
    if (closed_) return int(kClosed);
    Use use(*this);
    const int fd = i == 0 ? fd4_.load() : fd6_.load();
    pollfd pfd[2] = {{wake_[0], POLLIN, 0}, {fd, POLLIN, 0}};
    const int r = ::poll(pfd, fd >= 0 ? 2 : 1, kPollTimeoutMs);
    if (closed_) return int(kClosed);
    if (r < 0 && errno != EINTR) return -1;
    if (fd < 0 || !(pfd[1].revents & POLLIN)) continue;
    const int n = read_socket(i, fd, msgs);
    if (n != 0) return n;  // 0: another reader took it, or EINTR; wait again
  }
  return -1;
}

// One recvmmsg on a readable socket. Returns datagrams filled, 0 when nothing was there, -1
// on an error or when everything read had to be dropped.
int LinuxBind::read_socket(int i, int fd, std::span<RecvMsg> msgs) {
  Pending& pend = pending_[i];  // empty here: receive_batch() drains it first
  const size_t n = msgs.size();
  // With GRO a message may be a whole train, so it is read straight into the caller's slots
  // only if every slot can hold one; else one message goes into the pending buffer.
  bool direct = true;
  if (gro_[i].load(std::memory_order_relaxed)) {
    for (const RecvMsg& m : msgs) {
      if (m.buf.size() < kMaxDatagramSize) {
        direct = false;
        break;
      }
    }
  }
  // Read as many messages as their datagrams will likely fill: every slot when trains are
  // absent, fewer when the last read saw trains, so the overflow kept in `pend` stays small.
  size_t r = 1;
  if (direct) r = std::max<size_t>(1, n / std::max<size_t>(1, train_segs_[i]));
  if (!direct && pend.data.size() < kMaxDatagramSize) pend.data.resize(kMaxDatagramSize);

  mmsghdr hdr[kMaxBatch];
  iovec iov[kMaxBatch];
  sockaddr_storage names[kMaxBatch];
  alignas(cmsghdr) uint8_t control[kMaxBatch][kControlSize];
  for (size_t j = 0; j < r; ++j) {
    iov[j] = direct ? iovec{msgs[j].buf.data(), msgs[j].buf.size()}
                    : iovec{pend.data.data(), kMaxDatagramSize};
    hdr[j] = {};
    hdr[j].msg_hdr.msg_name = &names[j];
    hdr[j].msg_hdr.msg_namelen = sizeof(names[j]);
    hdr[j].msg_hdr.msg_iov = &iov[j];
    hdr[j].msg_hdr.msg_iovlen = 1;
    hdr[j].msg_hdr.msg_control = control[j];
    hdr[j].msg_hdr.msg_controllen = kControlSize;
  }
  const int got = ::recvmmsg(fd, hdr, unsigned(r), MSG_DONTWAIT, nullptr);
  if (got < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
  if (got == 0) return 0;

  struct Msg {
    uint8_t* data;
    size_t len;
    size_t gso;   // segment size, or 0 for a single datagram
    size_t segs;  // datagrams in the message; 0 = dropped
    Endpoint from;
  };
  Msg in[kMaxBatch];
  size_t total = 0;
  size_t most = 1;
  bool dropped = false;
  for (int j = 0; j < got; ++j) {
    Msg& m = in[j];
    msghdr& h = hdr[j].msg_hdr;
    m.data = static_cast<uint8_t*>(iov[j].iov_base);
    m.len = hdr[j].msg_len;
    m.from = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&names[j]), h.msg_namelen);
    m.gso = parse_control(h, m.from);
    if (m.gso >= m.len) m.gso = 0;
    m.segs = m.gso ? (m.len + m.gso - 1) / m.gso : 1;
    // A truncated message lost its tail; its datagram(s) cannot be returned whole.
    if (h.msg_flags & MSG_TRUNC) {
      m.segs = 0;
      dropped = true;
      recv_truncated_.fetch_add(1, std::memory_order_relaxed);
    }
    if (m.segs > 1) gro_trains_.fetch_add(1, std::memory_order_relaxed);
    total += m.segs;
    most = std::max(most, m.segs);
  }
  train_segs_[i] = most;
  auto seg_len = [](const Msg& m, size_t k) {
    return m.gso ? std::min(m.gso, m.len - k * m.gso) : m.len;
  };

  if (!direct || dropped) {
    // Rare paths (small caller buffers with GRO; a truncated datagram): every datagram goes
    // through `pend`, which copes with any placement. In the !direct case the message is
    // already in pend.data at offset 0, so it is only indexed, not copied.
    if (!direct) {
      for (size_t k = 0; k < in[0].segs; ++k)
        pend.segs.push_back({k * in[0].gso, seg_len(in[0], k), in[0].from});
      pend.used = in[0].len;
    } else {
      for (int j = 0; j < got; ++j)
        for (size_t k = 0; k < in[j].segs; ++k)
          pend.append(in[j].data + k * in[j].gso, seg_len(in[j], k), in[j].from);
    }
    const size_t out = drain(pend, msgs);
    return out > 0 ? int(out) : -1;
  }

  // Direct, nothing dropped: message j sits in slot j and its datagrams belong in slots
  // first[j] .. first[j] + segs - 1, where first[j] >= j (every message yields >= 1).
  size_t first[kMaxBatch];
  for (int j = 0, pos = 0; j < got; pos += int(in[j].segs), ++j) first[j] = size_t(pos);
  // Datagrams past the last slot are copied out first, in order, before any slot changes.
  for (int j = 0; j < got; ++j)
    for (size_t k = 0; k < in[j].segs; ++k)
      if (first[j] + k >= n) pend.append(in[j].data + k * in[j].gso, seg_len(in[j], k), in[j].from);
  // Then from the last message back: message j writes only slots >= j, whose own messages
  // (> j) are already placed, and never the slots of messages < j, still to be read.
  // Slot j's own first datagram is already in place.
  for (int j = got - 1; j >= 0; --j) {
    if (first[j] >= n) continue;
    const size_t fit = std::min(in[j].segs, n - first[j]);
    for (size_t k = fit; k-- > 0;) {
      const size_t d = first[j] + k;
      const size_t len = seg_len(in[j], k);
      if (d != size_t(j) || k != 0)
        std::memcpy(msgs[d].buf.data(), in[j].data + k * in[j].gso, len);
      msgs[d].len = len;
      msgs[d].from = in[j].from;
    }
  }
  return int(std::min(total, n));
}

// Moves pending datagrams into msgs, in order; returns how many.
size_t LinuxBind::drain(Pending& pend, std::span<RecvMsg> msgs) {
  size_t out = 0;
  while (!pend.empty() && out < msgs.size()) {
    const Pending::Seg& s = pend.segs[pend.head++];
    if (s.len > msgs[out].buf.size()) {
      // Cannot be returned whole in this slot: dropped, as receive() drops an oversize one.
      recv_truncated_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (s.len != 0) std::memcpy(msgs[out].buf.data(), pend.data.data() + s.off, s.len);
    msgs[out].len = s.len;
    msgs[out].from = s.from;
    ++out;
  }
  if (pend.empty()) pend.reset();
  return out;
}

bool LinuxBind::send(std::span<const uint8_t> data, Endpoint& to) {
  return send_batch({&data, 1}, to) == 1;
}

size_t LinuxBind::send_batch(std::span<const std::span<const uint8_t>> datagrams, Endpoint& to) {
  const bool v6 = to.addr.sa.sa_family == AF_INET6;
  if (!v6 && to.addr.sa.sa_family != AF_INET) return 0;
  const int fam = v6 ? 1 : 0;
  Use use(*this);
  const int fd = v6 ? fd6_.load() : fd4_.load();
  if (fd < 0) return 0;
  const size_t max_payload = v6 ? kMaxGsoPayload6 : kMaxGsoPayload4;
  bool gso = gso_[fam].load(std::memory_order_relaxed);
  bool sticky = (!v6 && to.local.family == 4) || (v6 && to.local.family == 6);
  const size_t total = datagrams.size();
  size_t sent = 0;
  int waits = 0;
  // Bounded: every round sends at least one datagram, or turns GSO or the sticky source off
  // (once each), or waits (kMaxSendWaits times), or ends the call.
  const size_t max_rounds = total + 2 + kMaxSendWaits;
  for (size_t round = 0; sent < total && round < max_rounds; ++round) {
    mmsghdr hdr[kMaxBatch];
    iovec iov[kMaxSendIov];
    size_t count[kMaxBatch];  // datagrams in each message
    alignas(cmsghdr) uint8_t control[kMaxBatch][kControlSize];
    int nmsg = 0;
    int niov = 0;
    size_t k = sent;
    while (k < total && nmsg < kMaxBatch && niov < kMaxSendIov) {
      // A GSO train: datagrams of the first one's size, ended early by a shorter one.
      const size_t size = datagrams[k].size();
      size_t c = 1;
      size_t bytes = size;
      if (gso && size != 0) {
        while (k + c < total && c < size_t(kMaxGsoSegments) && niov + int(c) < kMaxSendIov) {
          const size_t s = datagrams[k + c].size();
          if (s == 0 || s > size || bytes + s > max_payload) break;
          bytes += s;
          ++c;
          if (s < size) break;
        }
      }
      for (size_t j = 0; j < c; ++j)
        iov[niov + int(j)] = {const_cast<uint8_t*>(datagrams[k + j].data()),
                              datagrams[k + j].size()};
      msghdr& h = hdr[nmsg].msg_hdr;
      hdr[nmsg] = {};
      h.msg_name = &to.addr;
      h.msg_namelen = to.socklen();
      h.msg_iov = &iov[niov];
      h.msg_iovlen = c;
      const size_t clen = build_control(control[nmsg], to, v6, sticky, c > 1 ? uint16_t(size) : 0);
      h.msg_control = clen ? control[nmsg] : nullptr;
      h.msg_controllen = clen;
      count[nmsg] = c;
      ++nmsg;
      niov += int(c);
      k += c;
    }
    const int r = sendmmsg_(fd, hdr, unsigned(nmsg), MSG_DONTWAIT);
    if (r > 0) {
      for (int j = 0; j < r; ++j) {
        sent += count[j];
        if (count[j] > 1) gso_sends_.fetch_add(1, std::memory_order_relaxed);
      }
      continue;
    }
    // The first message failed (sendmmsg reports an error only for the first).
    const int err = r < 0 ? errno : EAGAIN;
    if (err == EAGAIN || err == ENOBUFS || err == EINTR) {
      // Socket buffer full: wait briefly for room rather than dropping under a burst.
      if (waits++ >= kMaxSendWaits) break;
      pollfd pfd{fd, POLLOUT, 0};
      ::poll(&pfd, 1, kSendWaitMs);
      continue;
    }
    if (count[0] > 1 && (err == EIO || err == EMSGSIZE || err == EINVAL)) {
      // The kernel refused the GSO train: nothing of it left, so re-send it segment by
      // segment. EIO / EMSGSIZE will recur on this socket: off for good.
      if (err != EINVAL) disable_gso(fam, err);
      gso = false;
      continue;
    }
    if (sticky && (err == EINVAL || err == EADDRNOTAVAIL || err == ENETUNREACH)) {
      // The remembered source address went away: let the kernel choose again.
      to.local = {};
      to.local_ifindex = 0;
      sticky = false;
      continue;
    }
    break;  // a hard error for this endpoint: the rest would fail alike
  }
  return sent;
}

bool LinuxBind::set_fwmark(uint32_t mark) {
  bool ok = true;
  Use use(*this);
  for (int fd : {fd4_.load(), fd6_.load()}) {
    if (fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) ok = false;
  }
  return ok;
}

}  // namespace meshwg::dataplane
