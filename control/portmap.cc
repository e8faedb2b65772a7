// Port mappings from the gateway: NAT-PMP (RFC 6886) through libnatpmp and UPnP-IGD
// (WANIPConnection:1) through libminiupnpc. The libraries do the wire formats; this file bounds
// their time, checks what the gateway answered, and frees what they allocate.
//
// NAT-PMP (RFC 6886 §3), UDP to the gateway's port 5351, network byte order:
//   public address request   0 | op 0                                                  2 bytes
//   public address response  0 | 128 | result (16) | epoch (32) | external IPv4 (32)  12 bytes
//   map UDP request          0 | 1 | reserved (16) | internal port (16)
//                            | suggested external port (16) | requested lifetime (32)   12 bytes
//   map UDP response         0 | 129 | result | epoch | internal port
//                            | mapped external port | granted lifetime                 16 bytes
// libnatpmp retransmits at 250 ms doubling, 9 times (64 s in all); here poll() sleeps until
// its next retransmission or our deadline, whichever comes first, and gives up at the deadline.
//
// UPnP: one SSDP M-SEARCH round for the IGD search targets (or a root description URL given by
// the caller), the root description, GetExternalIPAddress, then AddPortMapping (again with
// lease 0 when the IGD only supports permanent leases, 725; AddAnyPortMapping when the port is
// taken, 718). Every step is a blocking libminiupnpc call with the library's own socket
// timeouts (3-5 s each), so the exchange runs on a thread of its own and the caller waits for
// it only until the deadline:
//
//   caller thread:  start UPnP thread ─► NAT-PMP exchange (poll, own deadline) ─► wait for UPnP
//                                                                                until deadline
//   UPnP thread:    discover ─► description ─► external IP ─► AddPortMapping ─► hand over
//                   (given up by the caller meanwhile: stop early, or delete a late mapping)
#include "control/portmap.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <miniupnpc/miniupnpc.h>
#include <miniupnpc/upnpcommands.h>
#include <miniupnpc/upnperrors.h>
#include <natpmp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

