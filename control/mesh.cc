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
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "control/resolve.h"
#include "control/status.h"
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

// A non-blocking UDP socket bound to `at` (port 0: the kernel picks one).
int udp_socket(const dataplane::Endpoint& at, std::string& err) {
  const int fd = ::socket(at.addr.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  make_dual_stack(fd, at.addr.sa.sa_family);  // one check socket for both, like WireGuard's
  if (::bind(fd, &at.addr.sa, at.socklen()) != 0) {
    err = "bind " + at.str() + ": " + std::strerror(errno);
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
  return dataplane::Endpoint::from_ip(m, e.port());
}

dataplane::Endpoint loopback_endpoint(uint16_t port) {
  static constexpr uint8_t kLo[4] = {127, 0, 0, 1};
  return dataplane::Endpoint::from_ip(dataplane::IpAddress::v4(kLo), port);
}

dataplane::Endpoint any_endpoint(int family) {
  dataplane::IpAddress any;
  any.family = family == AF_INET6 ? 6 : 4;
  return dataplane::Endpoint::from_ip(any, 0);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

bool exists_ok(int rc) { return rc >= 0 || rc == -EEXIST; }

}  // namespace

CheckKeyId check_key_id(const crypto::PublicKey& key) {
  uint8_t h[crypto::kHashSize];
  crypto::blake2s(h, key);
  CheckKeyId id;
  std::memcpy(id.data(), h, id.size());
  return id;
}

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
    if (!pc.endpoint && cfg_.relay) {
      RelayedPeer rp;
      rp.key = pc.public_key;
      rp.keepalive = pc.persistent_keepalive;
      for (const auto& a : pc.allowed_ips)
        if (a.cidr == (a.addr.family == 4 ? 32 : 128)) {
          rp.tunnel_ip = a.addr;
          break;
        }
      std::string serr;
      rp.fd = udp_socket(loopback_endpoint(0), serr);  // the peer's WireGuard endpoint
      if (rp.fd < 0) {
        err = "relay socket for the peer on line " + std::to_string(pc.line) + ": " + serr;
        return false;
      }
      rp.port = local_port(rp.fd);
      ch.endpoint = loopback_endpoint(rp.port);
      relayed_.push_back(std::move(rp));
    } else if (!pc.endpoint) {
      spdlog::warn("peer on line {} has no Endpoint and there is no [Relay]: unreachable until "
                   "it contacts us",
                   pc.line);
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
  check_fd_ = udp_socket(any_endpoint(AF_INET6), err);
  if (check_fd_ < 0) {
    check_fd_ = udp_socket(any_endpoint(AF_INET), err);  // IPv6 disabled
    check_family_ = AF_INET;
  }
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
    probe_fd_ = udp_socket(any_endpoint(v4 ? AF_INET : AF_INET6), err);
    if (probe_fd_ < 0) {
      err = "WG-STUN probe socket: " + err;
      return false;
    }
    Probe p;
    p.kind = CandidateKind::kWgStun;
    p.fd = probe_fd_;
    p.server = v4 ? dataplane::Endpoint::from_ip(dataplane::IpAddress::v4(kWgStunAddress4.data()), kWgStunPort)
                  : dataplane::Endpoint::from_ip(dataplane::IpAddress::v6(kWgStunAddress6.data()), kWgStunPort);
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
  if (cfg_.relay) {
    std::string rerr;
    const auto addrs = resolve(cfg_.relay->endpoint, rerr);
    if (addrs.empty()) {
      err = "[Relay] Endpoint " + cfg_.relay->endpoint.str() + ": " + rerr;
      return false;
    }
    crypto::PublicKey& me = me_;
    if (!crypto::x25519_public(me, cfg_.interface.private_key.span())) {
      err = "the private key has no usable public key";
      return false;
    }
    my_check_id_ = check_key_id(me);
    relay_ = std::make_unique<RelayClient>(cfg_.interface.private_key, me,
                                           cfg_.relay->public_key, addrs.front());
    relay_->on_receive = [this](const crypto::PublicKey& src, std::span<const uint8_t> p) {
      on_relay_payload(src, p);
    };
    relay_->on_state = [this](bool up) {
      relay_up_ = up;
      announce_ = announce_ || up;
      hello_ = hello_ || up;  // the relay forgets nothing we need, but peers may have
    };
    for (RelayedPeer& p : relayed_) {
      p.channel = SealedChannel::create(cfg_.interface.private_key, me, p.key);
      p.check_channel = SealedChannel::create(cfg_.interface.private_key, me, p.key,
                                              SealedTransport::kCheckSocket);
      if (!p.channel || !p.check_channel) {
        spdlog::warn("a [Peer] without Endpoint has our own or a low-order key: it gets no "
                     "sealed channel");
        continue;
      }
      p.check_id = check_key_id(p.key);
      // Like ICE's tie-breaker, but fixed: the lower key proposes, so both never do.
      p.path.emplace(std::memcmp(me.data(), p.key.data(), me.size()) < 0);
      if (!p.tunnel_ip)
        spdlog::warn("the [Peer] with no Endpoint has no /32 or /128 in AllowedIPs: direct "
                     "paths to it are watched by its keepalives only");
    }
    // A restarted node starts a new series, above what its peers saw before.
    generation_ = uint32_t(std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count());
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
  // Also after a failed setup() or start(): whatever was opened is closed.
  if (started_) {
    started_ = false;
    const uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof(one));
    if (thread_.joinable()) thread_.join();
  }
  if (portmap_job_.valid()) portmap_job_.wait();
  for (const PortMapping& m : portmaps_) unmap_udp_port(m, opts_.portmap_options);
  portmaps_.clear();
  monitor_.close();
  relay_.reset();
  relay_up_ = false;
  for (RelayedPeer& p : relayed_) close_fd(p.fd);
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
  j["relay"] = cfg_.relay ? nlohmann::json(relay_up_ ? "up" : "down") : nlohmann::json(nullptr);
  j["peers"] = nlohmann::json::array();
  {
    std::lock_guard lk(mu_);
    for (const PeerView& v : views_) {
      nlohmann::json cs = nlohmann::json::array();
      for (const auto& c : v.candidates)
        cs.push_back({{"kind", peer_candidate_kind_name(c.kind)}, {"address", c.address.str()}});
      nlohmann::json bans = nlohmann::json::array();
      for (const PathBan& b : v.bans) {
        const auto ttl = std::chrono::duration_cast<std::chrono::seconds>(b.until - now).count();
        bans.push_back({{"pair", b.mine.str() + ">" + b.yours.str()},
                        {"ttl_s", std::max<int64_t>(ttl, 0)},
                        {"failures", b.failures}});
      }
      j["peers"].push_back({{"public_key", key_to_base64(v.key)},
                            {"candidates", cs},
                            {"state", path_state_name(v.state)},
                            {"rtt_ms", v.rtt_ms ? nlohmann::json(*v.rtt_ms) : nlohmann::json()},
                            {"upgrades", v.upgrades},
                            {"fallbacks", v.fallbacks},
                            {"bans", bans}});
    }
  }
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
      fresh.push_back({CandidateKind::kLocal, dataplane::Endpoint::from_ip(a.address, port), now});
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
  {
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
      announce_ = true;
    }
    candidates_ = std::move(all);
  }
  const auto mine = announced();
  for (RelayedPeer& p : relayed_)
    if (p.path) p.path->set_local(mine);
}

std::vector<PeerCandidate> MeshControl::announced() const {
  std::vector<PeerCandidate> out;
  const auto all = candidates();
  auto add = [&](PeerCandidateKind k, const dataplane::Endpoint& e, bool wg) {
    if (out.size() >= kPeerMaxCandidates) return;
    PeerCandidate pc;
    pc.kind = k;
    pc.address = unmap_v4_endpoint(e);
    pc.for_wireguard = wg;
    out.push_back(pc);
  };
  for (const Candidate& c : all) {
    switch (c.kind) {
      case CandidateKind::kLocal: add(PeerCandidateKind::kLocal, c.address, true); break;
      case CandidateKind::kWgStun: add(PeerCandidateKind::kWgStun, c.address, true); break;
      case CandidateKind::kStun: add(PeerCandidateKind::kStun, c.address, false); break;
      case CandidateKind::kUpnp: add(PeerCandidateKind::kUpnp, c.address, true); break;
      case CandidateKind::kNatPmp: add(PeerCandidateKind::kNatPmp, c.address, true); break;
    }
  }
  // The check socket listens on every address too: its LAN candidates are the WireGuard
  // socket's with the check port.
  for (const Candidate& c : all)
    if (c.kind == CandidateKind::kLocal && check_port_ != 0)
      add(PeerCandidateKind::kLocal, dataplane::Endpoint::from_ip(c.address.ip(), check_port_), false);
  return out;
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
    if (fd == check_fd_ && size_t(n) >= kCheckHeaderSize &&
        std::memcmp(buf, kCheckMagic, sizeof(kCheckMagic)) == 0) {
      on_check_datagram(from, {buf, size_t(n)});
      continue;
    }
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

// The device sent WireGuard messages to a relayed peer's loopback endpoint. They are queued
// as they are read and written to the relay's TCP connection together after the batch: one
// send for a burst instead of one per packet.
void MeshControl::on_relayed_datagram(RelayedPeer& p) {
  uint8_t buf[1 + 65536];
  buf[0] = kRelayTagWireGuard;
  bool queued = false;
  for (size_t i = 0; i < kMaxDatagramsPerWake; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    const ssize_t n =
        ::recvfrom(p.fd, buf + 1, sizeof(buf) - 1, 0, reinterpret_cast<sockaddr*>(&ss), &len);
    if (n < 0) break;
    // Only the device's own socket may use this path: anything else on the host that finds
    // the port is ignored.
    const auto from = dataplane::Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    if (from.port() != listen_port_.load() || n == 0) {
      ++p.dropped;
      continue;
    }
    if (n == ssize_t(dataplane::kInitiationSize) && buf[1] == 1) {
      // A handshake initiation sent before the peer reached the relay is lost there, and
      // the device retries only after REKEY_TIMEOUT: kept, to be sent again when the peer
      // says hello.
      p.last_initiation.assign(buf, buf + 1 + n);
      p.last_initiation_at = Clock::now();
    }
    if (relay_ && relay_->queue_send(p.key, {buf, size_t(n) + 1})) {
      ++p.to_relay;
      queued = true;
    } else {
      ++p.dropped;
    }
  }
  if (queued) (void)relay_->flush();  // a failure is the relay client's: it reconnects
}

void MeshControl::on_relay_payload(const crypto::PublicKey& src, std::span<const uint8_t> payload) {
  // The relay forwards whatever any client addresses to us: only peers we relay for count.
  const auto it = std::find_if(relayed_.begin(), relayed_.end(),
                               [&](const RelayedPeer& p) { return p.key == src; });
  if (payload.empty() || it == relayed_.end()) return;
  RelayedPeer& p = *it;
  if (payload[0] == kRelayTagWireGuard) {
    if (p.path && !p.path->accepts_relayed_wireguard()) {
      // The device would take the loopback socket for the peer's new address and leave
      // the direct path; the peer is switching too, so this is a straggler.
      ++p.relayed_while_direct;
      return;
    }
    const dataplane::Endpoint to = loopback_endpoint(listen_port_.load());
    if (::sendto(p.fd, payload.data() + 1, payload.size() - 1, 0, &to.addr.sa, to.socklen()) < 0)
      ++p.dropped;
    else
      ++p.from_relay;
  } else if (payload[0] == kRelayTagSealed) {
    on_peer_message(p, payload.subspan(1));
  }
}

void MeshControl::on_peer_message(RelayedPeer& p, std::span<const uint8_t> box) {
  if (!p.channel) return;
  SealedError why = SealedError::kOk;
  auto plain = p.channel->open(box, &why);
  if (!plain) {
    spdlog::debug("sealed message rejected: {}", sealed_error_name(why));
    return;
  }
  PeerMessageError merr = PeerMessageError::kOk;
  const auto m = peer_message_decode(*plain, merr);
  sodium_memzero(plain->data(), plain->size());
  if (!m) {
    spdlog::debug("peer message rejected: {}", peer_message_error_name(merr));
    return;
  }
  if (const auto* c = std::get_if<PeerCandidates>(&*m)) {
    // Boxes arrive in order and never twice (the channel's counter), so the newest list wins.
    p.remote = c->candidates;
    if (p.path) p.path->set_remote(p.remote, Clock::now());
    std::string list;
    for (const auto& rc : p.remote)
      list += std::string(list.empty() ? "" : ", ") + peer_candidate_kind_name(rc.kind) + " " +
              rc.address.str();
    spdlog::info("peer candidates (generation {}): {}", c->generation, list.empty() ? "(none)" : list);
    // A peer that sends its list without a hello already has ours (see PeerHello).
  } else if (std::holds_alternative<PeerHello>(*m)) {
    p.owe_list = true;  // it (re)joined and has not heard ours
    if (!p.last_initiation.empty() && Clock::now() - p.last_initiation_at < dataplane::kRekeyTimeout &&
        p.path && p.path->accepts_relayed_wireguard() && relay_)
      (void)relay_->send(p.key, p.last_initiation);
  } else {
    if (std::holds_alternative<PeerBye>(*m)) p.remote.clear();
    if (!p.path) return;
    PathActions out;
    p.path->on_relay_message(*m, Clock::now(), out);
    if (std::holds_alternative<PeerBye>(*m)) p.path->set_remote(p.remote, Clock::now());
    apply(p, out);
  }
}

void MeshControl::send_candidates() {
  if (!relay_ || !relay_->up()) return;
  PeerCandidates msg;
  msg.generation = ++generation_;
  msg.candidates = announced();
  for (RelayedPeer& p : relayed_) {
    if (!p.channel || !(announce_ || p.owe_list)) continue;
    // After (re)connecting to the relay: ask each peer for its list too.
    if (hello_) send_sealed(p, PeerHello{});
    send_sealed(p, msg);
    p.owe_list = false;
  }
  announce_ = false;
  hello_ = false;
}

void MeshControl::on_check_datagram(const dataplane::Endpoint& from,
                                     std::span<const uint8_t> d) {
  CheckKeyId id;
  std::memcpy(id.data(), d.data() + sizeof(kCheckMagic), id.size());
  for (RelayedPeer& p : relayed_) {
    if (p.check_id != id || !p.path) continue;
    SealedError why = SealedError::kOk;
    auto plain = p.check_channel->open(d.subspan(kCheckHeaderSize), &why);
    if (!plain) {
      spdlog::debug("check from {} rejected: {}", from.str(), sealed_error_name(why));
      return;
    }
    PeerMessageError merr = PeerMessageError::kOk;
    const auto m = peer_message_decode(*plain, merr);
    if (!m) return;
    spdlog::debug("check: {} from {}", peer_message_type_name(peer_message_type(*m)), from.str());
    PathActions out;
    if (const auto* ping = std::get_if<PeerPing>(&*m))
      p.path->on_ping(from, *ping, out);
    else if (const auto* pong = std::get_if<PeerPong>(&*m))
      p.path->on_pong(from, *pong, Clock::now());
    apply(p, out);
    return;
  }
}

void MeshControl::send_check(RelayedPeer& p, const dataplane::Endpoint& to, const PeerMessage& m) {
  const auto plain = peer_message_encode(m);
  if (plain.empty()) return;
  const auto box = p.check_channel->seal(plain);
  if (box.empty()) return;
  std::vector<uint8_t> d(kCheckHeaderSize + box.size());
  std::memcpy(d.data(), kCheckMagic, sizeof(kCheckMagic));
  std::memcpy(d.data() + sizeof(kCheckMagic), my_check_id_.data(), my_check_id_.size());
  std::memcpy(d.data() + kCheckHeaderSize, box.data(), box.size());
  const dataplane::Endpoint dst = for_socket(to, check_family_);
  if (::sendto(check_fd_, d.data(), d.size(), 0, &dst.addr.sa, dst.socklen()) < 0)
    spdlog::debug("check to {}: {}", to.str(), std::strerror(errno));
}

void MeshControl::send_sealed(RelayedPeer& p, const PeerMessage& m) {
  if (!relay_) return;
  const auto plain = peer_message_encode(m);
  if (plain.empty()) return;
  auto box = p.channel->seal(plain);
  if (box.empty()) return;
  box.insert(box.begin(), kRelayTagSealed);
  (void)relay_->send(p.key, box);  // relay down: the path's timeouts handle the silence
}

void MeshControl::apply(RelayedPeer& p, PathActions& out) {
  for (const auto& [to, m] : out.check) send_check(p, to, m);
  for (const auto& m : out.relay) send_sealed(p, m);
  if (out.set_endpoint) {
    SetRequest set;
    PeerChange ch;
    ch.public_key = p.key;
    ch.update_only = true;
    const auto& direct = *out.set_endpoint;
    ch.endpoint = direct ? *direct : loopback_endpoint(p.port);
    if (direct) {
      // Off, then on again: the device sends a keepalive at once (as wireguard-go does when
      // keepalive is turned on), which opens our NAT toward the peer; the interval holds the
      // mapping open while the path is direct.
      ch.persistent_keepalive = 0;
      PeerChange on;
      on.public_key = p.key;
      on.update_only = true;
      on.persistent_keepalive = p.keepalive ? p.keepalive : uint16_t(25);
      set.peers.push_back(std::move(ch));
      set.peers.push_back(std::move(on));
    } else {
      ch.persistent_keepalive = p.keepalive;
      set.peers.push_back(std::move(ch));
    }
    if (int e = driver_.set(set); e != 0)
      spdlog::warn("setting the peer's endpoint: {}", std::strerror(e));
    next_counters_ = Clock::now();
  }
  if (out.tunnel_ping && p.tunnel_ip) {
    // To the peer's check socket through the tunnel: the data plane encrypts it for the path
    // under test, and the peer's pong comes back the same way.
    uint16_t port = 0;
    for (const PeerCandidate& c : p.remote)
      if (!c.for_wireguard && c.kind == PeerCandidateKind::kLocal) port = c.address.port();
    const uint64_t ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     Clock::now().time_since_epoch())
                                     .count());
    // Id 0 marks a tunnel ping: its pong measures the path, not a check pair.
    if (port != 0) send_check(p, dataplane::Endpoint::from_ip(*p.tunnel_ip, port), PeerPing{0, ns});
  }
  out = {};
  if (p.path && p.path->state() != p.shown) {
    const PathState was = p.shown;
    p.shown = p.path->state();
    const std::string who = key_to_base64(p.key).substr(0, 8);
    if (p.shown == PathState::kDirect) {
      const auto rtt = p.path->rtt_ms(Clock::now());
      spdlog::info("peer {}: direct via {}{}", who, p.path->direct_endpoint()->str(),
                   rtt ? fmt::format(" (check rtt {:.2f} ms)", *rtt) : std::string());
    } else if (p.shown == PathState::kSwitching) {
      spdlog::info("peer {}: trying {}", who, p.path->direct_endpoint()->str());
    } else {
      spdlog::info("peer {}: back to the relay ({})", who,
                   was == PathState::kDirect ? "the direct path went quiet or the peer left it"
                                             : "the new path did not confirm");
    }
  }
}

