// The UAPI socket: a UNIX stream socket at /var/run/wireguard/IFNAME.sock (mode 0600, its
// directory 0755), serving get=1 / set=1 requests (framing per wireguard.com/xplatform) on a
// thread of its own. The server only frames and parses; the Handler applies changes.
//
// Threads: accept_loop() and every connection run on the server thread (one connection at a
// time, with a read timeout, so a stuck client cannot hold the device's configuration).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "control/uapi.h"

namespace meshwg::control {

class UapiHandler {
 public:
  virtual ~UapiHandler() = default;
  // Applies a whole, already validated set atomically. Returns 0 or a positive errno.
  virtual int apply_set(const SetRequest& req) = 0;
  virtual DeviceSnapshot snapshot() = 0;
};

class UapiServer {
 public:
  UapiServer(std::string ifname, UapiHandler& handler, std::string dir = "/var/run/wireguard");
  ~UapiServer();
  UapiServer(const UapiServer&) = delete;
  UapiServer& operator=(const UapiServer&) = delete;

  // Creates the directory and socket. Fails (returns false, err set) if another process
  // answers on the socket ("in use"); removes a stale socket file.
  [[nodiscard]] bool listen(std::string& err);
  void start();   // spawns the server thread
  void stop();    // stops the thread and removes the socket file
  const std::string& path() const { return path_; }
  // Set when the socket file was deleted by someone else (wireguard-go exits then).
  bool socket_removed() const;

  // Serves one connection on fd until EOF/error (exposed for tests and fuzzing). fd must be a
  // stream socket; serve() does not close it. Never throws.
  void serve(int fd);

  // How long a connection may stay silent (between or inside requests) before it is closed.
  // Default 5 s; call before start().
  void set_idle_timeout(std::chrono::milliseconds t) { idle_timeout_ = t; }

 private:
  void accept_loop();
  void serve_ops(int fd);
  bool log_allowed();

  std::string ifname_;
  std::string dir_;
  std::string path_;
  UapiHandler& handler_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::chrono::milliseconds idle_timeout_{5000};
  // Identity of the socket file we bound, for socket_removed() and a safe unlink in stop().
  dev_t sock_dev_ = 0;
  ino_t sock_ino_ = 0;
  bool have_sock_ = false;
  // Warning rate limit (server thread only): at most kLogBurst per 10 s window.
  std::chrono::steady_clock::time_point log_window_{};
  int log_count_ = 0;
};

}  // namespace meshwg::control
