// UAPI client (see uapi_client.h): one connection per request, as wg(8) makes.
#include "control/uapi_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "control/uapi.h"

namespace meshwg::control {

namespace {
constexpr int kTimeoutMs = 2000;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool wait_for(int fd, short events) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int r = ::poll(&p, 1, kTimeoutMs);
    if (r > 0) return true;
    if (r == 0 || errno != EINTR) return false;
  }
}
// A connected unix stream socket (non-blocking: a unix connect completes at once or fails),
// or -1 with a message in error and the errno in *sys_errno.
int connect_unix(const std::string& path, std::string& error, int* sys_errno) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    error = path + ": path too long for a unix socket";
    return -1;
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
                 errno != EINPROGRESS)) {
    if (sys_errno) *sys_errno = errno;
    error = path + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}
}  // namespace

std::optional<std::string> uapi_get(const std::string& path, std::string& error) {
  Fd s{connect_unix(path, error, nullptr)};
  if (s.fd < 0) return std::nullopt;
  const std::string_view req = "get=1\n\n";
  for (size_t off = 0; off < req.size();) {
    if (!wait_for(s.fd, POLLOUT)) {
      error = path + ": timed out sending the request";
      return std::nullopt;
    }
    const ssize_t n = ::send(s.fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      error = path + ": " + std::strerror(errno);
      return std::nullopt;
    }
    if (n > 0) off += size_t(n);
  }
  std::string reply;
  char buf[16384];
  for (;;) {
    // The reply ends with an empty line; "\n\n" at the very start cannot occur (the errno
    // line is always there).
    if (const size_t end = reply.find("\n\n"); end != std::string::npos) {
      reply.resize(end + 1);
      return reply;
    }
    if (reply.size() > kMaxSetBytes) {
      error = path + ": reply too large";
      return std::nullopt;
    }
    if (!wait_for(s.fd, POLLIN)) {
      error = path + ": timed out waiting for the reply";
      return std::nullopt;
    }
    const ssize_t n = ::recv(s.fd, buf, sizeof(buf), 0);
    if (n == 0) {
      error = path + ": connection closed before the end of the reply";
      return std::nullopt;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      error = path + ": " + std::strerror(errno);
      return std::nullopt;
    }
    reply.append(buf, size_t(n));
  }
}

std::optional<std::string> read_mesh_status(const std::string& path, std::string& error,
                                            int* sys_errno) {
  constexpr size_t kMaxDocument = size_t{1} << 20;
  Fd s{connect_unix(path, error, sys_errno)};
  if (s.fd < 0) return std::nullopt;
  std::string doc;
  char buf[16384];
  for (;;) {
    if (!wait_for(s.fd, POLLIN)) {
      error = path + ": timed out";
      return std::nullopt;
    }
    const ssize_t n = ::recv(s.fd, buf, sizeof(buf), 0);
    if (n == 0) return doc;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      error = path + ": " + std::strerror(errno);
      return std::nullopt;
    }
    doc.append(buf, size_t(n));
    if (doc.size() > kMaxDocument) {
      error = path + ": document too large";
      return std::nullopt;
    }
  }
}

std::vector<std::string> uapi_interfaces(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    if (f.size() > 5 && f.ends_with(".sock") && e.is_socket(ec))
      names.push_back(f.substr(0, f.size() - 5));
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace meshwg::control
