// meshwg-server: the public services of a meshwg mesh, under one key pair.
//
//   meshwg-server [-f|--foreground] --config FILE [--max-clients N] [--load-threshold N]
//                 [--relay-max-clients N] [--relay-queue-kib N]
//
// FILE is a server config (control/mesh_config.h):
//   [Server]
//   PrivateKey = <base64>           the server's WireGuard key (clients use its public key)
//   Stun       = 0.0.0.0:3478       plain STUN (RFC 8489 binding), UDP
//   WGStun     = 0.0.0.0:51820      WG-STUN, a WireGuard responder, UDP
//   Relay      = 0.0.0.0:443        the relay, TCP (control/relay_server.h)
// A config error prints "FILE:LINE: KEY: message" and exits 1; so does a port that cannot be
// bound. Without -f the server daemonises (like meshwg) once its sockets are bound and logs to
// syslog; with -f (or WG_PROCESS_FOREGROUND=1) it stays in the foreground and logs to stderr.
// LOG_LEVEL=debug|info|error|silent as meshwg. It exits 0 on SIGINT or SIGTERM; SIGUSR1 logs
// the counters, which are also logged on exit.
//
// WG-STUN reserved addresses. A client adds this server as an ordinary WireGuard peer (its
// public key, endpoint = the WGStun address, no preshared key) with allowed IPs
//     100.100.100.100/32, fd6d:6573:6877::1/128
// and routes those two addresses into its tunnel. Inside the tunnel the server answers
//   - STUN binding requests to UDP port 3478 at either address, with the OUTER address and
//     port of the client's WireGuard packets as XOR-MAPPED-ADDRESS (the NAT mapping other
//     peers will see): `meshwg stun 100.100.100.100:3478` on the client prints it;
//   - ICMP / ICMPv6 echo requests to either address (ping works);
// and drops (and counts) everything else; it forwards nothing. See control/wgstun_server.h.
//
// Relay. Clients connect over TCP, prove possession of their WireGuard static key against
// this server's key (control/relay_proto.h) and then exchange opaque, end-to-end sealed
// payloads addressed by public key; the relay forwards them between connected clients and
// does nothing else. At most --relay-max-clients connections (the fd limit is raised to fit),
// --relay-queue-kib of outgoing bytes queued per client (beyond it frames are dropped and
// counted). See control/relay_server.h.
//
// Threads: one. A poll loop over a signalfd, the STUN socket, the WG-STUN socket and the
// relay's epoll fd, with a tick about once a second (WG-STUN client expiry, passive
// keepalives; relay auth and idle deadlines).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "control/mesh_config.h"
#include "control/relay_server.h"
#include "control/stun_server.h"
#include "control/wgstun_server.h"
#include "crypto/aead.h"
#include "crypto/primitives.h"