namespace meshwg::control {
namespace {

using Clock = std::chrono::steady_clock;
using dataplane::Endpoint;
using dataplane::IpAddress;

// ---- NAT-PMP (RFC 6886 §3.2, §3.3, §3.5) ----
constexpr uint8_t kOpPublicAddress = 0;
constexpr uint8_t kOpMapUdp = 1;
constexpr uint8_t kOpResponseBit = 128;
constexpr size_t kResponseHeaderSize = 8;  // version, opcode, result code, epoch
constexpr size_t kPublicAddressResponseSize = 12;
constexpr size_t kMapResponseSize = 16;
// Lifetime asked for when the caller asks for 0, which NAT-PMP would read as "delete" (§3.4):
// the two hours §3.3 recommends.
constexpr uint32_t kNatPmpDefaultLifetime = 7200;
// Wake-ups per NAT-PMP exchange: each is a datagram read, one of libnatpmp's 9 retransmissions
// or an EINTR. A bound besides time against a host flooding our socket.
constexpr unsigned kMaxNatPmpWakeups = 64;
// Not a libnatpmp code: the deadline passed.
constexpr int kNatPmpTimedOut = -1000;

// ---- UPnP ----
// SSDP wait, sent as MX: 1. libminiupnpc's minimum (it computes MX in whole seconds).
constexpr int kSsdpWaitMs = 1000;
// Search targets of one M-SEARCH round. IGD:2 devices answer IGD:1 searches (UDA 1.1 §1.3.2),
// and "upnp:rootdevice" would bring every printer and TV on the LAN, each description fetched.
const char* const kSsdpTargets[] = {
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
    nullptr,
};
constexpr int kUpnpOnlyPermanentLeases = 725;
constexpr int kUpnpConflictInMappingEntry = 718;

std::atomic<unsigned> g_upnp_threads{0};

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }


// A gateway's claim about its external address that cannot be true of a usable one:
// "this network" (0/8, also what some gateways say before they have an address), loopback,
// multicast, reserved and broadcast. A private address is kept: behind a second NAT the
// mapping still serves peers inside the outer network.
bool usable_external(const IpAddress& ip) {
  if (ip.family != 4) return false;
  const uint8_t first = ip.bytes[0];
  return first != 0 && first != 127 && first < 224;
}

bool is_private_v4(const IpAddress& ip) {
  const uint8_t a = ip.bytes[0], b = ip.bytes[1];
  return a == 10 || (a == 172 && (b & 0xf0) == 16) || (a == 192 && b == 168) ||
         (a == 100 && (b & 0xc0) == 64);  // RFC 6598 shared address space (carrier-grade NAT)
}

const char* natpmp_error_name(int r) {
  switch (r) {
    case NATPMP_ERR_INVALIDARGS: return "invalid arguments";
    case NATPMP_ERR_SOCKETERROR: return "socket() failed";
    case NATPMP_ERR_CANNOTGETGATEWAY: return "no default gateway";
    case NATPMP_ERR_CLOSEERR: return "close() failed";
    case NATPMP_ERR_RECVFROM: return "recv failed";
    case NATPMP_ERR_NOPENDINGREQ: return "no pending request";
    case NATPMP_ERR_NOGATEWAYSUPPORT: return "gateway does not support NAT-PMP";
    case NATPMP_ERR_CONNECTERR: return "connect() failed";
    case NATPMP_ERR_WRONGPACKETSOURCE: return "answer from another host";
    case NATPMP_ERR_SENDERR: return "send failed";
    case NATPMP_ERR_FCNTLERROR: return "fcntl() failed";
    case NATPMP_ERR_GETTIMEOFDAYERR: return "gettimeofday() failed";
    case NATPMP_ERR_UNSUPPORTEDVERSION: return "result 1: unsupported version";
    case NATPMP_ERR_UNSUPPORTEDOPCODE: return "result 5: unsupported opcode";
    case NATPMP_ERR_UNDEFINEDERROR: return "undefined result code";
    case NATPMP_ERR_NOTAUTHORIZED: return "result 2: not authorized";
    case NATPMP_ERR_NETWORKFAILURE: return "result 3: network failure";
    case NATPMP_ERR_OUTOFRESOURCES: return "result 4: out of resources";
    case kNatPmpTimedOut: return "no answer before the deadline";
    default: return "unknown error";
  }
}

// One libnatpmp handle. initnatpmp() leaves its socket open when it fails after creating it
// (no gateway, connect failed), so the socket is closed on every path here.
class NatPmpHandle {
 public:
  NatPmpHandle() {
    std::memset(&n_, 0, sizeof n_);
    n_.s = -1;
  }
  ~NatPmpHandle() {
    if (n_.s >= 0) closenatpmp(&n_);
  }
  NatPmpHandle(const NatPmpHandle&) = delete;
  NatPmpHandle& operator=(const NatPmpHandle&) = delete;

  // gateway: IPv4, or unset (family 0) for the default route's gateway. 0 or NATPMP_ERR_*.
  int init(const IpAddress& gateway) {
    int r;
    if (gateway.family == 0) {
      r = initnatpmp(&n_, 0, 0);
    } else {
      if (gateway.family != 4) return NATPMP_ERR_INVALIDARGS;  // NAT-PMP is IPv4 only
      in_addr_t gw;
      std::memcpy(&gw, gateway.bytes.data(), 4);
      r = initnatpmp(&n_, 1, gw);
    }
    // libnatpmp does not ask for close-on-exec; a child of the daemon has no use for it.
    if (n_.s >= 0) (void)::fcntl(n_.s, F_SETFD, FD_CLOEXEC);
    return r;
  }
  natpmp_t* get() { return &n_; }
  IpAddress gateway() const {
    return IpAddress::v4(reinterpret_cast<const uint8_t*>(&n_.gateway));
  }

