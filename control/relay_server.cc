// Relay server (see relay_server.h for the session flow and its bounds).
//
//   one thread, level-triggered epoll
//     listener ──► accept_some ──► Client (pending FIFO) ──► ServerHello
//     client IN ──► recv (<= max_reads_per_wake x 16 KiB) ──► RelayFrameReader ──► on_frame
//                     ClientAuth ─► on_auth ─► active LRU + by_key_ ─► AuthOk
//                     Send ─► on_send ─► enqueue(dst) | PeerAbsent ─► enqueue(self)
//                     Ping ─► enqueue(self, Pong)
//     client OUT (registered only while its queue is non-empty) ──► flush
//     (frames queued while a client's input is handled are corked: uncork writes each
//      destination's batch with one send after that client's event)
//     on_tick ──► auth / idle deadlines (front of pending, back of active)
//
// enqueue() appends to the client's queue and writes it at once, or, while corked, at
// uncork(); what the socket does not take waits for EPOLLOUT. A failed write never closes a
// client inside another client's handler (or its own: a Pong to itself): the client is marked
// and closed after the event being handled (close_failed_writers), so no handler ever sees a
// freed client. epoll events carry (generation << 32 | fd), so an event for a connection
// closed earlier in the same batch, whose fd may even be reused already, is recognised and
// skipped; the corked list uses the same tags.
#include "control/relay_server.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "control/send_queue.h"
#include "control/status.h"