void MeshControl::step_paths(Clock::time_point now) {
  const bool want_counters =
      std::any_of(relayed_.begin(), relayed_.end(), [](const RelayedPeer& p) { return p.path; });
  if (want_counters && now >= next_counters_) {
    auto interval = std::chrono::milliseconds(1000);
    for (const RelayedPeer& p : relayed_)
      if (p.path) interval = std::min(interval, p.path->counters_interval());
    next_counters_ = now + interval;
    if (const auto snap = driver_.get()) {
      for (RelayedPeer& p : relayed_) {
        if (!p.path) continue;
        for (const PeerSnapshot& ps : snap->peers) {
          if (ps.public_key != p.key) continue;
          const bool relay = !ps.endpoint || is_loopback(ps.endpoint->ip());
          const auto hs = std::chrono::system_clock::time_point(
              std::chrono::seconds(ps.last_handshake_sec));
          const bool session = ps.last_handshake_sec != 0 &&
                               std::chrono::system_clock::now() - hs < dataplane::kRejectAfterTime;
          PathActions out;
          p.path->on_counters(ps.rx_bytes, relay, session, now, out);
          apply(p, out);
        }
      }
    }
  }
  for (RelayedPeer& p : relayed_) {
    if (!p.path) continue;
    PathActions out;
    p.path->tick(now, out);
    apply(p, out);
  }
}