 private:
  natpmp_t n_;
};

// Whether a datagram is a well-formed answer to our pending request of opcode `op`. libnatpmp
// reads fixed offsets of a 16-byte buffer whatever the datagram's length, and takes any
// response (version 0, opcode 128..130) as the answer to whatever request it has pending, so
// everything else is dropped here before it sees it.
bool natpmp_answer_ok(const uint8_t* b, size_t len, uint8_t op, uint16_t internal_port) {
  if (len < kResponseHeaderSize) return false;  // no room for the result code and epoch
  if (b[0] != 0) return false;                  // another protocol version (PCP is 2)
  if (b[1] != (kOpResponseBit | op)) return false;  // a request, or the answer to another one
  if (be16(b + 2) != 0) return true;  // an error answer: only its header is read
  if (op == kOpPublicAddress) return len >= kPublicAddressResponseSize;
  // §3.3: the answer repeats our internal port; another port is another client's mapping.
  return len >= kMapResponseSize && be16(b + 8) == internal_port;
}

// Waits for the answer to libnatpmp's pending request (opcode op), letting libnatpmp
// retransmit on its schedule until the deadline. Returns 0 with resp filled, a NATPMP_ERR_*
// code (a non-zero result code from the gateway becomes one too), or kNatPmpTimedOut.
int natpmp_wait(natpmp_t* n, uint8_t op, uint16_t internal_port, Clock::time_point deadline,
                natpmpresp_t& resp, unsigned& dropped) {
  for (unsigned wake = 0; wake < kMaxNatPmpWakeups; ++wake) {
    const auto now = Clock::now();
    if (now >= deadline) return kNatPmpTimedOut;
    long wait_ms = long(
        std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count());
    timeval tv{};
    if (getnatpmprequesttimeout(n, &tv) == 0) {
      // Rounded up: waking a fraction of a millisecond early would find the retransmission not
      // yet due and spin through the wake-up budget. Negative once it is due: no sleep.
      const long long us = (long long)tv.tv_sec * 1000000 + tv.tv_usec;
      const long retry_ms = us <= 0 ? 0 : long((us + 999) / 1000);
      wait_ms = std::min(wait_ms, retry_ms);
    }
    pollfd p{n->s, POLLIN, 0};
    const int pr = ::poll(&p, 1, int(wait_ms));
    if (pr < 0) {
      if (errno == EINTR) continue;
      return NATPMP_ERR_RECVFROM;
    }
    if (pr > 0) {
      // One byte more than the longest answer, to see (and tolerate) a longer one.
      uint8_t b[kMapResponseSize + 1];
      const ssize_t got = ::recv(n->s, b, sizeof b, MSG_PEEK | MSG_DONTWAIT);
      if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
        // ICMP port unreachable on the connected socket: nothing listens on 5351 (§3.1
        // lets a client conclude that the gateway does not support NAT-PMP).
        return errno == ECONNREFUSED ? NATPMP_ERR_NOGATEWAYSUPPORT : NATPMP_ERR_RECVFROM;
      }
      if (!natpmp_answer_ok(b, size_t(got), op, internal_port)) {
        (void)::recv(n->s, b, sizeof b, MSG_DONTWAIT);  // consume and drop it
        ++dropped;
        continue;
      }
    }
    // A well-formed answer is waiting, or libnatpmp's next retransmission is due.
    const int r = readnatpmpresponseorretry(n, &resp);
    if (r != NATPMP_TRYAGAIN) return r;
  }
  return kNatPmpTimedOut;
}

