// The UAPI UNIX socket server (wireguard.com/xplatform "get=1"/"set=1" framing; socket
// lifecycle as wireguard-go ipc/uapi_unix.go). Frames requests, hands parsed sets to the
// UapiHandler and writes "errno=N\n\n" replies (N positive, as boringtun; see uapi.md).
//
// Threads: one server thread runs accept_loop() and serves one connection at a time. Every
// wait is a poll() on the connection and the stop pipe with the idle timeout, so a silent
// client is dropped after idle_timeout_ and stop() never waits for a client. This replaces
// SO_RCVTIMEO/SO_SNDTIMEO, which could not be interrupted by stop().
#include "control/uapi_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

namespace meshwg::control {
namespace {

using Clock = std::chrono::steady_clock;

// A whole request (after its operation line) must arrive within this time, so a client that
// trickles one byte per idle period cannot hold the only connection slot for long.
constexpr auto kRequestDeadline = std::chrono::seconds(60);
constexpr int kLogBurst = 20;
constexpr auto kLogWindow = std::chrono::seconds(10);

void wipe_string(std::string& s) {
  crypto::wipe(s.data(), s.size());
  s.clear();
}

// Buffered line I/O over a stream socket with timeouts and a stop fd (-1 = none).
class Conn {
 public:
  enum class Read { kLine, kEof, kTooLong, kFailed };

  Conn(int fd, int stop_fd, std::chrono::milliseconds idle) : fd_(fd), stop_fd_(stop_fd), idle_(idle) {}
  ~Conn() { crypto::wipe(buf_.data(), buf_.size()); }

  // Reads one line without its '\n' into out (replacing its contents). A partial line at EOF
  // is dropped, like wireguard-go's ReadString.
  Read read_line(std::string& out, Clock::time_point deadline) {
    wipe_string(out);
    for (;;) {
      const char* begin = buf_.data() + pos_;
      const size_t avail = len_ - pos_;
      const void* nl = std::memchr(begin, '\n', avail);
      const size_t take = nl ? size_t(static_cast<const char*>(nl) - begin) : avail;
      if (out.size() + take > kMaxLineLength) return Read::kTooLong;
      out.append(begin, take);
      if (nl) {
        pos_ += take + 1;
        return Read::kLine;
      }
      pos_ = len_ = 0;
      if (!wait(POLLIN, deadline)) return Read::kFailed;
      const ssize_t n = ::recv(fd_, buf_.data(), buf_.size(), MSG_DONTWAIT);
      if (n == 0) return Read::kEof;
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        return Read::kFailed;
      }
      len_ = size_t(n);
    }
  }

  bool write_all(std::string_view s) {
    const auto deadline = Clock::now() + kRequestDeadline;
    while (!s.empty()) {
      const ssize_t n = ::send(fd_, s.data(), s.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        s.remove_prefix(size_t(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait(POLLOUT, deadline)) return false;
        continue;
      }
      return false;
    }
    return true;
  }

 private:
  // True when fd_ is ready (or in error, which the following call reports); false on idle
  // timeout, deadline or stop.
  bool wait(short events, Clock::time_point deadline) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      const auto timeout = std::min(left, idle_);
      pollfd p[2] = {{fd_, events, 0}, {stop_fd_, POLLIN, 0}};  // poll ignores fd -1
      const int r = ::poll(p, 2, int(timeout.count()));
      if (r < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      if (r == 0) return false;
      if (p[1].revents != 0) return false;
      if (p[0].revents != 0) return true;
    }
  }

