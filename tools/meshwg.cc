// meshwg: the userspace WireGuard daemon. `meshwg [-f|--foreground] IFNAME` behaves like
// `wireguard-go IFNAME` (wireguard.com/xplatform): it creates the TUN, serves the UAPI socket
// at /var/run/wireguard/IFNAME.sock, is configured with wg(8), and daemonises unless asked
// not to. It exits on SIGINT/SIGTERM, when its interface is deleted, or when its socket is.
// `meshwg --config FILE IFNAME` is mesh mode: the same daemon plus the control plane
// (control/mesh.h), which configures the interface and the device from FILE and gathers
// endpoint candidates; `meshwg status` shows them.
// `meshwg stun HOST:PORT` sends one STUN binding request (RFC 8489) and prints the mapped
// address; "stun" as the first argument is that command, never an interface name.
//
// Threads: main (signals, liveness checks), the UAPI server thread, the device's threads
// (see dataplane/device.h) and in mesh mode the control thread (control/mesh.h). All are started after the daemonising fork.
#include <fcntl.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "control/device_uapi.h"
#include "control/driver.h"
#include "control/mesh.h"
#include "control/mesh_config.h"
#include "control/resolve.h"
#include "control/status.h"
#include "control/stun.h"
#include "control/uapi_client.h"
#include "control/uapi_server.h"
#include "crypto/primitives.h"
#include "dataplane/bind_linux.h"
#include "dataplane/device.h"
#include "tun/tun_linux.h"

