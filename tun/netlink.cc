// rtnetlink (RFC 3549; message and attribute layouts from linux/rtnetlink.h, if_addr.h,
// if_link.h) over libmnl: RTM_SETLINK (MTU, IFF_UP), RTM_NEWADDR/DELADDR, RTM_NEWROUTE/DELROUTE,
// RTM_GETLINK/GETADDR dumps, and a listener on the RTMGRP_* multicast groups.
//
// One exchange = one fresh NETLINK_ROUTE socket: send one request, read its reply up to the
// ack (NLMSG_ERROR) or the end of the dump (NLMSG_DONE), close. A private socket per call means
// a late reply to an earlier, timed-out call can never be taken for this one's, and callers on
// different threads share nothing. The reply loop is ours rather than mnl_cb_run(): that one
// takes sequence number 0 and port id 0 as wildcards, ignores bytes after the last whole
// message and drops the errno an NLMSG_DONE carries; here each of those is an error.
// libmnl builds the messages and checks attribute bounds (mnl_attr_ok).
#include "tun/netlink.h"

#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>

namespace meshwg::tun {
namespace {

using dataplane::IpAddress;
using dataplane::IpPrefix;
using Clock = std::chrono::steady_clock;

constexpr size_t kRequestBufSize = 512;  // our requests: a header and at most four small attributes
constexpr size_t kDumpBufSize = 65536;   // the kernel fills dump datagrams up to 32 KiB; a single
                                         // link message may exceed that, hence twice as much
constexpr size_t kMonitorBufSize = 65536;  // notifications are single messages of link size
constexpr int kMaxReplyDatagrams = 4096;   // per exchange
constexpr int kMaxReplyMessages = 65536;   // data messages (dump entries) per exchange
constexpr int kDumpRetries = 3;            // after NLM_F_DUMP_INTR
constexpr int kMaxErrno = 4095;            // the kernel's MAX_ERRNO

// Non-zero (0 is what notifications carry) and different for every request of the process.
uint32_t next_seq() {
  static std::atomic<uint32_t> seq{static_cast<uint32_t>(std::time(nullptr))};
  uint32_t s;
  do {
    s = seq.fetch_add(1, std::memory_order_relaxed);
  } while (s == 0);
  return s;
}

class Socket {
 public:
  Socket() = default;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() {
    if (nl_) mnl_socket_close(nl_);
  }
  int open() {
    nl_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!nl_) return -errno;
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) return -errno;
    portid_ = mnl_socket_get_portid(nl_);
    return 0;
  }
  mnl_socket* get() const { return nl_; }
  int fd() const { return mnl_socket_get_fd(nl_); }
  uint32_t portid() const { return portid_; }

 private:
  mnl_socket* nl_ = nullptr;
  uint32_t portid_ = 0;
};

// One request message in a fixed buffer: a netlink header, the family header T, attributes.
class Request {
 public:
  Request(uint16_t type, uint16_t flags) {
    nlh_ = mnl_nlmsg_put_header(buf_);
    nlh_->nlmsg_type = type;
    nlh_->nlmsg_flags = flags;
  }
  template <class T>
  T* put_header() {
    return static_cast<T*>(mnl_nlmsg_put_extra_header(nlh_, sizeof(T)));
  }
  // False (the caller returns -EMSGSIZE) if the buffer is full; cannot happen with our sizes.
  bool put(uint16_t type, std::span<const uint8_t> data) {
    ok_ = ok_ && mnl_attr_put_check(nlh_, sizeof buf_, type, data.size(), data.data());
    return ok_;
  }
  bool put_u32(uint16_t type, uint32_t v) {
    ok_ = ok_ && mnl_attr_put_u32_check(nlh_, sizeof buf_, type, v);
    return ok_;
  }
  bool ok() const { return ok_; }
  nlmsghdr* nlh() { return nlh_; }

 private:
  alignas(nlmsghdr) uint8_t buf_[kRequestBufSize] = {};
  nlmsghdr* nlh_;
  bool ok_ = true;
};

// One datagram from a netlink socket.
struct Datagram {
  int len = 0;          // bytes received (valid when err == 0)
  int err = 0;          // -errno of recvmsg (-EAGAIN: nothing pending)
  uint32_t sender = 0;  // nl_pid of the sender; 0 is the kernel
  bool truncated = false;
};