namespace meshwg::control {

using dataplane::Endpoint;

namespace {

constexpr uint64_t kListenTag = ~uint64_t{0};
constexpr size_t kAbsentSlots = 8;  // PeerAbsent: at most this many per second per client
constexpr auto kAbsentInterval = std::chrono::seconds(1);
constexpr int kMaxAcceptsPerWake = 64;
constexpr size_t kKeepQueueCapacity = 64 * 1024;  // an emptied queue bigger than this is freed

uint64_t tag_of(int fd, uint32_t gen) { return uint64_t(gen) << 32 | uint32_t(fd); }

// Logs at most one line per limiter interval; the next line says how many were not logged.
template <typename... Args>
void log_limited(LogLimiter& limit, uint64_t& suppressed, std::chrono::steady_clock::time_point now,
                 fmt::format_string<Args...> f, Args&&... args) {
  if (!limit.allow(now)) {
    ++suppressed;
    return;
  }
  std::string line = fmt::format(f, std::forward<Args>(args)...);
  if (suppressed != 0) line += fmt::format(" ({} more rejections not logged)", suppressed);
  suppressed = 0;
  spdlog::info("relay: {}", line);
}

}  // namespace

struct RelayServer::Client {
  explicit Client(SendQueue q) : out(std::move(q)) {}
  int fd = -1;
  uint32_t gen = 0;
  Endpoint peer;
  bool authed = false;
  bool want_write = false;    // EPOLLOUT registered
  bool corked = false;        // in corked_: queued frames not tried yet
  bool write_failed = false;  // closed after the current event (failed_writers_)
  crypto::PublicKey key{};    // once authed
  RelayChallenge challenge{};
  RelayFrameReader reader{kRelayHelloBody};  // only a ClientAuth fits until authenticated
  SendQueue out;
  Instant since{};  // pending: accepted at; authenticated: last complete frame
  ClientList::iterator pos;  // in pending_ or active_
  struct Absent {
    crypto::PublicKey key{};
    Instant at{};
    bool used = false;
  };
  std::array<Absent, kAbsentSlots> absent{};  // PeerAbsent sent recently, by destination
};

const char* relay_server_counter_name(RelayServerCounter c) {
  switch (c) {
    case RelayServerCounter::kAccepted: return "accepted";
    case RelayServerCounter::kRejectedFull: return "rejected_full";
    case RelayServerCounter::kAcceptFailed: return "accept_failed";
    case RelayServerCounter::kPendingEvicted: return "pending_evicted";
    case RelayServerCounter::kAuthenticated: return "authenticated";
    case RelayServerCounter::kAuthFailed: return "auth_failed";
    case RelayServerCounter::kAuthTimeout: return "auth_timeout";
    case RelayServerCounter::kIdleTimeout: return "idle_timeout";
    case RelayServerCounter::kReplaced: return "replaced";
    case RelayServerCounter::kMalformed: return "malformed";
    case RelayServerCounter::kClosedByClient: return "closed_by_client";
    case RelayServerCounter::kClosedMidFrame: return "closed_mid_frame";
    case RelayServerCounter::kClosedError: return "closed_error";
    case RelayServerCounter::kFramesForwarded: return "frames_forwarded";
    case RelayServerCounter::kBytesForwarded: return "bytes_forwarded";
    case RelayServerCounter::kDroppedQueueFull: return "dropped_queue_full";
    case RelayServerCounter::kPeerAbsent: return "peer_absent";
    case RelayServerCounter::kPeerAbsentSuppressed: return "peer_absent_suppressed";
    case RelayServerCounter::kRepliesDropped: return "replies_dropped";
    case RelayServerCounter::kPings: return "pings";
    case RelayServerCounter::kCount: break;
  }
  return "?";
}

RelayServer::RelayServer(std::span<const uint8_t, 32> private_key, RelayServerOptions opt)
    : opt_(opt), private_(private_key) {
  // A queue must hold at least one whole frame, or a big frame could never wait for a slow
  // socket; the other options just need to be non-zero.
  opt_.max_queue_bytes = std::max(opt_.max_queue_bytes, kRelayMaxFrame);
  opt_.max_clients = std::max<size_t>(opt_.max_clients, 1);
  opt_.max_pending = std::max<size_t>(opt_.max_pending, 1);
  opt_.max_events = std::clamp<size_t>(opt_.max_events, 1, 4096);
  opt_.max_reads_per_wake = std::max<size_t>(opt_.max_reads_per_wake, 1);
  // All-zero only for an all-zero key, which the config parser refuses.
  (void)crypto::x25519_public(public_, private_.span());
  // Keys are chosen by clients: no predictable buckets.
  by_key_ = decltype(by_key_)(64, PublicKeyHash::random());
  chunk_.resize(kRelayReadChunk);
  events_.resize(opt_.max_events);
}

RelayServer::~RelayServer() {
  for (auto& c : by_fd_)
    if (c) ::close(c->fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

void RelayServer::bump(RelayServerCounter c, uint64_t n) {
  auto& a = counters_[size_t(c)];
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

bool RelayServer::open(const Endpoint& bind, std::string& err) {
  if (listen_fd_ >= 0) {
    err = "relay already open";
    return false;
  }
  if (!bind.valid()) {
    err = "bind address is not IPv4 or IPv6";
    return false;
  }
  const int fd = ::socket(bind.addr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = "socket: " + std::string(std::strerror(errno));
    return false;
  }
  // A restarted server binds again while its old connections sit in TIME_WAIT.
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  make_dual_stack(fd, bind.addr.sa.sa_family);
  Endpoint local;
  if (::bind(fd, &bind.addr.sa, bind.socklen()) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    err = "cannot listen on TCP " + bind.str() + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  if (!bound_address(fd, local, err)) {
    ::close(fd);
    return false;
  }
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  if (ep < 0 || ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
    err = "epoll: " + std::string(std::strerror(errno));
    if (ep >= 0) ::close(ep);
    ::close(fd);
    return false;
  }
  local_ = local;
  listen_fd_ = fd;
  epoll_fd_ = ep;
  return true;
}

RelayServer::Client* RelayServer::lookup(uint64_t tag) const {
  const auto fd = size_t(uint32_t(tag));
  if (fd >= by_fd_.size()) return nullptr;
  Client* c = by_fd_[fd].get();
  return c != nullptr && c->gen == uint32_t(tag >> 32) ? c : nullptr;
}

size_t RelayServer::on_readable(Instant now) {
  if (epoll_fd_ < 0) return 0;
  const int n = ::epoll_wait(epoll_fd_, events_.data(), int(events_.size()), 0);
  for (int i = 0; i < n; ++i) {
    const epoll_event& e = events_[size_t(i)];
    if (e.data.u64 == kListenTag) {
      accept_some(now);
      continue;
    }
    Client* c = lookup(e.data.u64);
    if (c == nullptr) continue;  // closed earlier in this batch
    bool alive = true;
    if (!c->write_failed && (e.events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
      corking_ = true;
      alive = on_client_readable(*c, now);
      uncork();
    }
    if (alive && !c->write_failed && (e.events & EPOLLOUT)) flush(*c);
    close_failed_writers();
  }
  return n > 0 ? size_t(n) : 0;
}

void RelayServer::pause_accept(bool pause) {
  epoll_event ev{};
  ev.events = pause ? 0u : uint32_t(EPOLLIN);
  ev.data.u64 = kListenTag;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev) == 0) accept_paused_ = pause;
}

void RelayServer::accept_some(Instant now) {
  for (int i = 0; i < kMaxAcceptsPerWake && !accept_paused_; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK) return;
      // The connection died in the backlog, or a network error Linux passes on (accept(2)):
      // that connection's problem, not the listener's.
      if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == ENETDOWN || e == ENOPROTOOPT ||
          e == EHOSTDOWN || e == ENONET || e == EHOSTUNREACH || e == EOPNOTSUPP ||
          e == ENETUNREACH || e == EPERM)
        continue;
      // Out of fds or memory. The listener would stay readable, so a level-triggered loop
      // would spin: stop listening until the next tick instead.
      bump(RelayServerCounter::kAcceptFailed);
      log_limited(log_limit_, log_suppressed_, now, "accept on {}: {}; paused until the next tick",
                  local_.str(), std::strerror(e));
      pause_accept(true);
      return;
    }
    const Endpoint peer =
        unmap_v4_endpoint(Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len));
    bump(RelayServerCounter::kAccepted);
    if (clients() >= opt_.max_clients) {
      bump(RelayServerCounter::kRejectedFull);
      log_limited(log_limit_, log_suppressed_, now, "closed {}: server full ({} clients)",
                  peer.str(), opt_.max_clients);
      ::close(fd);
      continue;
    }
    if (pending_.size() >= opt_.max_pending) {
      // The oldest first: an honest client authenticates within a round trip, so it is never
      // the oldest for long; a flood of silent connections only pushes out its own.
      Client& oldest = *pending_.front();
      log_limited(log_limit_, log_suppressed_, now,
                  "closed {}: not authenticated yet, making room ({} unauthenticated connections)",
                  oldest.peer.str(), opt_.max_pending);
      close_client(oldest, RelayServerCounter::kPendingEvicted);
    }
    const int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // frames are latency
    auto owned = std::make_unique<Client>(SendQueue(opt_.max_queue_bytes, kKeepQueueCapacity));
    Client& c = *owned;
    c.fd = fd;
    c.gen = next_gen_++;
    if (next_gen_ == 0) next_gen_ = 1;
    c.peer = peer;
    c.since = now;
    crypto::random_bytes(c.challenge);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag_of(fd, c.gen);
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {  // out of memory
      ::close(fd);
      bump(RelayServerCounter::kClosedError);
      continue;
    }
    if (by_fd_.size() <= size_t(fd)) by_fd_.resize(size_t(fd) + 1);
    by_fd_[size_t(fd)] = std::move(owned);
    c.pos = pending_.insert(pending_.end(), &c);
    clients_.store(clients_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    const uint8_t version = kRelayVersion;
    (void)enqueue(c, {relay_header(RelayFrameType::kServerHello, kRelayHelloBody),
                      std::span<const uint8_t>(&version, 1), public_, c.challenge});
    if (c.write_failed) close_client(c, RelayServerCounter::kClosedError);
  }
}

bool RelayServer::on_client_readable(Client& c, Instant now) {
  for (size_t i = 0; i < opt_.max_reads_per_wake; ++i) {
    const ssize_t n = ::recv(c.fd, chunk_.data(), chunk_.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // Gone: closed (0) or reset. With part of a frame buffered it vanished mid-frame.
      if (c.reader.buffered() != 0) {
        log_limited(log_limit_, log_suppressed_, now, "{} went away mid-frame ({} bytes of it sent)",
                    c.peer.str(), c.reader.buffered());
        close_client(c, RelayServerCounter::kClosedMidFrame);
      } else {
        close_client(c, n == 0 ? RelayServerCounter::kClosedByClient
                               : RelayServerCounter::kClosedError);
      }
      return false;
    }
    // Drained after every feed, the reader always has room for a chunk.
    if (c.reader.feed({chunk_.data(), size_t(n)}) != size_t(n)) {
      close_client(c, RelayServerCounter::kClosedError);
      return false;
    }
    // Bounded: every frame consumes at least a header of the bytes buffered.
    for (;;) {
      RelayFrame f;
      const auto r = c.reader.next(f);
      if (r == RelayFrameReader::Result::kNeedMore) break;
      if (r == RelayFrameReader::Result::kMalformed) {
        reject_malformed(c, c.reader.error(), now);
        return false;
      }
      if (!on_frame(c, f, now)) return false;
    }
    if (size_t(n) < chunk_.size()) break;  // most likely drained; epoll says if not
  }
  c.reader.trim();
  return true;
}

bool RelayServer::on_frame(Client& c, const RelayFrame& f, Instant now) {
  if (!c.authed) return on_auth(c, f, now);
  c.since = now;
  active_.splice(active_.begin(), active_, c.pos);
  switch (f.type) {
    case RelayFrameType::kSend:
      on_send(c, f.body, now);
      return true;
    case RelayFrameType::kPing:
      bump(RelayServerCounter::kPings);
      if (!enqueue(c, {relay_header(RelayFrameType::kPong, f.body.size()), f.body}) &&
          !c.write_failed)
        bump(RelayServerCounter::kRepliesDropped);
      return true;
    case RelayFrameType::kPong:
      return true;
    case RelayFrameType::kClientAuth:
      reject_malformed(c, RelayMalformed::kAuthAgain, now);
      return false;
    case RelayFrameType::kServerHello:
    case RelayFrameType::kAuthOk:
    case RelayFrameType::kRecv:
    case RelayFrameType::kPeerAbsent:
      break;
  }
  reject_malformed(c, RelayMalformed::kWrongDirection, now);
  return false;
}

bool RelayServer::on_auth(Client& c, const RelayFrame& f, Instant now) {
  if (f.type != RelayFrameType::kClientAuth) {
    reject_malformed(c, RelayMalformed::kNotAuthenticated, now);
    return false;
  }
  const auto a = parse_client_auth(f.body);
  if (!a) {  // the reader checked the length: the version is wrong
    reject_malformed(c, RelayMalformed::kBadVersion, now);
    return false;
  }
  RelayProof proof_server;
  if (!relay_server_accept(private_, public_, c.challenge, a->client_public, a->proof,
                           proof_server)) {
    log_limited(log_limit_, log_suppressed_, now,
                "closed {}: authentication failed for key {} (wrong proof or low-order key)",
                c.peer.str(), key_to_base64(a->client_public));
    close_client(c, RelayServerCounter::kAuthFailed);
    return false;
  }
  c.authed = true;
  c.key = a->client_public;
  c.since = now;
  c.reader.set_max_body(kRelayMaxBody);
  pending_.erase(c.pos);
  c.pos = active_.insert(active_.begin(), &c);
  authenticated_.store(authenticated_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  bump(RelayServerCounter::kAuthenticated);
  const auto [it, fresh] = by_key_.try_emplace(c.key, &c);
  if (!fresh) {
    // The newest connection wins: a client that reconnects after its network changed must
    // not wait for the dead connection's idle timeout.
    Client& old = *it->second;
    it->second = &c;
    spdlog::debug("relay: {} reconnected from {}; closing its connection from {}",
                  key_to_base64(c.key), c.peer.str(), old.peer.str());
    close_client(old, RelayServerCounter::kReplaced);
  } else {
    spdlog::debug("relay: {} authenticated from {}", key_to_base64(c.key), c.peer.str());
  }
  // Fits: the queue held at most the ServerHello.
  (void)enqueue(c, {relay_header(RelayFrameType::kAuthOk, kRelayAuthOkBody), proof_server});
  return true;
}

void RelayServer::on_send(Client& c, std::span<const uint8_t> body, Instant now) {
  const auto s = parse_send(body);  // cannot fail: the reader checked the length
  if (!s) return;
  const auto it = by_key_.find(s->dst);
  if (it == by_key_.end()) {
    // Rate-limited per destination with a small table: a destination is in it for a second
    // after its PeerAbsent, and when every slot is that recent, nothing more is sent.
    Client::Absent* slot = nullptr;
    for (auto& a : c.absent) {
      if (a.used && a.key == s->dst && now - a.at < kAbsentInterval) {
        bump(RelayServerCounter::kPeerAbsentSuppressed);
        return;
      }
      if (slot == nullptr || (slot->used && (!a.used || a.at < slot->at))) slot = &a;
    }
    if (slot->used && now - slot->at < kAbsentInterval) {
      bump(RelayServerCounter::kPeerAbsentSuppressed);
      return;
    }
    *slot = {s->dst, now, true};
    if (enqueue(c, {relay_header(RelayFrameType::kPeerAbsent, kRelayKeySize), s->dst}))
      bump(RelayServerCounter::kPeerAbsent);
    else if (!c.write_failed)
      bump(RelayServerCounter::kRepliesDropped);
    return;
  }
  Client& dst = *it->second;
  if (enqueue(dst, {relay_header(RelayFrameType::kRecv, body.size()), c.key, s->payload})) {
    bump(RelayServerCounter::kFramesForwarded);
    bump(RelayServerCounter::kBytesForwarded, s->payload.size());
  } else {
    // Full (or its socket just failed: it is closed after this event).
    bump(RelayServerCounter::kDroppedQueueFull);
  }
}

bool RelayServer::enqueue(Client& c, std::initializer_list<std::span<const uint8_t>> parts) {
  if (c.write_failed) return false;
  if (!c.out.append(parts)) {
    if (!c.corked) return false;
    // Full of corked frames the socket may well take: write them now rather than drop.
    c.corked = false;
    flush(c);
    if (c.write_failed || !c.out.append(parts)) return false;
  }
  if (c.want_write) return true;  // EPOLLOUT writes it
  if (!corking_) {
    flush(c);
    return !c.write_failed;
  }
  if (!c.corked) {
    c.corked = true;
    corked_.emplace_back(c.fd, c.gen);
  }
  return true;
}

void RelayServer::uncork() {
  corking_ = false;
  // Clients closed meanwhile are skipped by their generation; flush never closes one.
  for (const auto& [fd, gen] : corked_) {
    Client* c = lookup(tag_of(fd, gen));
    if (c == nullptr || !c->corked) continue;
    c->corked = false;
    if (!c->write_failed) flush(*c);
  }
  corked_.clear();
}

void RelayServer::flush(Client& c) {
  if (!c.out.write_to(c.fd)) {
    c.write_failed = true;
    failed_writers_.emplace_back(c.fd, c.gen);
    return;
  }
  set_want_write(c, !c.out.empty());  // a corked client may not be registered yet
}

void RelayServer::set_want_write(Client& c, bool want) {
  if (c.want_write == want) return;
  epoll_event ev{};
  ev.events = uint32_t(EPOLLIN) | (want ? uint32_t(EPOLLOUT) : 0u);
  ev.data.u64 = tag_of(c.fd, c.gen);
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev) == 0) {
    c.want_write = want;
  } else if (!c.write_failed) {
    c.write_failed = true;  // cannot happen for a registered fd; never leave a queue unwritten
    failed_writers_.emplace_back(c.fd, c.gen);
  }
}