void MeshControl::update_views() {
  const auto now = Clock::now();
  std::vector<PeerView> views;
  for (const RelayedPeer& p : relayed_) {
    if (!p.path) continue;
    PeerView v;
    v.key = p.key;
    v.candidates = p.remote;
    v.state = p.path->state();
    v.rtt_ms = p.path->rtt_ms(now);
    v.upgrades = p.path->upgrades();
    v.fallbacks = p.path->fallbacks();
    v.bans = p.path->bans(now);
    views.push_back(std::move(v));
  }
  std::lock_guard lk(mu_);
  views_ = std::move(views);
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
  if (relay_) t = std::min(t, relay_->next_deadline());
  for (const RelayedPeer& p : relayed_) {
    if (!p.path) continue;
    t = std::min(t, p.path->next_deadline(now));
    t = std::min(t, next_counters_);
  }
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

    if (relay_) relay_->tick(now);
    if (relay_up_ && (announce_ || std::any_of(relayed_.begin(), relayed_.end(),
                                                [](const RelayedPeer& p) { return p.owe_list; })))
      send_candidates();
    step_paths(now);
    update_views();

    std::vector<pollfd> fds;
    fds.push_back({stop_fd_, POLLIN, 0});
    fds.push_back({check_fd_, POLLIN, 0});
    const size_t probe_i = probe_fd_ >= 0 ? fds.size() : 0;
    if (probe_fd_ >= 0) fds.push_back({probe_fd_, POLLIN, 0});
    const size_t mon_i = monitor_.fd() >= 0 ? fds.size() : 0;
    if (monitor_.fd() >= 0) fds.push_back({monitor_.fd(), POLLIN, 0});
    const size_t status_i = status_fd_ >= 0 ? fds.size() : 0;
    if (status_fd_ >= 0) fds.push_back({status_fd_, POLLIN, 0});
    const size_t relay_i = relay_ && relay_->fd() >= 0 ? fds.size() : 0;
    if (relay_i) fds.push_back({relay_->fd(), relay_->events(), 0});
    const size_t relayed_i = fds.size();
    for (const RelayedPeer& p : relayed_) fds.push_back({p.fd, POLLIN, 0});
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        next_deadline(now) - now);
    const int rc = ::poll(fds.data(), fds.size(), int(std::clamp<int64_t>(wait.count() + 1, 0, 1000)));
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
    if (relay_i && fds[relay_i].revents) relay_->on_ready(fds[relay_i].revents, Clock::now());
    for (size_t i = 0; i < relayed_.size(); ++i)
      if (fds[relayed_i + i].revents & POLLIN) on_relayed_datagram(relayed_[i]);
    if (status_i && (fds[status_i].revents & POLLIN)) serve_status();
  }
}

}  // namespace meshwg::control