Datagram recv_datagram(int fd, std::span<uint8_t> buf, int flags) {
  Datagram d;
  sockaddr_nl from{};
  iovec iov{buf.data(), buf.size()};
  msghdr m{};
  m.msg_name = &from;
  m.msg_namelen = sizeof from;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  const ssize_t n = ::recvmsg(fd, &m, flags);
  if (n < 0) {
    d.err = errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return d;
  }
  d.len = static_cast<int>(n);  // n <= buf.size() <= INT_MAX
  // A sender address we cannot read is treated as not the kernel's.
  d.sender = (m.msg_namelen == sizeof from && from.nl_family == AF_NETLINK) ? from.nl_pid : ~0u;
  d.truncated = (m.msg_flags & MSG_TRUNC) != 0;
  return d;
}

// Waits (bounded by deadline) for the next datagram the kernel sends to s. Datagrams from other
// senders are dropped. Returns its length, or -ETIMEDOUT, -EMSGSIZE (truncated), -errno.
int recv_reply(const Socket& s, std::span<uint8_t> buf, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return -ETIMEDOUT;
    pollfd p{s.fd(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) return -ETIMEDOUT;
    const Datagram d = recv_datagram(s.fd(), buf, MSG_DONTWAIT);
    if (d.err == -EINTR || d.err == -EAGAIN) continue;
    if (d.err != 0) return d.err;  // -ENOBUFS: the kernel dropped part of our reply
    if (d.sender != 0) continue;   // another process's unicast to our port: not a reply
    if (d.truncated) return -EMSGSIZE;
    return d.len;
  }
}

// The errno of an NLMSG_ERROR (0 for an ack), or -EBADMSG / -EPROTO if the message is short,
// answers another request, or carries a value that is no errno.
int ack_errno(const nlmsghdr* h, uint32_t seq) {
  if (h->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) return -EBADMSG;
  nlmsgerr e;
  std::memcpy(&e, mnl_nlmsg_get_payload(h), sizeof e);
  if (e.msg.nlmsg_seq != seq) return -EPROTO;
  const int err = e.error > 0 ? -e.error : e.error;  // some families send it positive
  return err < -kMaxErrno ? -EPROTO : err;
}

// The errno an NLMSG_DONE carries (0 if it carries none: kernels before 4.x sent it bare).
int done_errno(const nlmsghdr* h) {
  if (h->nlmsg_len < mnl_nlmsg_size(sizeof(int))) return 0;
  int err;
  std::memcpy(&err, mnl_nlmsg_get_payload(h), sizeof err);
  if (err > 0) err = -err;
  return err < -kMaxErrno ? -EPROTO : err;
}

// Data messages of a reply go here; returning a negative errno ends the exchange with it.
using OnMessage = std::function<int(const nlmsghdr*)>;

