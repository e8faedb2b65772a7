// The UAPI socket: a UNIX stream socket at /var/run/wireguard/IFNAME.sock (mode 0600, its
// directory 0755), serving get=1 / set=1 requests (framing per wireguard.com/xplatform) on a
// thread of its own. The server only frames and parses; the Handler applies changes.
//
// Threads: accept_loop() and every connection run on the server thread (one connection at a
// time, with a read timeout, so a stuck client cannot hold the device's configuration).
#pragma once

#include <atomic>
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

  // Serves one connection on fd until EOF/error (exposed for tests and fuzzing).
  void serve(int fd);

 private:
  std::string ifname_;
  std::string dir_;
  std::string path_;
  UapiHandler& handler_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
  std::atomic<bool> running_{false};
};

}  // namespace meshwg::control