std::optional<PortMapping> natpmp_map(uint16_t port, const PortMapOptions& opt,
                                      Clock::time_point deadline) {
  const IpAddress gw_opt = opt.natpmp_gateway.value_or(IpAddress{});
  if (gw_opt.family == 6) {
    spdlog::debug("portmap: nat-pmp: gateway {} skipped: NAT-PMP is IPv4 only", gw_opt.str());
    return std::nullopt;
  }
  NatPmpHandle h;
  if (const int r = h.init(gw_opt); r < 0) {
    spdlog::debug("portmap: nat-pmp: {}", natpmp_error_name(r));
    return std::nullopt;
  }
  const std::string gw = h.gateway().str();
  natpmpresp_t resp{};
  unsigned dropped = 0;
  int r = sendpublicaddressrequest(h.get());
  if (r >= 0) r = natpmp_wait(h.get(), kOpPublicAddress, 0, deadline, resp, dropped);
  if (r != 0) {
    spdlog::debug("portmap: nat-pmp: {}: public address: {} ({} bad answers dropped)", gw,
                  natpmp_error_name(r), dropped);
    return std::nullopt;
  }
  const IpAddress external =
      IpAddress::v4(reinterpret_cast<const uint8_t*>(&resp.pnu.publicaddress.addr));
  if (!usable_external(external)) {
    spdlog::debug("portmap: nat-pmp: {}: unusable public address {}", gw, external.str());
    return std::nullopt;
  }

  const uint32_t lifetime = opt.lifetime_s != 0 ? opt.lifetime_s : kNatPmpDefaultLifetime;
  // The internal port is also the suggested external port (§3.3): the gateway may pick another.
  r = sendnewportmappingrequest(h.get(), NATPMP_PROTOCOL_UDP, port, port, lifetime);
  if (r >= 0) r = natpmp_wait(h.get(), kOpMapUdp, port, deadline, resp, dropped);
  if (r != 0) {
    spdlog::debug("portmap: nat-pmp: {}: map udp {}: {} ({} bad answers dropped)", gw, port,
                  natpmp_error_name(r), dropped);
    return std::nullopt;
  }
  const auto& nm = resp.pnu.newportmapping;
  if (nm.mappedpublicport == 0 || nm.lifetime == 0) {
    // A success that grants nothing: treated as a refusal.
    spdlog::debug("portmap: nat-pmp: {}: map udp {}: granted port {} for {} s", gw, port,
                  nm.mappedpublicport, nm.lifetime);
    return std::nullopt;
  }
  PortMapping m;
  m.kind = PortMapKind::kNatPmp;
  m.external = Endpoint::from_ip(external, nm.mappedpublicport);
  m.internal_port = port;
  m.lifetime_s = nm.lifetime;
  m.natpmp_gateway = h.gateway();
  spdlog::debug("portmap: nat-pmp: {}: udp {} -> {} for {} s{}", gw, port, m.external.str(),
                m.lifetime_s, is_private_v4(external) ? " (private: a second NAT outside)" : "");
  return m;
}

void natpmp_unmap(const PortMapping& m, Clock::time_point deadline) {
  NatPmpHandle h;
  if (const int r = h.init(m.natpmp_gateway); r < 0) {
    spdlog::debug("portmap: nat-pmp: unmap: {}", natpmp_error_name(r));
    return;
  }
  natpmpresp_t resp{};
  unsigned dropped = 0;
  // §3.4: lifetime 0 deletes; the suggested external port MUST be 0.
  int r = sendnewportmappingrequest(h.get(), NATPMP_PROTOCOL_UDP, m.internal_port, 0, 0);
  if (r >= 0) r = natpmp_wait(h.get(), kOpMapUdp, m.internal_port, deadline, resp, dropped);
  spdlog::debug("portmap: nat-pmp: {}: unmap udp {}: {}", h.gateway().str(), m.internal_port,
                r == 0 ? "done" : natpmp_error_name(r));
}

// ---- UPnP ----

std::string upnp_error(int r) {
  const char* s = strupnperror(r);
  return std::to_string(r) + " (" + (s ? s : "unknown") + ")";
}

// The IGD to talk to, found by SSDP or from a root description URL. Owns what libminiupnpc
// allocated for it.
class Igd {
 public:
  Igd() {
    std::memset(&urls_, 0, sizeof urls_);
    std::memset(&data_, 0, sizeof data_);
  }
  ~Igd() { FreeUPNPUrls(&urls_); }  // frees and nulls each URL; safe when never filled
  Igd(const Igd&) = delete;
  Igd& operator=(const Igd&) = delete;