// Sends req on a fresh socket (NLM_F_REQUEST | NLM_F_ACK and a new sequence number are set
// here) and reads the reply: up to the ack for a request, up to NLMSG_DONE for a dump
// (NLM_F_DUMP; the kernel never acks a dump, NLMSG_DONE carries its errno instead). Every data
// message in between goes to on_msg (if set). Returns the ack's or NLMSG_DONE's errno, on_msg's
// error, -EINTR if the kernel marked the dump inconsistent (NLM_F_DUMP_INTR: retry), or a
// transport/format error (-ETIMEDOUT, -EMSGSIZE, -EBADMSG, -EPROTO, -E2BIG, -ENOBUFS).
int transact(Request& req, const OnMessage& on_msg) {
  if (!req.ok()) return -EMSGSIZE;
  nlmsghdr* nlh = req.nlh();
  const bool dump = (nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
  Socket s;
  if (int r = s.open(); r < 0) return r;
  nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = next_seq();
  nlh->nlmsg_pid = 0;
  const uint32_t seq = nlh->nlmsg_seq;
  const ssize_t sent = mnl_socket_sendto(s.get(), nlh, nlh->nlmsg_len);
  if (sent < 0) return -errno;
  if (static_cast<size_t>(sent) != nlh->nlmsg_len) return -EIO;

  // An ack (with our short request echoed) fits the standard size; a dump or a data answer
  // (one link message can be many KiB) gets the large buffer.
  std::vector<uint8_t> buf(dump || on_msg ? kDumpBufSize
                                          : static_cast<size_t>(MNL_SOCKET_BUFFER_SIZE));
  const auto deadline = Clock::now() + std::chrono::milliseconds(kReplyTimeoutMs);
  int messages = 0;
  bool interrupted = false;
  for (int dgram = 0; dgram < kMaxReplyDatagrams; ++dgram) {
    const int n = recv_reply(s, buf, deadline);
    if (n < 0) return n;
    int len = n;
    auto* h = reinterpret_cast<const nlmsghdr*>(buf.data());
    for (; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
      // Replies to us name our port and our sequence number; anything else is not ours.
      if (h->nlmsg_pid != s.portid() || h->nlmsg_seq != seq) return -EPROTO;
      if (h->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const int err = ack_errno(h, seq);
        // An ack with 0 before NLMSG_DONE would end a dump early, i.e. incompletely.
        if (err == 0 && dump) return -EPROTO;
        return err;
      }
      if (h->nlmsg_type == NLMSG_DONE) {
        if (!dump) return -EPROTO;
        const int err = done_errno(h);
        if (err != 0) return err;
        return interrupted ? -EINTR : 0;
      }
      if (h->nlmsg_type == NLMSG_OVERRUN) return -ENOBUFS;
      if (h->nlmsg_type < NLMSG_MIN_TYPE) continue;  // NLMSG_NOOP and unknown control
      if (++messages > kMaxReplyMessages) return -E2BIG;
      if (on_msg) {
        if (int err = on_msg(h); err < 0) return err;
      }
    }
    // Bytes left that do not form a whole message: a truncated message.
    if (len > 0) return -EBADMSG;
  }
  return -E2BIG;
}

// Runs a dump, calling reset() before each attempt, and retries an interrupted one.
int dump(Request& req, const std::function<void()>& reset, const OnMessage& on_msg) {
  int r = -EINTR;
  for (int i = 0; i < kDumpRetries && r == -EINTR; ++i) {
    reset();
    r = transact(req, on_msg);
  }
  return r;
}

// Points tb[type] at each attribute of h that follows its family header (fixed bytes); types
// beyond tb are skipped, a repeated type keeps the last (as the kernel's nla_parse does).
// -EBADMSG if the family header or an attribute runs past the end of the message.
int parse_attrs(const nlmsghdr* h, size_t fixed, std::span<const nlattr*> tb) {
  if (h->nlmsg_len < mnl_nlmsg_size(fixed)) return -EBADMSG;
  for (auto& t : tb) t = nullptr;
  const char* end = reinterpret_cast<const char*>(h) + h->nlmsg_len;
  auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(h, fixed));
  long left = end - reinterpret_cast<const char*>(a);
  while (left > 0 && mnl_attr_ok(a, static_cast<int>(left))) {
    const uint16_t type = mnl_attr_get_type(a);
    if (type < tb.size()) tb[type] = a;
    a = mnl_attr_next(a);
    left = end - reinterpret_cast<const char*>(a);
  }
  return left > 0 ? -EBADMSG : 0;
}

// A NUL-terminated string attribute of at most max bytes including the NUL, or nullopt.
std::optional<std::string> attr_string(const nlattr* a, size_t max) {
  const size_t n = mnl_attr_get_payload_len(a);
  if (n == 0 || n > max) return std::nullopt;
  const char* p = mnl_attr_get_str(a);
  const size_t len = ::strnlen(p, n);
  if (len == n) return std::nullopt;  // no NUL inside the attribute
  return std::string(p, len);
}

std::optional<uint32_t> attr_u32(const nlattr* a) {
  if (mnl_attr_get_payload_len(a) != sizeof(uint32_t)) return std::nullopt;
  return mnl_attr_get_u32(a);
}

// Parses an RTM_NEWLINK. 1 = parsed, 0 = not a link message, -EBADMSG = malformed.
int parse_link(const nlmsghdr* h, LinkInfo& out) {
  if (h->nlmsg_type != RTM_NEWLINK) return 0;
  const nlattr* tb[IFLA_MAX + 1];
  if (int r = parse_attrs(h, sizeof(ifinfomsg), tb); r < 0) return r;
  ifinfomsg ifi;
  std::memcpy(&ifi, mnl_nlmsg_get_payload(h), sizeof ifi);
  if (ifi.ifi_index <= 0 || !tb[IFLA_IFNAME]) return -EBADMSG;
  auto name = attr_string(tb[IFLA_IFNAME], IFNAMSIZ);
  if (!name) return -EBADMSG;
  out.ifindex = ifi.ifi_index;
  out.name = std::move(*name);
  out.flags = ifi.ifi_flags;
  out.mtu = 0;
  if (tb[IFLA_MTU]) {
    auto mtu = attr_u32(tb[IFLA_MTU]);
    if (!mtu) return -EBADMSG;
    out.mtu = *mtu;
  }
  return 1;
}

