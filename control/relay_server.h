// The relay of meshwg-server (DESIGN.md "Traversal", "Programs"): a TCP service where clients
// prove possession of their WireGuard static key and then exchange opaque payloads addressed
// by public key (protocol: control/relay_proto.h). It forwards Send as Recv between connected
// clients, answers Ping, reports absent destinations, and does nothing else: payloads are
// sealed end to end by the clients and never looked into.
//
//   accept ─► ServerHello (fresh challenge) ─► "pending" FIFO ── auth_timeout ─► closed
//     │ (max_clients: beyond it closed at once;    │ ClientAuth, proof checked (one X25519)
//     │  max_pending: the oldest pending closed)   ▼
//     │                                        AuthOk ─► "active" LRU by last frame
//     │                                          (same key connected: the old one closed)
//   Send{dst} ─► dst connected? ─ no ─► PeerAbsent (at most 1/s per destination per client)
//                  │ yes
//                  ▼
//   Recv{src} appended to dst's outgoing queue (written at once when the queue is empty;
//   when the queue would exceed max_queue_bytes the frame is dropped and counted: a slow
//   reader never blocks the sender or anyone else)
//
// Bounds. Each connection holds one RelayFrameReader (at most one frame + one read chunk,
// ~80 KiB; before authentication frames longer than a ClientAuth are refused, so an
// unauthenticated connection holds ~100 bytes), an outgoing queue of at most max_queue_bytes,
// and ~0.5 KiB of state. Connections are capped by max_clients (and the fd limit: accept
// errors pause accepting until the next tick instead of spinning). Work per on_readable() is
// bounded: max_events epoll events, per client at most max_reads_per_wake reads of
// kRelayReadChunk bytes (level-triggered epoll comes back for the rest).
//
// Bad input (DESIGN.md "Bad input"): a malformed frame, a failed proof, a frame before
// authentication or a connection silent past auth_timeout closes that connection only, is
// counted (RelayServerCounter, RelayMalformed) and logged with the address and the reason, at
// most one line a second (the next line says how many were not logged). No exceptions other
// than std::bad_alloc (fatal, as everywhere).
//
// Threads: none of its own. One thread drives it: meshwg-server's poll loop polls fd() (an
// epoll fd) for POLLIN and calls on_readable(), and calls on_tick() about once a second (and
// at next_deadline()); tests may call run() on a thread of their own instead. Counters,
// clients() and authenticated() may be read from any thread (relaxed atomics).
#pragma once

#include <sys/epoll.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "control/relay_proto.h"
#include "control/stun_server.h"  // LogLimiter, make_dual_stack, bound_address
#include "control/key_hash.h"
#include "crypto/primitives.h"
#include "dataplane/ip.h"

namespace meshwg::control {

struct RelayServerOptions {
  size_t max_clients = 10000;            // connections at once, authenticated or not
  size_t max_pending = 1024;             // of which not authenticated yet (oldest closed first)
  size_t max_queue_bytes = 256 * 1024;   // outgoing bytes per client (raised to kRelayMaxFrame)
  std::chrono::milliseconds auth_timeout{5000};   // accept to AuthOk
  std::chrono::milliseconds idle_timeout{120000}; // no complete frame for this long (clients Ping)
  size_t max_events = 256;               // epoll events per on_readable()
  size_t max_reads_per_wake = 4;         // reads of kRelayReadChunk per client per event
};

// What happened to connections and frames. Each value has a counter.
enum class RelayServerCounter : uint8_t {
  kAccepted,              // TCP connections accepted
  kRejectedFull,          // closed at once: max_clients connections already
  kAcceptFailed,          // accept() failed (fd limit, memory): accepting paused to the next tick
  kPendingEvicted,        // unauthenticated connection closed to make room (max_pending)
  kAuthenticated,         // AuthOk sent
  kAuthFailed,            // proof did not verify, or a low-order client key: closed
  kAuthTimeout,           // not authenticated within auth_timeout: closed
  kIdleTimeout,           // authenticated, no frame for idle_timeout: closed
  kReplaced,              // closed because the same key authenticated on a new connection
  kMalformed,             // closed for a malformed frame (by reason: malformed())
  kClosedByClient,        // the client closed between frames
  kClosedMidFrame,        // the client closed (or reset) with part of a frame sent
  kClosedError,           // a read or write error other than the above (reset, timeout)
  kFramesForwarded,       // Send frames delivered to the destination's queue or socket
  kBytesForwarded,        // their payload bytes
  kDroppedQueueFull,      // Send frames dropped: the destination's queue was full
  kPeerAbsent,            // PeerAbsent frames sent
  kPeerAbsentSuppressed,  // Send to an absent destination, PeerAbsent rate-limited
  kRepliesDropped,        // Pong / PeerAbsent not sent: the client's own queue was full
  kPings,                 // Ping frames answered (or attempted)
  kCount,
};
[[nodiscard]] const char* relay_server_counter_name(RelayServerCounter c);

class RelayServer {
 public:
  using Instant = std::chrono::steady_clock::time_point;