  bool find(const PortMapOptions& opt, std::string& why) {
    if (!opt.upnp_root_url.empty()) {
      if (UPNP_GetIGDFromUrl(opt.upnp_root_url.c_str(), &urls_, &data_, lanaddr_,
                             sizeof lanaddr_) != 1) {
        why = "no root description at " + opt.upnp_root_url;
        return false;
      }
    } else {
      int err = 0;
      // One round: every target sent, then one wait (searchalltypes = 1). IPv4, TTL 2.
      UPNPDev* devs = upnpDiscoverDevices(kSsdpTargets, kSsdpWaitMs, nullptr, nullptr,
                                          UPNP_LOCAL_PORT_ANY, 0, 2, &err, 1);
      if (devs == nullptr) {
        why = "no IGD answered SSDP (error " + std::to_string(err) + ")";
        return false;
      }
      const int r = UPNP_GetValidIGD(devs, &urls_, &data_, lanaddr_, sizeof lanaddr_);
      freeUPNPDevlist(devs);
      // 1: connected IGD. 2: an IGD that says it is not connected or has a private external
      // address (a second NAT); GetExternalIPAddress decides. 3: not an IGD.
      if (r != 1 && r != 2) {
        why = "no valid IGD among the SSDP answers (" + std::to_string(r) + ")";
        return false;
      }
    }
    lanaddr_[sizeof lanaddr_ - 1] = '\0';
    if (urls_.controlURL == nullptr || urls_.controlURL[0] == '\0' ||
        data_.first.servicetype[0] == '\0') {
      why = "the IGD has no WANIPConnection or WANPPPConnection service";
      return false;
    }
    if (lanaddr_[0] == '\0') {
      why = "no local address towards the IGD";
      return false;
    }
    return true;
  }
  const char* control_url() const { return urls_.controlURL; }
  const char* service_type() const { return data_.first.servicetype; }
  const char* lan_addr() const { return lanaddr_; }

 private:
  UPNPUrls urls_;
  IGDdatas data_;
  char lanaddr_[64] = {};  // our address on the IGD's side: the mapping's internal client
};

int upnp_delete(const std::string& control_url, const std::string& service_type,
                uint16_t external_port) {
  const std::string ext = std::to_string(external_port);
  return UPNP_DeletePortMapping(control_url.c_str(), service_type.c_str(), ext.c_str(), "UDP",
                                nullptr);
}