// Parses an RTM_NEWADDR. 1 = parsed, 0 = not an IPv4/IPv6 address message, -EBADMSG.
int parse_address(const nlmsghdr* h, LinkAddress& out) {
  if (h->nlmsg_type != RTM_NEWADDR) return 0;
  const nlattr* tb[IFA_MAX + 1];
  if (int r = parse_attrs(h, sizeof(ifaddrmsg), tb); r < 0) return r;
  ifaddrmsg ifa;
  std::memcpy(&ifa, mnl_nlmsg_get_payload(h), sizeof ifa);
  if (ifa.ifa_family != AF_INET && ifa.ifa_family != AF_INET6) return 0;
  const size_t size = ifa.ifa_family == AF_INET ? 4 : 16;
  if (ifa.ifa_index == 0 || ifa.ifa_index > INT_MAX || ifa.ifa_prefixlen > size * 8)
    return -EBADMSG;
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on a point-to-point
  // link, and the same as IFA_LOCAL (or alone, for IPv6) otherwise.
  const nlattr* a = tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
  if (!a || mnl_attr_get_payload_len(a) != size) return -EBADMSG;
  const auto* bytes = static_cast<const uint8_t*>(mnl_attr_get_payload(a));
  out.address = size == 4 ? IpAddress::v4(bytes) : IpAddress::v6(bytes);
  out.ifindex = static_cast<int>(ifa.ifa_index);
  out.prefixlen = ifa.ifa_prefixlen;
  out.scope = ifa.ifa_scope;
  out.flags = ifa.ifa_flags;
  if (tb[IFA_FLAGS]) {
    auto f = attr_u32(tb[IFA_FLAGS]);
    if (!f) return -EBADMSG;
    out.flags = *f;
  }
  out.ifname.clear();
  out.link_flags = 0;
  return 1;
}

// 0, or -EINVAL unless p is an IPv4/IPv6 prefix with a length that fits its family.
int check_prefix(const IpPrefix& p) {
  if (p.addr.family != 4 && p.addr.family != 6) return -EINVAL;
  if (p.cidr > p.addr.size() * 8) return -EINVAL;
  return 0;
}

int address_request(uint16_t type, uint16_t flags, int ifindex, const IpPrefix& p) {
  if (ifindex <= 0) return -EINVAL;
  if (int r = check_prefix(p); r < 0) return r;
  Request req(type, flags);
  auto* ifa = req.put_header<ifaddrmsg>();
  ifa->ifa_family = p.addr.family == 4 ? AF_INET : AF_INET6;
  ifa->ifa_prefixlen = p.cidr;
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = static_cast<uint32_t>(ifindex);
  if (p.addr.family == 4) {
    req.put(IFA_LOCAL, p.addr.span());
    req.put(IFA_ADDRESS, p.addr.span());
  } else {
    req.put(IFA_ADDRESS, p.addr.span());
    if (type == RTM_NEWADDR) {
      // No duplicate address detection: the address is usable at once instead of tentative
      // for a second or more, and a tunnel address has no link neighbours to collide with.
      ifa->ifa_flags = IFA_F_NODAD;
      req.put_u32(IFA_FLAGS, IFA_F_NODAD);
    }
  }
  return transact(req, {});
}

int route_request(uint16_t type, uint16_t flags, int ifindex, const IpPrefix& dst) {
  if (ifindex <= 0) return -EINVAL;
  if (int r = check_prefix(dst); r < 0) return r;
  IpPrefix canonical = dst;
  canonical.mask();
  if (!(canonical == dst)) return -EINVAL;  // host bits set: as `ip route` and the kernel say
  const bool add = type == RTM_NEWROUTE;
  Request req(type, flags);
  auto* rt = req.put_header<rtmsg>();
  rt->rtm_family = dst.addr.family == 4 ? AF_INET : AF_INET6;
  rt->rtm_dst_len = dst.cidr;
  rt->rtm_table = RT_TABLE_MAIN;
  // A delete matches any protocol and scope (RTPROT_UNSPEC, RT_SCOPE_NOWHERE), as `ip route
  // del` does; IPv6 ignores the scope.
  rt->rtm_protocol = add ? RTPROT_STATIC : RTPROT_UNSPEC;
  rt->rtm_scope = add ? RT_SCOPE_LINK : RT_SCOPE_NOWHERE;
  rt->rtm_type = RTN_UNICAST;
  if (dst.cidr > 0) req.put(RTA_DST, dst.addr.span());
  req.put_u32(RTA_TABLE, RT_TABLE_MAIN);
  req.put_u32(RTA_OIF, static_cast<uint32_t>(ifindex));
  return transact(req, {});
}