  int fd_;
  int stop_fd_;
  std::chrono::milliseconds idle_;
  std::array<char, 16384> buf_{};
  size_t pos_ = 0;
  size_t len_ = 0;
};

std::string errno_reply(int e) { return "errno=" + std::to_string(e) + "\n\n"; }

// Creates dir and its missing parents with mode 0755. Directories we create are chmod'ed
// explicitly so a restrictive umask does not lock wg(8) out; existing ones are left alone.
bool make_dirs(const std::string& dir, std::string& err) {
  std::string cur;
  size_t i = 0;
  while (i <= dir.size()) {
    const size_t slash = dir.find('/', i);
    const size_t end = slash == std::string::npos ? dir.size() : slash;
    cur = dir.substr(0, end);
    i = end + 1;
    if (cur.empty()) continue;  // leading '/'
    if (::mkdir(cur.c_str(), 0755) == 0) {
      if (::chmod(cur.c_str(), 0755) != 0) {
        err = "chmod " + cur + ": " + std::strerror(errno);
        return false;
      }
    } else if (errno != EEXIST) {
      err = "mkdir " + cur + ": " + std::strerror(errno);
      return false;
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    err = "not a directory: " + dir;
    return false;
  }
  return true;
}

}  // namespace

UapiServer::UapiServer(std::string ifname, UapiHandler& handler, std::string dir)
    : ifname_(std::move(ifname)), dir_(std::move(dir)), handler_(handler) {
  path_ = dir_ + "/" + ifname_ + ".sock";
}

UapiServer::~UapiServer() { stop(); }

bool UapiServer::listen(std::string& err) {
  if (listen_fd_ >= 0) {
    err = "already listening on " + path_;
    return false;
  }
  if (ifname_.empty() || ifname_.find('/') != std::string::npos) {
    err = "bad interface name '" + ifname_ + "'";
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof(addr.sun_path)) {
    err = "socket path too long: " + path_;
    return false;
  }
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  if (!make_dirs(dir_, err)) return false;

  // An existing socket file is either a live instance (refuse) or left over from a crash
  // (remove). Anything that is not a socket is not ours to delete.
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      err = "exists and is not a socket: " + path_;
      return false;
    }
    // Non-blocking, so a live instance with a full backlog (EAGAIN) cannot hang us.
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) {
      err = std::string("socket: ") + std::strerror(errno);
      return false;
    }
    const int cr = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    const bool live = cr == 0 || errno == EAGAIN || errno == EINPROGRESS;
    ::close(probe);
    if (live) {
      err = "unix socket in use: " + path_;
      return false;
    }
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
      err = "unlink stale " + path_ + ": " + std::strerror(errno);
      return false;
    }
  }

  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    err = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  // bind() creates the file with the umask applied, and fchmod() on a socket fd does not
  // reach that file. So narrow the umask around bind (as wireguard-go does; process-wide,
  // but only for this instant) and chmod afterwards in case the umask was changed meanwhile.
  const mode_t old_mask = ::umask(0077);
  const int br = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  ::umask(old_mask);
  if (br != 0) {
    ::close(fd);
    err = bind_errno == EADDRINUSE ? "unix socket in use: " + path_
                                   : "bind " + path_ + ": " + std::strerror(bind_errno);
    return false;
  }
  if (::chmod(path_.c_str(), 0600) != 0 || ::lstat(path_.c_str(), &st) != 0 ||
      ::listen(fd, 16) != 0) {
    err = path_ + ": " + std::strerror(errno);
    ::close(fd);
    ::unlink(path_.c_str());
    return false;
  }
  sock_dev_ = st.st_dev;
  sock_ino_ = st.st_ino;
  have_sock_ = true;
  listen_fd_ = fd;
  return true;
}

void UapiServer::start() {
  if (listen_fd_ < 0 || thread_.joinable()) return;
  if (::pipe2(stop_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
    spdlog::error("uapi: pipe: {}", std::strerror(errno));
    stop_pipe_[0] = stop_pipe_[1] = -1;
    return;
  }
  running_ = true;
  thread_ = std::thread([this] { accept_loop(); });
}

void UapiServer::stop() {
  if (thread_.joinable()) {
    const char c = 1;
    // The pipe is never drained, so every later poll() in the thread sees it too.
    while (::write(stop_pipe_[1], &c, 1) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  running_ = false;
  for (int& fd : stop_pipe_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    // Only unlink the file we created: another instance may have replaced it.
    struct stat st {};
    if (have_sock_ && ::lstat(path_.c_str(), &st) == 0 && st.st_dev == sock_dev_ &&
        st.st_ino == sock_ino_)
      ::unlink(path_.c_str());
    have_sock_ = false;
  }
}

bool UapiServer::socket_removed() const {
  if (!have_sock_) return false;
  struct stat st {};
  if (::lstat(path_.c_str(), &st) != 0) return errno == ENOENT || errno == ENOTDIR;
  return st.st_dev != sock_dev_ || st.st_ino != sock_ino_;
}

bool UapiServer::log_allowed() {
  const auto now = Clock::now();
  if (now - log_window_ > kLogWindow) {
    log_window_ = now;
    log_count_ = 0;
  }
  return ++log_count_ <= kLogBurst;
}

void UapiServer::accept_loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    const int r = ::poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      spdlog::error("uapi: poll: {}", std::strerror(errno));
      return;
    }
    if (p[1].revents != 0) return;
    if (p[0].revents & (POLLERR | POLLNVAL)) {
      spdlog::error("uapi: listening socket failed");
      return;
    }
    if (!(p[0].revents & POLLIN)) continue;
    const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The pending connection stays queued, so poll would spin; back off briefly.
        if (log_allowed()) spdlog::warn("uapi: accept: {}", std::strerror(errno));
        pollfd s{stop_pipe_[0], POLLIN, 0};
        ::poll(&s, 1, 100);
      }
      continue;  // EAGAIN/ECONNABORTED/EINTR: the client went away
    }
    serve(c);
    ::close(c);
  }
}

