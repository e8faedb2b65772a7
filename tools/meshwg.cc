// meshwg: the userspace WireGuard daemon. `meshwg [-f|--foreground] IFNAME` behaves like
// `wireguard-go IFNAME` (wireguard.com/xplatform): it creates the TUN, serves the UAPI socket
// at /var/run/wireguard/IFNAME.sock, is configured with wg(8), and daemonises unless asked
// not to. It exits on SIGINT/SIGTERM, when its interface is deleted, or when its socket is.
//
// Threads: main (signals, liveness checks), the UAPI server thread, and the device's
// threads (see dataplane/device.h). All are started after the daemonising fork.
#include <fcntl.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "control/device_uapi.h"
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

int run_daemon(const std::string& ifname, bool foreground) {
  if (ifname.empty() || ifname.size() >= 16 || ifname.find('/') != std::string::npos) {
    std::cerr << "meshwg: invalid interface name '" << ifname << "'\n";
    return 1;
  }
  if (!meshwg::crypto::init()) {
    std::cerr << "meshwg: libsodium initialisation failed\n";
    return 1;
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
  auto tun = meshwg::tun::LinuxTun::create(ifname, kDefaultMtu, err, offload);
  if (!tun) {
    std::cerr << "meshwg: cannot create TUN interface " << ifname << ": " << err << "\n";
    return 1;
  }
  meshwg::dataplane::LinuxBind bind(
      meshwg::dataplane::LinuxBindOptions{.gso = offload, .gro = offload});
  meshwg::dataplane::SystemClock clock;
  auto device = std::make_unique<meshwg::dataplane::Device>(*tun, bind, clock);
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
  for (;;) {
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"meshwg: userspace WireGuard (wireguard-go compatible)"};
  bool foreground = false;
  std::string ifname;
  app.add_flag("-f,--foreground", foreground, "stay in the foreground");
  app.add_option("IFNAME", ifname, "interface to create")->required();
  app.set_version_flag("--version", "meshwg 0.1.0");
  CLI11_PARSE(app, argc, argv);
  if (env_true("WG_PROCESS_FOREGROUND")) foreground = true;
  return run_daemon(ifname, foreground);
}