int setlink_request(int ifindex, const std::function<void(Request&, ifinfomsg*)>& fill) {
  if (ifindex <= 0) return -EINVAL;
  Request req(RTM_SETLINK, 0);
  auto* ifi = req.put_header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = ifindex;
  fill(req, ifi);
  return transact(req, {});
}

}  // namespace

std::string netlink_strerror(int err) {
  if (err >= 0) return "success";
  char buf[128];
  return ::strerror_r(-err, buf, sizeof buf);  // GNU strerror_r: returns the text
}

int link_index(std::string_view ifname) {
  if (ifname.empty() || ifname.size() >= IFNAMSIZ || ifname.find('\0') != std::string_view::npos)
    return -EINVAL;
  char name[IFNAMSIZ] = {};
  std::memcpy(name, ifname.data(), ifname.size());
  errno = 0;
  const unsigned idx = ::if_nametoindex(name);
  if (idx == 0) return errno != 0 ? -errno : -ENODEV;
  if (idx > INT_MAX) return -EOVERFLOW;
  return static_cast<int>(idx);
}

int get_link(int ifindex, LinkInfo& out) {
  if (ifindex <= 0) return -EINVAL;
  Request req(RTM_GETLINK, 0);
  auto* ifi = req.put_header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = ifindex;
  req.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  bool found = false;
  LinkInfo li;
  int r = transact(req, [&](const nlmsghdr* h) {
    int p = parse_link(h, li);
    if (p < 0) return p;
    if (p == 1) {
      if (found || li.ifindex != ifindex) return -EPROTO;  // one answer, about this link
      found = true;
    }
    return 0;
  });
  if (r < 0) return r;
  if (!found) return -EPROTO;
  out = std::move(li);
  return 0;
}

int list_links(std::vector<LinkInfo>& out) {
  Request req(RTM_GETLINK, NLM_F_DUMP);
  auto* ifi = req.put_header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  req.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  std::vector<LinkInfo> links;
  int r = dump(req, [&] { links.clear(); }, [&](const nlmsghdr* h) {
    LinkInfo li;
    int p = parse_link(h, li);
    if (p == 1) links.push_back(std::move(li));
    return p < 0 ? p : 0;
  });
  if (r < 0) return r;
  out = std::move(links);
  return 0;
}

int set_link_mtu(int ifindex, uint32_t mtu) {
  if (mtu > INT_MAX) return -EINVAL;  // the kernel's MTU is an int
  return setlink_request(ifindex, [&](Request& req, ifinfomsg*) { req.put_u32(IFLA_MTU, mtu); });
}

int set_link_up(int ifindex, bool up) {
  return setlink_request(ifindex, [&](Request&, ifinfomsg* ifi) {
    ifi->ifi_change = IFF_UP;
    ifi->ifi_flags = up ? IFF_UP : 0;
  });
}

int add_address(int ifindex, const IpPrefix& p) {
  return address_request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, p);
}

int del_address(int ifindex, const IpPrefix& p) {
  return address_request(RTM_DELADDR, 0, ifindex, p);
}

int add_route(int ifindex, const IpPrefix& dst) {
  return route_request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, ifindex, dst);
}

int del_route(int ifindex, const IpPrefix& dst) {
  return route_request(RTM_DELROUTE, 0, ifindex, dst);
}

int list_addresses(std::vector<LinkAddress>& out) {
  Request req(RTM_GETADDR, NLM_F_DUMP);
  auto* ifa = req.put_header<ifaddrmsg>();
  ifa->ifa_family = AF_UNSPEC;  // both families
  std::vector<LinkAddress> addrs;
  int r = dump(req, [&] { addrs.clear(); }, [&](const nlmsghdr* h) {
    LinkAddress a;
    int p = parse_address(h, a);
    if (p == 1) addrs.push_back(std::move(a));
    return p < 0 ? p : 0;
  });
  if (r < 0) return r;
  std::vector<LinkInfo> links;
  if (r = list_links(links); r < 0) return r;
  std::unordered_map<int, const LinkInfo*> by_index;
  for (const auto& l : links) by_index[l.ifindex] = &l;
  for (auto& a : addrs) {
    auto it = by_index.find(a.ifindex);
    if (it == by_index.end()) continue;  // the link went away between the dumps
    a.ifname = it->second->name;
    a.link_flags = it->second->flags;
  }
  out = std::move(addrs);
  return 0;
}