// The whole UPnP map exchange. given_up() is checked between the library's blocking steps so
// a thread the caller stopped waiting for does not go on to create a mapping.
std::optional<PortMapping> upnp_map(uint16_t port, const PortMapOptions& opt,
                                    const std::function<bool()>& given_up, std::string& why) {
  Igd igd;
  if (!igd.find(opt, why)) return std::nullopt;
  if (given_up()) {
    why = "given up after discovery";
    return std::nullopt;
  }
  // The library copies at most 16 bytes (a dotted quad and its NUL).
  char ext_ip[40] = {};
  int r = UPNP_GetExternalIPAddress(igd.control_url(), igd.service_type(), ext_ip);
  if (r != UPNPCOMMAND_SUCCESS) {
    why = "GetExternalIPAddress: " + upnp_error(r);
    return std::nullopt;
  }
  ext_ip[sizeof ext_ip - 1] = '\0';
  const std::optional<IpAddress> external = IpAddress::parse(ext_ip);
  if (!external || !usable_external(*external)) {
    why = "unusable external address '" + std::string(ext_ip) + "'";
    return std::nullopt;
  }
  if (given_up()) {
    why = "given up before AddPortMapping";
    return std::nullopt;
  }

  const std::string port_s = std::to_string(port);
  std::string lease = std::to_string(opt.lifetime_s);
  uint16_t ext_port = port;
  r = UPNP_AddPortMapping(igd.control_url(), igd.service_type(), port_s.c_str(), port_s.c_str(),
                          igd.lan_addr(), opt.description.c_str(), "UDP", nullptr,
                          lease.c_str());
  if (r == kUpnpOnlyPermanentLeases && lease != "0") {
    lease = "0";
    r = UPNP_AddPortMapping(igd.control_url(), igd.service_type(), port_s.c_str(),
                            port_s.c_str(), igd.lan_addr(), opt.description.c_str(), "UDP",
                            nullptr, lease.c_str());
  }
  if (r == kUpnpConflictInMappingEntry) {
    // The port is another client's: let an IGD:2 pick a free one (IGD:1 answers 401).
    char reserved[16] = {};  // the library writes at most 6 bytes
    r = UPNP_AddAnyPortMapping(igd.control_url(), igd.service_type(), port_s.c_str(),
                               port_s.c_str(), igd.lan_addr(), opt.description.c_str(), "UDP",
                               nullptr, lease.c_str(), reserved);
    if (r == UPNPCOMMAND_SUCCESS) {
      reserved[sizeof reserved - 1] = '\0';
      const size_t len = std::strlen(reserved);
      unsigned v = 0;
      const auto [end, ec] = std::from_chars(reserved, reserved + len, v);
      if (ec != std::errc() || end != reserved + len || v == 0 || v > 65535) {
        why = "AddAnyPortMapping: bad reserved port '" + std::string(reserved) + "'";
        return std::nullopt;
      }
      ext_port = uint16_t(v);
    }
  }
  if (r != UPNPCOMMAND_SUCCESS) {
    why = "AddPortMapping: " + upnp_error(r);
    return std::nullopt;
  }
  PortMapping m;
  m.kind = PortMapKind::kUpnp;
  m.external = Endpoint::from_ip(*external, ext_port);
  m.internal_port = port;
  m.lifetime_s = lease == "0" ? 0 : opt.lifetime_s;
  m.upnp_control_url = igd.control_url();
  m.upnp_service_type = igd.service_type();
  return m;
}

// Hand-off between a caller and the thread running one UPnP exchange. The caller waits until
// its deadline; if the exchange is not done by then it sets given_up and leaves, and the
// thread cleans up after itself (a late mapping is deleted: no one would refresh or remove it).
struct UpnpJob {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;                   // guarded by mu
  bool given_up = false;               // guarded by mu
  std::optional<PortMapping> mapping;  // guarded by mu; set before done
  std::string why;                     // guarded by mu; set before done

  bool is_given_up() {
    std::lock_guard lk(mu);
    return given_up;
  }
};

using UpnpExchange = std::function<std::optional<PortMapping>(UpnpJob&, std::string&)>;

void upnp_thread_main(std::shared_ptr<UpnpJob> job, UpnpExchange exchange) {
  {
    std::string why;
    std::optional<PortMapping> m = exchange(*job, why);
    bool late;
    {
      std::lock_guard lk(job->mu);
      late = job->given_up;
      if (!late) {
        job->mapping = std::move(m);
        job->why = std::move(why);
        job->done = true;
      }
    }
    if (!late) {
      job->cv.notify_all();
    } else if (m) {
      // Not logged: the caller is gone, and this may run while the process exits.
      (void)upnp_delete(m->upnp_control_url, m->upnp_service_type, m->external.port());
    }
  }
  // Everything this thread allocated is released before it counts itself out, so a test that
  // waits for portmap_threads_running() == 0 sees no leak.
  job.reset();
  exchange = nullptr;
  g_upnp_threads.fetch_sub(1, std::memory_order_acq_rel);
}