void UapiServer::serve(int fd) {
  try {
    serve_ops(fd);
  } catch (const std::exception& e) {
    // bad_alloc from a huge request, or a handler that threw: drop the connection only.
    if (log_allowed()) spdlog::warn("uapi: connection dropped: {}", e.what());
  } catch (...) {
    if (log_allowed()) spdlog::warn("uapi: connection dropped: unknown exception");
  }
}

void UapiServer::serve_ops(int fd) {
  Conn conn(fd, stop_pipe_[0], idle_timeout_);
  std::string line;
  std::string body;
  // Both may hold key material (set lines, get replies): wiped on every way out.
  struct Wiper {
    std::string& a;
    std::string& b;
    ~Wiper() {
      wipe_string(a);
      wipe_string(b);
    }
  } wiper{line, body};

  for (;;) {
    // Between requests only the idle timeout applies.
    if (conn.read_line(line, Clock::time_point::max()) != Conn::Read::kLine) return;
    const auto deadline = Clock::now() + kRequestDeadline;

    if (line == "get=1") {
      // wireguard-go: the byte after "get=1\n" must be '\n', else EINVAL.
      if (conn.read_line(line, deadline) != Conn::Read::kLine) return;
      if (!line.empty()) {
        if (log_allowed()) spdlog::warn("uapi: get: trailing data after get=1");
        if (!conn.write_all(errno_reply(EINVAL))) return;
        continue;
      }
      int rc = 0;
      try {
        body = serialize_get(handler_.snapshot());
      } catch (const std::bad_alloc&) {
        throw;
      } catch (...) {
        rc = ENOANO;  // wireguard-go's "unknown error"
        wipe_string(body);
      }
      body += errno_reply(rc);
      const bool ok = conn.write_all(body);
      wipe_string(body);
      if (!ok) return;
    } else if (line == "set=1") {
      size_t lines = 0;
      bool too_big = false;
      for (;;) {
        const auto r = conn.read_line(line, deadline);
        if (r == Conn::Read::kTooLong && log_allowed())
          spdlog::warn("uapi: set: line longer than {} bytes, closing", kMaxLineLength);
        if (r != Conn::Read::kLine) return;  // EOF or error mid-request: nothing applied
        if (line.empty()) break;
        if (++lines > kMaxSetLines || body.size() + line.size() + 1 > kMaxSetBytes) {
          too_big = true;
          break;
        }
        body += line;
        body += '\n';
      }
      if (too_big) {
        // The rest of the request is still in flight; rather than read it, answer and close.
        if (log_allowed())
          spdlog::warn("uapi: set: more than {} lines or {} bytes, closing", kMaxSetLines,
                       kMaxSetBytes);
        (void)conn.write_all(errno_reply(EINVAL));
        return;
      }
      ParseError err;
      const auto req = parse_set(body, err);
      wipe_string(body);
      int rc = 0;
      if (!req) {
        if (log_allowed()) spdlog::warn("uapi: set rejected: {}", err.message);
        rc = err.errno_value > 0 ? err.errno_value : EINVAL;
      } else {
        try {
          rc = handler_.apply_set(*req);
        } catch (const std::bad_alloc&) {
          throw;
        } catch (...) {
          rc = ENOANO;
        }
        if (rc < 0) rc = -rc;  // the contract is positive; tolerate wireguard-go style
      }
      if (!conn.write_all(errno_reply(rc))) return;
    } else {
      // Unknown operation: wireguard-go closes the connection without a reply.
      if (log_allowed()) spdlog::warn("uapi: unknown operation, closing connection");
      return;
    }
  }
}

}  // namespace meshwg::control