namespace {

using meshwg::control::RelayServer;
using meshwg::control::StunServer;
using meshwg::control::WgStunServer;

bool env_true(const char* name) {
  const char* v = std::getenv(name);
  return v && (std::strcmp(v, "1") == 0 || std::strcmp(v, "true") == 0);
}

void setup_logging(bool daemon) {
  std::shared_ptr<spdlog::logger> logger;
  if (daemon)
    logger = spdlog::syslog_logger_mt("meshwg-server", "meshwg-server", LOG_PID, LOG_DAEMON);
  else
    logger = spdlog::stderr_color_mt("meshwg-server");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern(daemon ? "%v" : "%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  const char* lvl = std::getenv("LOG_LEVEL");
  const std::string level = lvl ? lvl : "info";
  if (level == "debug" || level == "verbose")
    spdlog::set_level(spdlog::level::debug);
  else if (level == "error")
    spdlog::set_level(spdlog::level::err);
  else if (level == "silent")
    spdlog::set_level(spdlog::level::off);
  else
    spdlog::set_level(spdlog::level::info);
}

void log_counters(const StunServer* stun, const WgStunServer* wgstun, const RelayServer* relay) {
  using namespace meshwg::control;
  if (stun) {
    std::string s;
    for (size_t i = 0; i < size_t(StunServerCounter::kCount); ++i)
      if (const uint64_t n = stun->count(StunServerCounter(i)))
        s += std::string(" ") + stun_server_counter_name(StunServerCounter(i)) + "=" + std::to_string(n);
    for (size_t i = 0; i < size_t(StunError::kCount); ++i)
      if (const uint64_t n = stun->malformed(StunError(i)))
        s += std::string(" malformed:") + stun_error_name(StunError(i)) + "=" + std::to_string(n);
    spdlog::info("stun counters:{}", s.empty() ? " none" : s);
  }
  if (wgstun) {
    const WgStunResponder& r = wgstun->responder();
    std::string s = " clients=" + std::to_string(r.clients());
    for (size_t i = 0; i < size_t(WgStunEvent::kCount); ++i)
      if (const uint64_t n = r.events(WgStunEvent(i)))
        s += std::string(" ") + wgstun_event_name(WgStunEvent(i)) + "=" + std::to_string(n);
    std::string d;
    for (size_t i = 0; i < size_t(WgStunDrop::kCount); ++i)
      if (const uint64_t n = r.drops(WgStunDrop(i)))
        d += std::string(" ") + wgstun_drop_name(WgStunDrop(i)) + "=" + std::to_string(n);
    spdlog::info("wgstun counters:{}", s);
    spdlog::info("wgstun drops:{}", d.empty() ? " none" : d);
  }
  if (relay) {
    std::string s = " clients=" + std::to_string(relay->clients()) +
                    " authenticated_now=" + std::to_string(relay->authenticated());
    for (size_t i = 0; i < size_t(RelayServerCounter::kCount); ++i)
      if (const uint64_t n = relay->count(RelayServerCounter(i)))
        s += std::string(" ") + relay_server_counter_name(RelayServerCounter(i)) + "=" + std::to_string(n);
    for (size_t i = 1; i < size_t(RelayMalformed::kCount); ++i)
      if (const uint64_t n = relay->malformed(RelayMalformed(i)))
        s += std::string(" malformed:") + relay_malformed_name(RelayMalformed(i)) + "=" + std::to_string(n);
    spdlog::info("relay counters:{}", s);
  }
}

// Besides one per relay client: stdio, the servers' sockets, epoll, signalfd, logs, headroom.
constexpr rlim_t kOtherFds = 64;

// The relay holds one fd per client: raise the soft limit (and the hard one, when allowed) to
// fit max_clients plus kOtherFds. Returns the limit now in force.
rlim_t raise_fd_limit(size_t max_clients) {
  const rlim_t want = rlim_t(max_clients) + kOtherFds;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur >= want) return rl.rlim_cur;
  rlimit up{want, std::max(rl.rlim_max, want)};
  if (::setrlimit(RLIMIT_NOFILE, &up) == 0) return want;
  up = {rl.rlim_max, rl.rlim_max};  // not allowed above the hard limit: take all of it
  if (::setrlimit(RLIMIT_NOFILE, &up) == 0) return rl.rlim_max;
  return rl.rlim_cur;
}

int run(const std::string& config_path, bool foreground, size_t max_clients,
        uint32_t load_threshold, const meshwg::control::RelayServerOptions& relay_opt) {
  if (!meshwg::crypto::init()) {
    std::cerr << "meshwg-server: libsodium initialisation failed\n";
    return 1;
  }
  meshwg::control::ConfigError cerr;
  auto cfg = meshwg::control::load_server_config(config_path, cerr);
  if (!cfg) {
    std::cerr << cerr.message << "\n";
    return 1;
  }
  // Logging goes to stderr until the fork; the daemon's logger is set up after it.
  if (foreground) setup_logging(false);

  std::string err;
  std::unique_ptr<StunServer> stun;
  if (cfg->stun) {
    stun = std::make_unique<StunServer>();
    if (!stun->open(*cfg->stun, err)) {
      std::cerr << "meshwg-server: " << config_path << ": Stun: " << err << "\n";
      return 1;
    }
  }
  std::unique_ptr<WgStunServer> wgstun;
  if (cfg->wgstun) {
    meshwg::control::WgStunOptions opt;
    opt.max_clients = max_clients;
    opt.load_initiations_per_second = load_threshold;
    wgstun = std::make_unique<WgStunServer>(cfg->private_key.span(), opt);
    if (!wgstun->open(*cfg->wgstun, err)) {
      std::cerr << "meshwg-server: " << config_path << ": WGStun: " << err << "\n";
      return 1;
    }
  }
  std::unique_ptr<RelayServer> relay;
  rlim_t fd_limit = 0;
  if (cfg->relay) {
    fd_limit = raise_fd_limit(relay_opt.max_clients);
    relay = std::make_unique<RelayServer>(cfg->private_key.span(), relay_opt);
    if (!relay->open(*cfg->relay, err)) {
      std::cerr << "meshwg-server: " << config_path << ": Relay: " << err << "\n";
      return 1;
    }
  }
  cfg->private_key.clear();  // the responder and the relay hold their own copies

  if (!foreground) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::cerr << "meshwg-server: fork: " << std::strerror(errno) << "\n";
      return 1;
    }
    if (pid > 0) std::_Exit(0);
    ::setsid();
    if (::chdir("/") != 0) {
    }
    const int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
      if (null > 2) ::close(null);
    }
    setup_logging(true);
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const int sfd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    spdlog::error("signalfd: {}", std::strerror(errno));
    return 1;
  }
  (void)meshwg::crypto::calibrate_transport_aead();

  if (stun) spdlog::info("stun: listening on UDP {}", stun->local().str());
  if (wgstun) {
    spdlog::info("wgstun: listening on UDP {} (at most {} clients; cookies above {} initiations/s)",
                 wgstun->local().str(), max_clients, load_threshold);
    spdlog::info("wgstun: answers STUN at 100.100.100.100:3478 and [fd6d:6573:6877::1]:3478 and "
                 "pings to both inside the tunnel");
  }
  if (relay) {
    spdlog::info("relay: listening on TCP {} (at most {} clients, {} KiB queued per client)",
                 relay->local().str(), relay_opt.max_clients, relay_opt.max_queue_bytes / 1024);
    if (fd_limit < rlim_t(relay_opt.max_clients) + kOtherFds)
      spdlog::warn("relay: the fd limit is {}: fewer than {} clients can connect", fd_limit,
                   relay_opt.max_clients);
  }

  using Clock = std::chrono::steady_clock;
  constexpr auto kTick = std::chrono::seconds(1);
  auto next_tick = Clock::now() + kTick;
  for (;;) {
    pollfd fds[4] = {{sfd, POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}};
    if (stun) fds[1].fd = stun->fd();
    if (wgstun) fds[2].fd = wgstun->fd();
    if (relay) fds[3].fd = relay->fd();
    auto now = Clock::now();
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now);
    const int rc = ::poll(fds, 4, int(std::max<int64_t>(0, wait.count()) + 1));
    if (rc < 0 && errno != EINTR) {
      spdlog::error("poll: {}", std::strerror(errno));
      break;
    }
    now = Clock::now();
    if (rc > 0 && (fds[0].revents & POLLIN)) {
      signalfd_siginfo si{};
      bool stop = false;
      while (::read(sfd, &si, sizeof(si)) == ssize_t(sizeof(si))) {
        if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
          spdlog::info("received signal {}, shutting down", si.ssi_signo);
          stop = true;
        } else if (si.ssi_signo == SIGUSR1) {
          log_counters(stun.get(), wgstun.get(), relay.get());
        } else {
          spdlog::info("received signal {}, ignored (nothing to reload)", si.ssi_signo);
        }
      }
      if (stop) break;
    }
    // A socket error (POLLERR, e.g. a queued ICMP error) is cleared by the next read.
    if (stun && (fds[1].revents & (POLLIN | POLLERR))) stun->on_readable();
    if (wgstun && (fds[2].revents & (POLLIN | POLLERR))) wgstun->on_readable(now);
    if (relay && (fds[3].revents & POLLIN)) relay->on_readable(now);
    if (now >= next_tick) {
      if (wgstun) wgstun->on_tick(now);
      if (relay) relay->on_tick(now);
      next_tick = now + kTick;
    }
  }
  log_counters(stun.get(), wgstun.get(), relay.get());
  ::close(sfd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"meshwg-server: plain STUN, WG-STUN and the relay under one key pair"};
  bool foreground = false;
  std::string config;
  size_t max_clients = meshwg::control::WgStunOptions{}.max_clients;
  uint32_t load_threshold = meshwg::control::WgStunOptions{}.load_initiations_per_second;
  app.add_flag("-f,--foreground", foreground, "stay in the foreground, log to stderr");
  app.add_option("--config", config, "server config file ([Server] section)")->required();
  app.add_option("--max-clients", max_clients, "WG-STUN clients kept at most (LRU)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, meshwg::dataplane::kMaxPeers));
  app.add_option("--load-threshold", load_threshold,
                 "WG-STUN initiations per second above which cookies (mac2) are required")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000000u));
  meshwg::control::RelayServerOptions relay_opt;
  size_t relay_queue_kib = relay_opt.max_queue_bytes / 1024;
  app.add_option("--relay-max-clients", relay_opt.max_clients,
                 "relay connections held at most (beyond it new ones are closed)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
  app.add_option("--relay-queue-kib", relay_queue_kib,
                 "relay: outgoing KiB queued per client (beyond it frames to it are dropped)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{64}, size_t{65536}));
  app.set_version_flag("--version", "meshwg-server 0.1.0");
  CLI11_PARSE(app, argc, argv);
  if (env_true("WG_PROCESS_FOREGROUND")) foreground = true;
  relay_opt.max_queue_bytes = relay_queue_kib * 1024;
  return run(config, foreground, max_clients, load_threshold, relay_opt);
}