void RelayServer::close_client(Client& c, RelayServerCounter why) {
  if (c.authed) {
    const auto it = by_key_.find(c.key);
    if (it != by_key_.end() && it->second == &c) by_key_.erase(it);
    authenticated_.store(authenticated_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    active_.erase(c.pos);
  } else {
    pending_.erase(c.pos);
  }
  const int fd = c.fd;
  ::close(fd);  // also leaves the epoll set
  clients_.store(clients_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  by_fd_[size_t(fd)].reset();  // c is gone
  // Last, so a reader of the counter sees the connection's state gone too.
  if (why != RelayServerCounter::kCount) bump(why);
}

void RelayServer::reject_malformed(Client& c, RelayMalformed m, Instant now) {
  auto& a = malformed_[size_t(m)];
  a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  log_limited(log_limit_, log_suppressed_, now, "closed {}{}: malformed frame ({})", c.peer.str(),
              c.authed ? " (key " + key_to_base64(c.key) + ")" : std::string(), relay_malformed_name(m));
  close_client(c, RelayServerCounter::kMalformed);
}

void RelayServer::close_failed_writers() {
  // close_client never adds to the list, so this ends.
  for (const auto& [fd, gen] : failed_writers_)
    if (Client* c = lookup(tag_of(fd, gen))) close_client(*c, RelayServerCounter::kClosedError);
  failed_writers_.clear();
}

void RelayServer::on_tick(Instant now) {
  // Both lists are in deadline order: the loops stop at the first connection not due.
  while (!pending_.empty() && now - pending_.front()->since >= opt_.auth_timeout) {
    Client& c = *pending_.front();
    log_limited(log_limit_, log_suppressed_, now, "closed {}: not authenticated within {} ms",
                c.peer.str(), opt_.auth_timeout.count());
    close_client(c, RelayServerCounter::kAuthTimeout);
  }
  while (!active_.empty() && now - active_.back()->since >= opt_.idle_timeout) {
    Client& c = *active_.back();
    spdlog::debug("relay: {} from {} idle for {} ms, closed", key_to_base64(c.key), c.peer.str(),
                  opt_.idle_timeout.count());
    close_client(c, RelayServerCounter::kIdleTimeout);
  }
  if (accept_paused_) pause_accept(false);
  close_failed_writers();
}

RelayServer::Instant RelayServer::next_deadline() const {
  Instant t = Instant::max();
  if (!pending_.empty()) t = std::min(t, pending_.front()->since + opt_.auth_timeout);
  if (!active_.empty()) t = std::min(t, active_.back()->since + opt_.idle_timeout);
  return t;
}

void RelayServer::run(int stop_fd) {
  using Clock = std::chrono::steady_clock;
  for (;;) {
    Instant now = Clock::now();
    on_tick(now);
    const Instant wake = std::min(next_deadline(), now + std::chrono::seconds(1));
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake - now);
    pollfd fds[2] = {{epoll_fd_, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    const int rc = ::poll(fds, 2, int(std::max<int64_t>(0, wait.count())));
    if (rc < 0) {
      if (errno == EINTR) continue;
      spdlog::error("relay: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents & POLLIN) on_readable(Clock::now());
  }
}

}  // namespace meshwg::control