// One UPnP exchange on its own thread, waited for until a deadline.
class UpnpRun {
 public:
  // False when no thread could be started (logged).
  bool start(UpnpExchange exchange) {
    job_ = std::make_shared<UpnpJob>();
    g_upnp_threads.fetch_add(1, std::memory_order_acq_rel);
    // std::thread reports a failure to create a thread (EAGAIN) only by throwing.
    try {
      thread_ = std::thread(upnp_thread_main, job_, std::move(exchange));
    } catch (const std::system_error& e) {
      g_upnp_threads.fetch_sub(1, std::memory_order_acq_rel);
      spdlog::debug("portmap: upnp: no thread: {}", e.what());
      job_.reset();
      return false;
    }
    return true;
  }
  // Waits until the exchange is done or the deadline passes. Done: joins the thread and
  // returns the job (its results no longer change). Deadline: gives the job up, lets the
  // thread finish on its own, and returns nullptr.
  std::shared_ptr<UpnpJob> finish(Clock::time_point deadline) {
    if (!job_) return nullptr;
    bool done;
    {
      std::unique_lock lk(job_->mu);
      done = job_->cv.wait_until(lk, deadline, [this] { return job_->done; });
      if (!done) job_->given_up = true;
    }
    if (done) {
      thread_.join();
      return std::move(job_);
    }
    thread_.detach();
    job_.reset();
    return nullptr;
  }
  ~UpnpRun() {
    // finish() always runs after start(); this only covers an early return.
    if (thread_.joinable()) (void)finish(Clock::now());
  }

 private:
  std::shared_ptr<UpnpJob> job_;
  std::thread thread_;
};

}  // namespace

const char* portmap_kind_name(PortMapKind k) {
  switch (k) {
    case PortMapKind::kUpnp: return "upnp";
    case PortMapKind::kNatPmp: return "nat-pmp";
  }
  return "?";
}

std::vector<PortMapping> map_udp_port(uint16_t internal_port, const PortMapOptions& opt) {
  std::vector<PortMapping> out;
  if (internal_port == 0) {
    spdlog::debug("portmap: no port to map");
    return out;
  }
  const auto deadline = Clock::now() + opt.timeout;
  UpnpRun upnp;
  bool upnp_started = false;
  if (opt.upnp) {
    // The thread gets its own copy of the options: it may outlive this call.
    upnp_started = upnp.start([internal_port, opt](UpnpJob& job, std::string& why) {
      return upnp_map(internal_port, opt, [&job] { return job.is_given_up(); }, why);
    });
  }
  if (opt.natpmp) {
    if (auto m = natpmp_map(internal_port, opt, deadline)) out.push_back(std::move(*m));
  }
  if (upnp_started) {
    if (auto job = upnp.finish(deadline)) {
      if (job->mapping) {
        const PortMapping& m = *job->mapping;
        spdlog::debug("portmap: upnp: {}: udp {} -> {} for {} s", m.upnp_control_url,
                      internal_port, m.external.str(), m.lifetime_s);
        out.push_back(std::move(*job->mapping));
      } else {
        spdlog::debug("portmap: upnp: {}", job->why);
      }
    } else {
      spdlog::debug("portmap: upnp: no result within {} ms; left to finish on its thread",
                    opt.timeout.count());
    }
  }
  return out;
}

void unmap_udp_port(const PortMapping& m, const PortMapOptions& opt) {
  const auto deadline = Clock::now() + opt.timeout;
  if (m.kind == PortMapKind::kNatPmp) {
    natpmp_unmap(m, deadline);
    return;
  }
  if (m.upnp_control_url.empty() || m.upnp_service_type.empty()) {
    spdlog::debug("portmap: upnp: unmap: the mapping names no control URL");
    return;
  }
  UpnpRun upnp;
  const bool started = upnp.start([m](UpnpJob&, std::string& why) -> std::optional<PortMapping> {
    const int r = upnp_delete(m.upnp_control_url, m.upnp_service_type, m.external.port());
    why = r == UPNPCOMMAND_SUCCESS ? "done" : upnp_error(r);
    return std::nullopt;
  });
  if (!started) return;
  if (auto job = upnp.finish(deadline)) {
    spdlog::debug("portmap: upnp: {}: unmap udp {}: {}", m.upnp_control_url, m.external.port(),
                  job->why);
  } else {
    spdlog::debug("portmap: upnp: unmap: no answer within {} ms; left to finish on its thread",
                  opt.timeout.count());
  }
}

unsigned portmap_threads_running() { return g_upnp_threads.load(std::memory_order_acquire); }

}  // namespace meshwg::control
