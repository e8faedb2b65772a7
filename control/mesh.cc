// Mesh mode's set-up and endpoint gathering (see mesh.h; DESIGN.md "Traversal"; STUN per
// RFC 8489 §6.2.1 retransmission; WG-STUN addresses as control/wgstun_server.h reserves them).
#include "control/mesh.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "control/resolve.h"
#include "control/stun_server.h"
#include "control/wgstun_server.h"
#include "tun/netlink.h"

namespace meshwg::control {

namespace {

using namespace std::chrono_literals;

// How long a reflexive or mapped candidate survives failed refreshes: a little over two NAT
// UDP timeouts' worth of probe rounds.
constexpr auto kCandidateStale = 120s;
// After an rtnetlink burst (an interface coming up brings several messages), wait this long
// so one gathering covers the whole change.
constexpr auto kChangeSettle = 200ms;
constexpr auto kProbeRetryAfterFailure = 5s;
constexpr size_t kMaxDatagramsPerWake = 64;
constexpr size_t kMaxStatusClientsPerWake = 16;

dataplane::Endpoint make_endpoint(const dataplane::IpAddress& a, uint16_t port) {
  dataplane::Endpoint e;
  if (a.family == 4) {
    e.addr.in4.sin_family = AF_INET;
    std::memcpy(&e.addr.in4.sin_addr, a.bytes.data(), 4);
    e.addr.in4.sin_port = htons(port);
  } else if (a.family == 6) {
    e.addr.in6.sin6_family = AF_INET6;
    std::memcpy(&e.addr.in6.sin6_addr, a.bytes.data(), 16);
    e.addr.in6.sin6_port = htons(port);
  }
  return e;
}

int udp_socket(int family, uint16_t port, std::string& err) {
  const int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  if (family == AF_INET6) {
    const int off = 0;  // one dual-stack check socket, like the WireGuard socket
    (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
  }
  sockaddr_in6 any6{};
  any6.sin6_family = AF_INET6;
  any6.sin6_port = htons(port);
  sockaddr_in any4{};
  any4.sin_family = AF_INET;
  any4.sin_port = htons(port);
  const int rc = family == AF_INET6
                     ? ::bind(fd, reinterpret_cast<sockaddr*>(&any6), sizeof(any6))
                     : ::bind(fd, reinterpret_cast<sockaddr*>(&any4), sizeof(any4));
  if (rc != 0) {
    err = std::string("bind: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

uint16_t local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  return dataplane::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len).port();
}

// An IPv4 server reached from a dual-stack IPv6 socket is written as ::ffff:a.b.c.d.
dataplane::Endpoint for_socket(const dataplane::Endpoint& e, int family) {
  if (family != AF_INET6 || e.addr.sa.sa_family != AF_INET) return e;
  dataplane::IpAddress m;
  m.family = 6;
  m.bytes[10] = m.bytes[11] = 0xff;
  std::memcpy(&m.bytes[12], &e.addr.in4.sin_addr, 4);
  return make_endpoint(m, e.port());
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

bool exists_ok(int rc) { return rc >= 0 || rc == -EEXIST; }

}  // namespace

const char* candidate_kind_name(CandidateKind k) {
  switch (k) {
    case CandidateKind::kLocal: return "local";
    case CandidateKind::kWgStun: return "wg-stun";
    case CandidateKind::kStun: return "stun";
    case CandidateKind::kUpnp: return "upnp";
    case CandidateKind::kNatPmp: return "nat-pmp";
  }
  return "?";
}

MeshControl::MeshControl(const MeshConfig& cfg, WgDriver& driver, MeshOptions opts)
    : cfg_(cfg), driver_(driver), opts_(std::move(opts)) {}

MeshControl::~MeshControl() { stop(); }

bool MeshControl::setup(std::string& err) {
  ifindex_ = tun::link_index(opts_.ifname);
  if (ifindex_ <= 0) {
    err = opts_.ifname + ": " + tun::netlink_strerror(ifindex_);
    return false;
  }
  const InterfaceConfig& ic = cfg_.interface;
  if (ic.mtu) {
    if (int rc = tun::set_link_mtu(ifindex_, *ic.mtu); rc < 0) {
      err = "MTU " + std::to_string(*ic.mtu) + ": " + tun::netlink_strerror(rc);
      return false;
    }
  }
  for (const InterfaceAddress& a : ic.addresses) {
    if (int rc = tun::add_address(ifindex_, dataplane::IpPrefix{a.addr, a.cidr}); !exists_ok(rc)) {
      err = "Address " + a.str() + ": " + tun::netlink_strerror(rc);
      return false;
    }
  }
  if (int rc = tun::set_link_up(ifindex_, true); rc < 0) {
    err = "bringing " + opts_.ifname + " up: " + tun::netlink_strerror(rc);
    return false;
  }

  SetRequest set;
  set.private_key = ic.private_key;
  if (ic.listen_port) set.listen_port = *ic.listen_port;
  if (ic.fwmark) set.fwmark = *ic.fwmark;
  set.replace_peers = true;
  std::vector<dataplane::IpPrefix> routes;
  for (const PeerConfig& pc : cfg_.peers) {
    PeerChange ch;
    ch.public_key = pc.public_key;
    ch.preshared_key = pc.preshared_key;
    ch.persistent_keepalive = pc.persistent_keepalive;
    ch.replace_allowed_ips = true;
    for (const auto& p : pc.allowed_ips) {
      ch.allowed_ips.push_back({p, false});
      routes.push_back(p);
    }
    if (pc.endpoint) {
      std::string rerr;
      const auto addrs = resolve(*pc.endpoint, rerr);
      if (addrs.empty())
        spdlog::warn("peer on line {}: Endpoint {}: {}; it waits for traversal", pc.line,
                     pc.endpoint->str(), rerr);
      else
        ch.endpoint = addrs.front();
    }
    set.peers.push_back(std::move(ch));
  }
  if (cfg_.wgstun) {
    const ServiceConfig& ws = *cfg_.wgstun;
    for (const PeerConfig& pc : cfg_.peers)
      if (pc.public_key == ws.public_key) {
        err = "[WGStun] on line " + std::to_string(ws.line) + " has the key of the [Peer] on line " +
              std::to_string(pc.line);
        return false;
      }
    std::string rerr;
    const auto addrs = resolve(ws.endpoint, rerr);
    if (addrs.empty()) {
      err = "[WGStun] Endpoint " + ws.endpoint.str() + ": " + rerr;
      return false;
    }
    PeerChange ch;
    ch.public_key = ws.public_key;
    ch.endpoint = addrs.front();
    // Keeps the WireGuard socket's NAT mapping (the candidate it reports) alive.
    ch.persistent_keepalive = 25;
    ch.replace_allowed_ips = true;
    const dataplane::IpPrefix v4{dataplane::IpAddress::v4(kWgStunAddress4.data()), 32};
    const dataplane::IpPrefix v6{dataplane::IpAddress::v6(kWgStunAddress6.data()), 128};
    ch.allowed_ips = {{v4, false}, {v6, false}};
    routes.push_back(v4);
    routes.push_back(v6);
    set.peers.push_back(std::move(ch));
  }
  if (int e = driver_.set(set); e != 0) {
    err = std::string("configuring the device: ") + std::strerror(e);
    return false;
  }
  for (const auto& r : routes) {
    // The default route stays the user's business (wg-quick's policy routing, Table=).
    if (r.cidr == 0) {
      spdlog::warn("not routing {} into {}: add that route yourself", r.str(), opts_.ifname);
      continue;
    }
    if (int rc = tun::add_route(ifindex_, r); !exists_ok(rc))
      spdlog::warn("route {} dev {}: {}", r.str(), opts_.ifname, tun::netlink_strerror(rc));
  }
  const auto snap = driver_.get();
  if (!snap) {
    err = "the device did not answer a get";
    return false;
  }
  listen_port_ = snap->listen_port;
  return true;
}

bool MeshControl::start(std::string& err) {
  if (started_) return true;
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  check_fd_ = udp_socket(AF_INET6, 0, err);
  if (check_fd_ < 0) check_fd_ = udp_socket(AF_INET, 0, err);  // IPv6 disabled
  if (stop_fd_ < 0 || check_fd_ < 0) {
    err = "check socket: " + err;
    return false;
  }
  check_port_ = local_port(check_fd_);
  if (cfg_.wgstun) {
    // The tunnel's own address family decides which reserved address the probe goes to:
    // the kernel then picks that tunnel address as the source.
    bool v4 = cfg_.interface.addresses.empty();
    for (const auto& a : cfg_.interface.addresses) v4 = v4 || a.addr.family == 4;
    probe_fd_ = udp_socket(v4 ? AF_INET : AF_INET6, 0, err);
    if (probe_fd_ < 0) {
      err = "WG-STUN probe socket: " + err;
      return false;
    }
    Probe p;
    p.kind = CandidateKind::kWgStun;
    p.fd = probe_fd_;
    p.server = v4 ? make_endpoint(dataplane::IpAddress::v4(kWgStunAddress4.data()), kWgStunPort)
                  : make_endpoint(dataplane::IpAddress::v6(kWgStunAddress6.data()), kWgStunPort);
    probes_.push_back(p);
    for (const HostPort& hp : cfg_.wgstun->stun) {
      std::string rerr;
      const auto addrs = resolve(hp, rerr);
      if (addrs.empty()) {
        spdlog::warn("[WGStun] Stun {}: {}", hp.str(), rerr);
        continue;
      }
      Probe s;
      s.kind = CandidateKind::kStun;
      s.fd = check_fd_;
      s.server = addrs.front();
      probes_.push_back(s);
    }
  }
  if (int rc = monitor_.open(); rc < 0)
    spdlog::warn("rtnetlink monitor: {}; candidates refresh every {} s only",
                 tun::netlink_strerror(rc), opts_.gather_interval.count());
  if (!opts_.status_socket.empty()) {
    status_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (status_fd_ < 0 || opts_.status_socket.size() >= sizeof(sa.sun_path)) {
      err = "status socket " + opts_.status_socket + ": cannot create";
      return false;
    }
    std::memcpy(sa.sun_path, opts_.status_socket.data(), opts_.status_socket.size());
    ::unlink(opts_.status_socket.c_str());  // a stale one: the UAPI socket check ran first
    if (::bind(status_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
        ::chmod(opts_.status_socket.c_str(), 0600) != 0 || ::listen(status_fd_, 16) != 0) {
      err = "status socket " + opts_.status_socket + ": " + std::strerror(errno);
      return false;
    }
  }
  gather_local();
  publish();
  started_ = true;
  thread_ = std::thread(&MeshControl::run, this);
  return true;
}

void MeshControl::stop() {
  if (!started_) return;
  started_ = false;
  const uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  if (portmap_job_.valid()) portmap_job_.wait();
  for (const PortMapping& m : portmaps_) unmap_udp_port(m, opts_.portmap_options);
  portmaps_.clear();
  monitor_.close();
  close_fd(probe_fd_);
  close_fd(check_fd_);
  close_fd(stop_fd_);
  if (status_fd_ >= 0) {
    close_fd(status_fd_);
    ::unlink(opts_.status_socket.c_str());
  }
}

std::vector<Candidate> MeshControl::candidates() const {
  std::lock_guard lk(mu_);
  return candidates_;
}

nlohmann::json MeshControl::status_json() const {
  const auto now = Clock::now();
  nlohmann::json j;
  j["check_port"] = check_port_;
  j["candidates"] = nlohmann::json::array();
  for (const Candidate& c : candidates()) {
    const auto age = std::chrono::duration_cast<std::chrono::seconds>(now - c.confirmed).count();
    j["candidates"].push_back({{"kind", candidate_kind_name(c.kind)},
                               {"address", unmap_v4_endpoint(c.address).str()},
                               {"age_s", std::max<int64_t>(age, 0)}});
  }
  return j;
}

void MeshControl::gather_local() {
  std::vector<tun::LinkAddress> addrs;
  if (int rc = tun::list_addresses(addrs); rc < 0) {
    spdlog::warn("listing addresses: {}", tun::netlink_strerror(rc));
    return;  // keep what we had
  }
  const auto now = Clock::now();
  const uint16_t port = listen_port_;
  std::vector<Candidate> fresh;
  for (const auto& a : addrs)
    if (tun::gatherable(a, ifindex_) && port != 0)
      fresh.push_back({CandidateKind::kLocal, make_endpoint(a.address, port), now});
  local_ = std::move(fresh);
}

void MeshControl::start_portmap(Clock::time_point now) {
  next_portmap_ = now + opts_.portmap_interval;
  if (!opts_.portmap || portmap_job_.valid() || listen_port_ == 0) return;
  const uint16_t port = listen_port_;
  const PortMapOptions o = opts_.portmap_options;
  portmap_job_ = std::async(std::launch::async, [port, o] { return map_udp_port(port, o); });
}

void MeshControl::finish_portmap() {
  if (!portmap_job_.valid() ||
      portmap_job_.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
    return;
  auto got = portmap_job_.get();
  if (!got.empty() || Clock::now() - portmaps_at_ > kCandidateStale) {
    portmaps_ = std::move(got);
    portmaps_at_ = Clock::now();
  }
  for (const auto& m : portmaps_)
    spdlog::info("{} gateway maps {} to UDP port {}", portmap_kind_name(m.kind), m.external.str(),
                 m.internal_port);
  publish();
}

void MeshControl::publish() {
  std::vector<Candidate> all = local_;
  auto add = [&](CandidateKind k, const dataplane::Endpoint& e, Clock::time_point at) {
    for (Candidate& c : all)
      if (c.kind == k && c.address.same_remote(e)) {
        c.confirmed = std::max(c.confirmed, at);
        return;  // several STUN servers agreeing give one candidate
      }
    all.push_back({k, e, at});
  };
  for (const Probe& p : probes_)
    if (p.mapped) add(p.kind, unmap_v4_endpoint(*p.mapped), p.mapped_at);
  for (const PortMapping& m : portmaps_)
    add(m.kind == PortMapKind::kUpnp ? CandidateKind::kUpnp : CandidateKind::kNatPmp, m.external,
        portmaps_at_);
  std::lock_guard lk(mu_);
  if (all.size() != candidates_.size() ||
      !std::equal(all.begin(), all.end(), candidates_.begin(),
                  [](const Candidate& a, const Candidate& b) {
                    return a.kind == b.kind && a.address.same_remote(b.address);
                  })) {
    std::string list;
    for (const auto& c : all)
      list += std::string(list.empty() ? "" : ", ") + candidate_kind_name(c.kind) + " " +
              unmap_v4_endpoint(c.address).str();
    spdlog::info("candidates: {}", list.empty() ? "(none)" : list);
  }
  candidates_ = std::move(all);
}

// One binding transaction per probe at a time, retransmitted on RFC 8489's schedule; a
// success or a give-up schedules the next round.
void MeshControl::step_probe(Probe& p, Clock::time_point now) {
  const StunRetransmit& rt = opts_.stun_retransmit;
  if (!p.active) {
    if (now < p.next_round) return;
    p.active = true;
    p.sent = 0;
    p.started = now;
    p.txid = stun_new_txid();
  }
  if (now - p.started >= stun_give_up_offset(rt)) {
    p.active = false;
    p.next_round = now + kProbeRetryAfterFailure;
    if (p.mapped && now - p.mapped_at > kCandidateStale) {
      spdlog::info("{} server {} stopped answering: dropping its mapping",
                   candidate_kind_name(p.kind), p.server.str());
      p.mapped.reset();
      publish();
    }
    return;
  }
  while (p.sent < rt.rc && now - p.started >= stun_send_offset(rt, p.sent)) {
    StunEncodeOptions eo;
    eo.software = "meshwg";
    const auto req = stun_encode_binding_request(p.txid, eo);
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = AF_INET;
    {
      socklen_t fl = sizeof(ss);
      if (::getsockname(p.fd, reinterpret_cast<sockaddr*>(&ss), &fl) == 0) family = ss.ss_family;
    }
    const dataplane::Endpoint to = for_socket(p.server, family);
    len = to.socklen();
    if (::sendto(p.fd, req.data(), req.size(), 0, &to.addr.sa, len) < 0)
      spdlog::debug("STUN to {}: {}", p.server.str(), std::strerror(errno));
    ++p.sent;
  }
}

void MeshControl::on_datagram(int fd) {
  uint8_t buf[2048];
  for (size_t i = 0; i < kMaxDatagramsPerWake; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    const ssize_t n = ::recvfrom(fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&ss), &len);
    if (n < 0) return;
    const dataplane::Endpoint from =
        unmap_v4_endpoint(dataplane::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len));
    StunDecodeFailure fail;
    const auto m = stun_decode({buf, size_t(n)}, fail);
    if (!m || m->cls != StunClass::kSuccess) continue;  // not ours to answer
    for (Probe& p : probes_) {
      if (p.fd != fd || !p.active || m->txid != p.txid || !from.same_remote(p.server)) continue;
      const auto& mapped = m->xor_mapped ? m->xor_mapped : m->mapped;
      if (!mapped) break;
      p.active = false;
      p.next_round = Clock::now() + opts_.probe_interval;
      p.mapped = *mapped;
      p.mapped_at = Clock::now();
      publish();
      break;
    }
  }
}

void MeshControl::serve_status() {
  for (size_t i = 0; i < kMaxStatusClientsPerWake; ++i) {
    const int c = ::accept4(status_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    // A client gets the whole document or nothing; a stuck one costs at most a second.
    const timeval tv{1, 0};
    (void)::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    const std::string doc = status_json().dump() + "\n";
    for (size_t off = 0; off < doc.size();) {
      const ssize_t n = ::send(c, doc.data() + off, doc.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += size_t(n);
    }
    ::close(c);
  }
}

MeshControl::Clock::time_point MeshControl::next_deadline(Clock::time_point now) const {
  auto t = std::min(next_gather_, now + 1s);  // also the cadence of finish_portmap()
  if (changed_) t = std::min(t, changed_at_ + kChangeSettle);
  for (const Probe& p : probes_) {
    if (!p.active) {
      t = std::min(t, p.next_round);
    } else {
      const auto& rt = opts_.stun_retransmit;
      t = std::min(t, p.started + (p.sent < rt.rc ? stun_send_offset(rt, p.sent)
                                                  : stun_give_up_offset(rt)));
    }
  }
  return std::max(t, now);
}

void MeshControl::run() {
  pthread_setname_np(pthread_self(), "meshwg-control");
  auto now = Clock::now();
  next_gather_ = now + opts_.gather_interval;
  start_portmap(now);
  for (;;) {
    now = Clock::now();
    for (Probe& p : probes_) step_probe(p, now);
    if (changed_ && now - changed_at_ >= kChangeSettle) {
      changed_ = false;
      gather_local();
      // A new network may mean a new NAT: ask again now rather than at the next round.
      for (Probe& p : probes_)
        if (!p.active) p.next_round = now;
      start_portmap(now);
      publish();
      continue;
    }
    if (now >= next_gather_) {
      next_gather_ = now + opts_.gather_interval;
      gather_local();
      publish();
    }
    if (now >= next_portmap_) start_portmap(now);
    finish_portmap();

    pollfd fds[5];
    nfds_t n = 0;
    fds[n++] = {stop_fd_, POLLIN, 0};
    fds[n++] = {check_fd_, POLLIN, 0};
    const nfds_t probe_i = probe_fd_ >= 0 ? n : 0;
    if (probe_fd_ >= 0) fds[n++] = {probe_fd_, POLLIN, 0};
    const nfds_t mon_i = monitor_.fd() >= 0 ? n : 0;
    if (monitor_.fd() >= 0) fds[n++] = {monitor_.fd(), POLLIN, 0};
    const nfds_t status_i = status_fd_ >= 0 ? n : 0;
    if (status_fd_ >= 0) fds[n++] = {status_fd_, POLLIN, 0};
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        next_deadline(now) - now);
    const int rc = ::poll(fds, n, int(std::clamp<int64_t>(wait.count() + 1, 0, 1000)));
    if (rc < 0 && errno != EINTR) {
      spdlog::error("control thread: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[0].revents) return;  // stop()
    if (fds[1].revents & POLLIN) on_datagram(check_fd_);
    if (probe_i && (fds[probe_i].revents & POLLIN)) on_datagram(probe_fd_);
    if (mon_i && (fds[mon_i].revents & POLLIN) && monitor_.drain_changed()) {
      if (!changed_) changed_at_ = Clock::now();
      changed_ = true;
    }
    if (status_i && (fds[status_i].revents & POLLIN)) serve_status();
  }
}

}  // namespace meshwg::control
