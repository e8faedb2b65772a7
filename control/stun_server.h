// Plain STUN server (RFC 8489 Binding, no authentication) for meshwg-server, and the UDP
// socket both control-plane UDP services (this one and the WG-STUN responder,
// control/wgstun_server.h) read and answer on.
//
// What the server does with a datagram (stun_server_answer, sans-I/O):
//   binding request, all attributes understood  ─► success: XOR-MAPPED-ADDRESS of the
//                                                   request's source, SOFTWARE, FINGERPRINT
//   binding request with unknown comprehension-  ─► 420 (Unknown Attribute) listing them in
//   required attributes (§6.3.1.1)                  UNKNOWN-ATTRIBUTES, SOFTWARE, FINGERPRINT
//   anything else (indication, response, not     ─► ignored and counted (no 400: a malformed
//   STUN, malformed; see StunError)                 request is not worth a reply)
// MESSAGE-INTEGRITY, if a request carries one, is not checked: the server has no credentials
// and a Binding needs none (§9).
//
// Threads: a StunServer is driven by one thread (meshwg-server's poll loop); its counters may
// be read from any thread. Memory and work per call are bounded: one fixed receive buffer and
// at most StunServerOptions::max_batch datagrams per on_readable().
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "control/stun.h"
#include "dataplane/ip.h"

namespace meshwg::control {

// ---- UDP socket of a control-plane service ----

// Socket set-up the control-plane servers share (this UDP socket, the relay's TCP listener).
// An IPv6 socket takes IPv4 too, whatever net.ipv6.bindv6only says: "[::]" means every address.
void make_dual_stack(int fd, int family);
// The address a bound socket has (the kernel's port for port 0); false with err set.
[[nodiscard]] bool bound_address(int fd, dataplane::Endpoint& out, std::string& err);

// A non-blocking UDP socket bound to one address. Replies leave from the address a request
// arrived at (IP_PKTINFO / IPV6_PKTINFO), so a server bound to a wildcard address on a
// multi-homed host still answers from the address the client (and its NAT) talked to. A
// socket bound to "[::]" also takes IPv4; such sources are reported as plain IPv4 endpoints.
class UdpServerSocket {
 public:
  UdpServerSocket() = default;
  ~UdpServerSocket();
  UdpServerSocket(const UdpServerSocket&) = delete;
  UdpServerSocket& operator=(const UdpServerSocket&) = delete;

  // Opens and binds. On failure returns false with a message naming the address in err.
  [[nodiscard]] bool open(const dataplane::Endpoint& bind, std::string& err);
  void close();
  int fd() const { return fd_; }
  // The bound address (with the kernel's port when port 0 was asked for).
  const dataplane::Endpoint& local() const { return local_; }

  // Reads one datagram into buf. Returns its length, or -1 when nothing is queued or the read
  // failed (errno says which; the caller stops reading either way). `from` is the source,
  // with `local`/`local_ifindex` set to where it arrived. truncated: the datagram was longer
  // than buf and its tail is lost.
  ssize_t recv(std::span<uint8_t> buf, dataplane::Endpoint& from, bool& truncated);
  // Sends one datagram without blocking. False when the kernel refused it (full buffer, no
  // route): the caller counts the drop.
  [[nodiscard]] bool send(std::span<const uint8_t> data, const dataplane::Endpoint& to);

 private:
  int fd_ = -1;
  int family_ = 0;  // AF_INET or AF_INET6
  dataplane::Endpoint local_;
};

// At most one log line per interval: a flood of junk must not become a flood of logs.
class LogLimiter {
 public:
  explicit LogLimiter(std::chrono::steady_clock::duration interval = std::chrono::seconds(1))
      : interval_(interval) {}
  // True when a line may be logged now (and starts a new interval).
  [[nodiscard]] bool allow(std::chrono::steady_clock::time_point now);

 private:
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_ = false;
};

// Normalises a source address: an IPv4-mapped IPv6 address ("::ffff:a.b.c.d", what a
// dual-stack socket reports for IPv4) becomes the IPv4 endpoint; anything else is returned
// unchanged (the local address fields too).
[[nodiscard]] dataplane::Endpoint unmap_v4_endpoint(const dataplane::Endpoint& e);

// ---- the STUN server ----

// What became of a datagram. Each value has a counter.
enum class StunServerCounter : uint8_t {
  kSuccess,            // answered with a binding success response
  kUnknownAttributes,  // answered 420 with UNKNOWN-ATTRIBUTES
  kNotRequest,         // ignored: an indication, a success or an error response
  kMalformed,          // ignored: stun_decode refused it (the reason is counted too)
  kTruncated,          // ignored: longer than the receive buffer
  kSendFailed,         // an answer the socket refused
  kCount,
};
[[nodiscard]] const char* stun_server_counter_name(StunServerCounter c);

struct StunServerReply {
  StunServerCounter outcome = StunServerCounter::kMalformed;
  StunError error = StunError::kOk;  // kMalformed: why
  std::vector<uint8_t> datagram;     // the answer; empty when the datagram is ignored
};

// The answer to one datagram that arrived from `from` (sans-I/O; also used inside the
// WG-STUN tunnel, where `from` is the client's outer endpoint). software may be empty.
[[nodiscard]] StunServerReply stun_server_answer(std::span<const uint8_t> datagram,
                                                 const dataplane::Endpoint& from,
                                                 std::string_view software);

struct StunServerOptions {
  std::string software = "meshwg-server";  // SOFTWARE in answers; empty = none
  size_t max_batch = 64;                   // datagrams per on_readable() (fairness)
};

class StunServer {
 public:
  // A request longer than this is ignored (kTruncated); real binding requests are < 600 bytes.
  static constexpr size_t kMaxDatagram = 2048;

  explicit StunServer(StunServerOptions opt = {});
  [[nodiscard]] bool open(const dataplane::Endpoint& bind, std::string& err) {
    return sock_.open(bind, err);
  }
  int fd() const { return sock_.fd(); }
  const dataplane::Endpoint& local() const { return sock_.local(); }

  // Reads and answers up to max_batch datagrams without blocking; the poll loop calls it when
  // fd() is readable. Returns how many were read.
  size_t on_readable();

  uint64_t count(StunServerCounter c) const {
    return counters_[size_t(c)].load(std::memory_order_relaxed);
  }
  uint64_t malformed(StunError e) const {
    return malformed_[size_t(e)].load(std::memory_order_relaxed);
  }

 private:
  void bump(StunServerCounter c);
  StunServerOptions opt_;
  UdpServerSocket sock_;
  std::array<uint8_t, kMaxDatagram> buf_{};
  // Single writer (the driving thread); relaxed atomics so other threads may read.
  std::array<std::atomic<uint64_t>, size_t(StunServerCounter::kCount)> counters_{};
  std::array<std::atomic<uint64_t>, size_t(StunError::kCount)> malformed_{};
  LogLimiter log_limit_;
};

}  // namespace meshwg::control