namespace {

constexpr const char* kSocketDir = "/var/run/wireguard";
constexpr int kDefaultMtu = 1420;  // as wireguard-go: 1500 minus IPv6 + UDP + WireGuard overhead

bool env_true(const char* name) {
  const char* v = std::getenv(name);
  return v && (std::strcmp(v, "1") == 0 || std::strcmp(v, "true") == 0);
}

void setup_logging(bool daemon, const std::string& ifname) {
  std::shared_ptr<spdlog::logger> logger;
  if (daemon)
    logger = spdlog::syslog_logger_mt("meshwg", "meshwg(" + ifname + ")", LOG_PID, LOG_DAEMON);
  else
    logger = spdlog::stderr_color_mt("meshwg");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern(daemon ? "%v" : "%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  const char* lvl = std::getenv("LOG_LEVEL");
  std::string level = lvl ? lvl : "info";
  if (level == "debug" || level == "verbose")
    spdlog::set_level(spdlog::level::debug);
  else if (level == "error")
    spdlog::set_level(spdlog::level::err);
  else if (level == "silent")
    spdlog::set_level(spdlog::level::off);
  else
    spdlog::set_level(spdlog::level::info);
}

// True when a live process answers on the interface's UAPI socket.
bool instance_running(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
  ::close(fd);
  return up;
}

int run_daemon(const std::string& ifname, bool foreground, const std::string& config_path) {
  if (ifname.empty() || ifname.size() >= 16 || ifname.find('/') != std::string::npos) {
    std::cerr << "meshwg: invalid interface name '" << ifname << "'\n";
    return 1;
  }
  if (!meshwg::crypto::init()) {
    std::cerr << "meshwg: libsodium initialisation failed\n";
    return 1;
  }
  // Mesh mode: the config is read (and every error in it reported) before anything is created.
  std::optional<meshwg::control::MeshConfig> mesh_cfg;
  if (!config_path.empty()) {
    meshwg::control::ConfigError cerr;
    mesh_cfg = meshwg::control::load_mesh_config(config_path, cerr);
    if (!mesh_cfg) {
      std::cerr << "meshwg: " << cerr.message << "\n";
      return 1;
    }
  }
  const std::string sock_path = std::string(kSocketDir) + "/" + ifname + ".sock";
  if (instance_running(sock_path)) {
    std::cerr << "meshwg: interface " << ifname << " is already served by another process ("
              << sock_path << " answers)\n";
    return 1;
  }

  std::string err;
  // MESHWG_NO_OFFLOAD=1 turns off TUN TSO/GRO and UDP GSO/GRO (for A/B measurements and
  // for kernels that misbehave with them).
  const bool offload = !env_true("MESHWG_NO_OFFLOAD");
  const int mtu = mesh_cfg && mesh_cfg->interface.mtu ? int(*mesh_cfg->interface.mtu) : kDefaultMtu;
  auto tun = meshwg::tun::LinuxTun::create(ifname, mtu, err, offload);
  if (!tun) {
    std::cerr << "meshwg: cannot create TUN interface " << ifname << ": " << err << "\n";
    return 1;
  }
  meshwg::dataplane::LinuxBind bind(
      meshwg::dataplane::LinuxBindOptions{.gso = offload, .gro = offload});
  meshwg::dataplane::SystemClock clock;
  // MESHWG_WORKERS: encrypt/decrypt worker threads (default: one per core).
  meshwg::dataplane::DeviceOptions dev_opts;
  if (const char* w = std::getenv("MESHWG_WORKERS"); w && *w) dev_opts.workers = std::atoi(w);
  auto device = std::make_unique<meshwg::dataplane::Device>(*tun, bind, clock, dev_opts);
  // Mesh mode's control plane reaches the device only through this channel (DESIGN.md).
  meshwg::dataplane::ConfigChannel channel;
  if (mesh_cfg) device->attach_config_channel(&channel);
  meshwg::control::DeviceUapi handler(*device);
  meshwg::control::UapiServer uapi(ifname, handler, kSocketDir);
  if (!uapi.listen(err)) {
    std::cerr << "meshwg: " << err << "\n";
    return 1;
  }

  if (!foreground) {
    // The socket already listens, so `wg` works as soon as the parent returns (wg-quick
    // relies on this).
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::cerr << "meshwg: fork: " << std::strerror(errno) << "\n";
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
  }
  setup_logging(!foreground, ifname);

  // Signals are taken synchronously by the main thread; block them before threads start.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  if (!device->start()) {
    uapi.stop();
    return 1;
  }
  uapi.start();
  spdlog::info("interface {} is up (UAPI {}); TUN offloads {}{}, UDP GSO {} GRO {}", ifname,
               sock_path, tun->vnet_hdr() ? "on" : "off", tun->uso() ? " (with USO)" : "",
               bind.gso_enabled(4) ? "on" : "off", bind.gro_enabled(4) ? "on" : "off");

  int exit_code = 0;
  meshwg::control::ChannelDriver driver(channel);
  std::unique_ptr<meshwg::control::MeshControl> mesh;
  if (mesh_cfg) {
    meshwg::control::MeshOptions mo;
    mo.ifname = ifname;
    mo.status_socket = std::string(kSocketDir) + "/" + ifname + ".mesh";
    // MESHWG_NO_PORTMAP=1: do not ask gateways for UPnP-IGD / NAT-PMP port mappings.
    mo.portmap = !env_true("MESHWG_NO_PORTMAP");
    mesh = std::make_unique<meshwg::control::MeshControl>(*mesh_cfg, driver, mo);
    if (!mesh->setup(err) || !mesh->start(err)) {
      spdlog::error("{}: {}", config_path, err);
      mesh.reset();
      exit_code = 1;
    } else {
      spdlog::info("mesh mode: {} listens on UDP {}, check socket UDP {}", ifname,
                   mesh->listen_port(), mesh->check_port());
    }
  }

  for (; exit_code == 0;) {
    timespec timeout{1, 0};
    const int sig = sigtimedwait(&set, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("received signal {}, shutting down", sig);
      break;
    }
    if (!tun->exists()) {
      spdlog::info("interface {} was removed, shutting down", ifname);
      break;
    }
    if (uapi.socket_removed()) {
      spdlog::info("UAPI socket {} was removed, shutting down", sock_path);
      break;
    }
  }
  if (mesh) mesh->stop();
  mesh.reset();
  uapi.stop();
  device->stop();
  // Until `meshwg status` shows them, the drop counters are reported once, on the way out.
  for (size_t d = 0; d < size_t(meshwg::dataplane::Drop::kCount); ++d) {
    const auto reason = meshwg::dataplane::Drop(d);
    if (const uint64_t n = device->drops(reason))
      spdlog::info("dropped {} packets: {}", n, meshwg::dataplane::drop_name(reason));
  }
  device.reset();
  tun->close();
  tun.reset();
  return exit_code;
}

std::string describe_failure(const meshwg::control::StunQueryResult& r,
                             const meshwg::dataplane::Endpoint& server,
                             const meshwg::control::StunRetransmit& rt) {
  using meshwg::control::StunQueryError;
  const std::string who = server.str();
  switch (r.error) {
    case StunQueryError::kTimeout: {
      std::string s = "no response from " + who + " after " + std::to_string(r.requests_sent) +
                      " requests (" + std::to_string(meshwg::control::stun_give_up_offset(rt).count()) + " ms)";
      if (r.ignored > 0)
        s += "; ignored " + std::to_string(r.ignored) + " unrelated or malformed datagrams";
      return s;
    }
    case StunQueryError::kErrorResponse:
      return who + " answered with error " +
             (r.server_error ? std::to_string(r.server_error->code) + " " + r.server_error->reason
                             : std::string("(no code)"));
    default: {
      std::string s = who + ": " + meshwg::control::stun_query_error_name(r.error);
      if (r.sys_errno != 0) s += std::string(" (") + std::strerror(r.sys_errno) + ")";
      return s;
    }
  }
}

// `meshwg stun HOST:PORT`: prints the mapped address on stdout. Addresses of HOST are tried
// in order only while the failure is local (no socket, no route, ICMP unreachable): a silent
// server is not asked again under another address, which would multiply the wait.
int run_stun(const std::string& target, const meshwg::control::StunRetransmit& rt) {
  using meshwg::control::StunQueryError;
  if (!meshwg::crypto::init()) {
    std::cerr << "meshwg stun: libsodium initialisation failed\n";
    return 1;
  }
  std::string err;
  meshwg::control::HostPort hp;
  if (!meshwg::control::split_host_port(target, hp, err)) {
    std::cerr << "meshwg stun: " << err << "\n";
    return 2;
  }
  const auto servers = meshwg::control::resolve(hp, err);
  if (servers.empty()) {
    std::cerr << "meshwg stun: " << err << "\n";
    return 1;
  }
  const meshwg::control::StunQueryOptions opt{.retransmit = rt};
  for (size_t i = 0; i < servers.size(); ++i) {
    const auto r = meshwg::control::stun_query(servers[i], -1, opt);
    if (r.ok()) {
      std::cout << r.mapped.str() << "\n";
      return 0;
    }
    std::cerr << "meshwg stun: " << describe_failure(r, servers[i], rt) << "\n";
    const bool local = r.error == StunQueryError::kSocket || r.error == StunQueryError::kSend ||
                       r.error == StunQueryError::kUnreachable;
    if (!local) break;
  }
  return 1;
}

// `meshwg stun ...` is dispatched before the daemon's parser so that parser, and with it every
// `meshwg [-f] IFNAME` command line and error, stays exactly as wireguard-go users expect.
int stun_main(int argc, char** argv) {
  CLI::App app{"meshwg stun: one STUN binding query (RFC 8489); prints the mapped address"};
  app.name("meshwg stun");
  std::string target;
  unsigned rto_ms = 500;
  meshwg::control::StunRetransmit rt;
  app.add_option("HOST:PORT", target, "STUN server ([ADDR]:PORT for IPv6)")->required();
  app.add_option("--rto", rto_ms, "initial retransmission timeout in ms")
      ->capture_default_str()
      ->check(CLI::Range(1u, 60000u));
  app.add_option("--requests", rt.rc, "requests to send at most (RFC 8489 Rc)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 16u));
  CLI11_PARSE(app, argc, argv);
  rt.rto = std::chrono::milliseconds(rto_ms);
  if (!rt.valid()) {
    std::cerr << "meshwg stun: --rto and --requests give a schedule over an hour\n";
    return 2;
  }
  return run_stun(target, rt);
}

// One interface's status, or nullopt with a message on stderr.
std::optional<meshwg::control::InterfaceStatus> read_status(const std::string& ifname) {
  std::string err;
  const std::string path = std::string(kSocketDir) + "/" + ifname + ".sock";
  auto reply = meshwg::control::uapi_get(path, err);
  if (!reply) {
    std::cerr << "meshwg status: " << err << "\n";
    return std::nullopt;
  }
  meshwg::control::ParseError perr;
  auto snap = meshwg::control::parse_get(*reply, perr);
  sodium_memzero(reply->data(), reply->size());  // it carries the private key in hex
  if (!snap) {
    std::cerr << "meshwg status: " << ifname << ": bad reply: " << perr.message << "\n";
    return std::nullopt;
  }
  auto st = meshwg::control::status_from_snapshot(ifname, *snap, std::chrono::system_clock::now());
  // Mesh mode adds the control plane's view; without one (plain `meshwg IFNAME`, or
  // wireguard-go) there is no socket and nothing to add.
  const std::string mesh_path = std::string(kSocketDir) + "/" + ifname + ".mesh";
  int sys_errno = 0;
  if (auto doc = meshwg::control::read_mesh_status(mesh_path, err, &sys_errno)) {
    if (!meshwg::control::merge_mesh_status(st, *doc))
      std::cerr << "meshwg status: " << ifname << ": bad control-plane status document\n";
  } else if (sys_errno != ENOENT) {
    std::cerr << "meshwg status: " << err << "\n";
  }
  return st;
}

// `meshwg status [--json] [IFNAME]`: reads every device (or one) through its UAPI socket, so
// it also shows wireguard-go interfaces. The JSON schema is documented in control/status.h.
int status_main(int argc, char** argv) {
  CLI::App app{"meshwg status: interfaces, candidates and peers (path, endpoint, handshake, bytes)"};
  app.name("meshwg status");
  bool json = false;
  std::string ifname;
  app.add_flag("--json", json, "print JSON (schema in control/status.h and the README)");
  app.add_option("IFNAME", ifname, "only this interface");
  CLI11_PARSE(app, argc, argv);
  if (sodium_init() < 0) return 1;
  const std::vector<std::string> names =
      ifname.empty() ? meshwg::control::uapi_interfaces(kSocketDir) : std::vector{ifname};
  const auto now = std::chrono::system_clock::now();
  nlohmann::json all = nlohmann::json::array();
  int rc = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    auto st = read_status(names[i]);
    if (!st) {
      rc = 1;
      continue;
    }
    if (json)
      all.push_back(meshwg::control::to_json(*st));
    else
      std::cout << (i ? "\n" : "") << meshwg::control::to_text(*st, now);
  }
  if (json) std::cout << (ifname.empty() ? all.dump(2) : (all.empty() ? std::string("null") : all[0].dump(2))) << "\n";
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "stun") == 0) return stun_main(argc - 1, argv + 1);
  if (argc >= 2 && std::strcmp(argv[1], "status") == 0) return status_main(argc - 1, argv + 1);

  CLI::App app{"meshwg: userspace WireGuard (wireguard-go compatible)"};
  bool foreground = false;
  std::string ifname, config;
  app.add_flag("-f,--foreground", foreground, "stay in the foreground");
  app.add_option("--config", config,
                 "mesh mode: wg-quick style file with [WGStun] / [Relay] (README, "
                 "control/mesh_config.h)");
  app.add_option("IFNAME", ifname, "interface to create")->required();
  app.set_version_flag("--version", "meshwg 0.1.0");
  app.footer(
      "Also: meshwg stun HOST:PORT            one STUN binding query (see meshwg stun --help)\n"
      "      meshwg status [--json] [IFNAME]  what each interface is doing");
  CLI11_PARSE(app, argc, argv);
  if (env_true("WG_PROCESS_FOREGROUND")) foreground = true;
  return run_daemon(ifname, foreground, config);
}