bool gatherable(const LinkAddress& a, int exclude_ifindex) {
  if (exclude_ifindex > 0 && a.ifindex == exclude_ifindex) return false;
  // IFF_RUNNING is the operational state: a link that is up but has no carrier (cable out,
  // veth peer down) cannot reach anyone.
  constexpr uint32_t kNeed = IFF_UP | IFF_RUNNING;
  if ((a.link_flags & kNeed) != kNeed || (a.link_flags & IFF_LOOPBACK)) return false;
  if (a.scope == RT_SCOPE_HOST || a.scope == RT_SCOPE_NOWHERE) return false;
  const auto& b = a.address.bytes;
  if (a.address.family == 4) {
    if (b[0] == 0 || b[0] == 127) return false;    // "this network", loopback
    if (b[0] >= 224) return false;                 // multicast, reserved, broadcast
    if (b[0] == 169 && b[1] == 254) return false;  // link-local (RFC 3927)
    return true;
  }
  if (a.address.family == 6) {
    static constexpr uint8_t kZero[15] = {};
    if (std::memcmp(b.data(), kZero, 15) == 0 && b[15] <= 1) return false;  // ::, ::1
    if (b[0] == 0xff) return false;                                         // multicast
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return false;                // fe80::/10
    // Not yet (tentative), never (DAD failed) or no longer (deprecated) to be used as a source.
    if (a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED | IFA_F_DEPRECATED)) return false;
    return true;
  }
  return false;
}

// ---- NetlinkMonitor ----

NetlinkMonitor::~NetlinkMonitor() { close(); }

NetlinkMonitor::NetlinkMonitor(NetlinkMonitor&& o) noexcept
    : nl_(std::exchange(o.nl_, nullptr)),
      routes_(o.routes_),
      overruns_(o.overruns_),
      buf_(std::move(o.buf_)) {}

NetlinkMonitor& NetlinkMonitor::operator=(NetlinkMonitor&& o) noexcept {
  if (this != &o) {
    close();
    nl_ = std::exchange(o.nl_, nullptr);
    routes_ = o.routes_;
    overruns_ = o.overruns_;
    buf_ = std::move(o.buf_);
  }
  return *this;
}

int NetlinkMonitor::open(bool watch_routes) {
  close();
  unsigned groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
  if (watch_routes) groups |= RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
  mnl_socket* nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (!nl) return -errno;
  if (mnl_socket_bind(nl, groups, MNL_SOCKET_AUTOPID) < 0) {
    const int err = -errno;
    mnl_socket_close(nl);
    return err;
  }
  nl_ = nl;
  routes_ = watch_routes;
  overruns_ = 0;
  buf_.assign(kMonitorBufSize, 0);
  return 0;
}

void NetlinkMonitor::close() {
  if (nl_) mnl_socket_close(nl_);
  nl_ = nullptr;
}

int NetlinkMonitor::fd() const { return nl_ ? mnl_socket_get_fd(nl_) : -1; }

bool NetlinkMonitor::drain_changed() {
  if (!nl_) return false;
  bool changed = false;
  for (int i = 0; i < kMaxDrain; ++i) {
    const Datagram d = recv_datagram(fd(), buf_, MSG_DONTWAIT);
    if (d.err == -EAGAIN) return changed;
    if (d.err == -EINTR) continue;
    if (d.err == -ENOBUFS) {
      // The receive queue overflowed and notifications were lost: the caller's view may be
      // stale in ways we cannot know, so it must list again.
      ++overruns_;
      changed = true;
      continue;
    }
    if (d.err != 0) return changed;  // nothing else is expected from a netlink socket
    if (d.sender != 0) continue;     // not the kernel: a forged notification, ignored
    if (d.truncated) {
      changed = true;  // unreadable, so assume the worst
      continue;
    }
    int len = d.len;
    auto* h = reinterpret_cast<const nlmsghdr*>(buf_.data());
    for (; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
      switch (h->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_DELLINK:
        case RTM_NEWADDR:
        case RTM_DELADDR:
          changed = true;
          break;
        case RTM_NEWROUTE:
        case RTM_DELROUTE:
          if (routes_) changed = true;
          break;
        default:
          break;
      }
    }
    if (len > 0) changed = true;  // a malformed tail: do not guess what it said
  }
  return true;  // more may be pending; the fd stays readable
}

}  // namespace meshwg::tun