  // private_key: the server's WireGuard static key (the relay's identity: clients configure its
  // public key); never all zeros (the config parser ensures it). A copy is kept.
  explicit RelayServer(std::span<const uint8_t, 32> private_key, RelayServerOptions opt = {});
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // Binds and listens on TCP `bind` (IPv4 or IPv6; "[::]" also takes IPv4) and creates the
  // epoll set. On failure returns false with a message naming the address in err.
  [[nodiscard]] bool open(const dataplane::Endpoint& bind, std::string& err);
  // The epoll fd: readable (POLLIN) when on_readable() has something to do. -1 before open().
  int fd() const { return epoll_fd_; }
  // The bound address (with the kernel's port when port 0 was asked for).
  const dataplane::Endpoint& local() const { return local_; }
  const crypto::PublicKey& public_key() const { return public_; }

  // Handles up to max_events ready sockets without blocking: accepts, reads and answers
  // frames, forwards, writes queued bytes. Returns how many events were handled.
  size_t on_readable(Instant now);
  // Closes connections past their auth or idle deadline; resumes accepting after an accept
  // error. Call about once a second, or at next_deadline().
  void on_tick(Instant now);
  // The earliest auth or idle deadline (Instant::max() when there is no connection).
  Instant next_deadline() const;
  // Serves until stop_fd (an eventfd or a pipe) becomes readable: poll over fd() and stop_fd,
  // with on_tick() at next_deadline() and at least once a second. For tests and a dedicated
  // thread; meshwg-server uses its own poll loop instead.
  void run(int stop_fd);

  size_t clients() const { return clients_.load(std::memory_order_relaxed); }
  size_t authenticated() const { return authenticated_.load(std::memory_order_relaxed); }
  uint64_t count(RelayServerCounter c) const {
    return counters_[size_t(c)].load(std::memory_order_relaxed);
  }
  uint64_t malformed(RelayMalformed m) const {
    return malformed_[size_t(m)].load(std::memory_order_relaxed);
  }

 private:
  struct Client;
  using ClientList = std::list<Client*>;
  void bump(RelayServerCounter c, uint64_t n = 1);
  void accept_some(Instant now);
  Client* lookup(uint64_t tag) const;
  // Reads and handles what c sent. False when c was closed (c is gone then).
  bool on_client_readable(Client& c, Instant now);
  // Handles one frame. False when c was closed.
  bool on_frame(Client& c, const RelayFrame& f, Instant now);
  bool on_auth(Client& c, const RelayFrame& f, Instant now);
  void on_send(Client& c, std::span<const uint8_t> body, Instant now);
  // Appends a frame (given in parts) to c's queue, writing at once when the queue is empty
  // and nothing is corked. False when it did not fit (nothing queued) or c's socket failed
  // (c is closed later).
  bool enqueue(Client& c, std::initializer_list<std::span<const uint8_t>> parts);
  // Writes what c's socket takes; EPOLLOUT stays registered while anything is left.
  void flush(Client& c);
  // While one client's input is handled, frames for any client are only queued (corked) and
  // written by uncork() afterwards: one send per destination for a whole read instead of one
  // per frame.
  void uncork();
  void set_want_write(Client& c, bool want);
  // Closes and frees c, counting `why` (nothing for kCount).
  void close_client(Client& c, RelayServerCounter why);
  // A protocol violation: counted by reason, logged, closed.
  void reject_malformed(Client& c, RelayMalformed m, Instant now);
  void close_failed_writers();
  void pause_accept(bool pause);

  RelayServerOptions opt_;
  crypto::Key private_;
  crypto::PublicKey public_{};
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  bool accept_paused_ = false;
  dataplane::Endpoint local_;

  std::vector<std::unique_ptr<Client>> by_fd_;  // indexed by socket fd
  std::unordered_map<crypto::PublicKey, Client*, PublicKeyHash> by_key_;  // authenticated only
  ClientList pending_;  // unauthenticated, in accept order (so in deadline order)
  ClientList active_;   // authenticated, most recent frame first
  std::vector<std::pair<int, uint32_t>> failed_writers_;  // (fd, generation) to close
  bool corking_ = false;
  std::vector<std::pair<int, uint32_t>> corked_;  // (fd, generation) with unwritten frames
  uint32_t next_gen_ = 1;

  std::vector<uint8_t> chunk_;  // kRelayReadChunk: every read lands here first
  std::vector<epoll_event> events_;  // max_events
  LogLimiter log_limit_;
  uint64_t log_suppressed_ = 0;

  // Single writer (the driving thread); relaxed atomics so other threads may read.
  std::atomic<size_t> clients_{0};
  std::atomic<size_t> authenticated_{0};
  std::array<std::atomic<uint64_t>, size_t(RelayServerCounter::kCount)> counters_{};
  std::array<std::atomic<uint64_t>, size_t(RelayMalformed::kCount)> malformed_{};
};

}  // namespace meshwg::control
