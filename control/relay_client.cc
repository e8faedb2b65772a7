// Relay client: non-blocking TCP connect, the ServerHello / ClientAuth / AuthOk exchange of
// control/relay_proto.h, then Send / Recv frames; backoff and keepalive (see relay_client.h).
#include "control/relay_client.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace meshwg::control {

namespace {
constexpr int kMaxReadsPerWake = 16;  // fairness with the loop's other sockets
}  // namespace

const char* relay_client_state_name(RelayClient::State s) {
  switch (s) {
    case RelayClient::State::kIdle: return "idle";
    case RelayClient::State::kConnecting: return "connecting";
    case RelayClient::State::kAwaitHello: return "awaiting hello";
    case RelayClient::State::kAwaitAuthOk: return "authenticating";
    case RelayClient::State::kUp: return "up";
  }
  return "?";
}

RelayClient::RelayClient(const crypto::Key& my_private, const crypto::PublicKey& my_public,
                         const crypto::PublicKey& server_public, dataplane::Endpoint server,
                         RelayClientOptions opt)
    : my_private_(my_private),
      my_public_(my_public),
      server_public_(server_public),
      server_(server),
      opt_(opt),
      out_(opt.max_queued_bytes),
      backoff_(opt.backoff_min) {}

RelayClient::~RelayClient() {
  if (fd_ >= 0) ::close(fd_);
}

short RelayClient::events() const {
  if (fd_ < 0) return 0;
  if (state_ == State::kConnecting) return POLLOUT;
  return short(POLLIN | (out_.empty() ? 0 : POLLOUT));
}

RelayClient::Clock::time_point RelayClient::next_deadline() const {
  switch (state_) {
    case State::kIdle: return next_attempt_;
    case State::kUp: return std::min(last_ping_ + opt_.ping_interval, last_rx_ + opt_.dead_after);
    default: return deadline_;
  }
}

void RelayClient::start_connect(Clock::time_point now) {
  ++connects_;
  fd_ = ::socket(server_.addr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return fail(now, std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  (void)::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  state_ = State::kConnecting;
  deadline_ = now + opt_.connect_timeout;
  reader_ = RelayFrameReader{};
  if (::connect(fd_, &server_.addr.sa, server_.socklen()) != 0 && errno != EINPROGRESS)
    return fail(now, std::string("connect: ") + std::strerror(errno));
}

void RelayClient::fail(Clock::time_point now, const std::string& why) {
  const bool was_up = state_ == State::kUp;
  spdlog::info("relay {}: {}; reconnecting in {} ms", server_.str(), why, backoff_.count());
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  state_ = State::kIdle;
  out_.clear();
  // Jitter spreads the reconnects of many clients after a relay restart.
  std::uniform_int_distribution<int64_t> jitter(0, backoff_.count() / 4);
  next_attempt_ = now + backoff_ + std::chrono::milliseconds(jitter(rng_));
  backoff_ = std::min(backoff_ * 2, opt_.backoff_max);
  if (was_up && on_state) on_state(false);
}

void RelayClient::tick(Clock::time_point now) {
  switch (state_) {
    case State::kIdle:
      if (now >= next_attempt_) start_connect(now);
      return;
    case State::kUp:
      if (now - last_rx_ >= opt_.dead_after) return fail(now, "nothing received for a minute");
      if (now - last_ping_ >= opt_.ping_interval) {
        last_ping_ = now;
        RelayPingToken token{};
        randombytes_buf(token.data(), token.size());
        out_.push(relay_encode_ping(token));
        (void)flush();
      }
      return;
    default:
      if (now >= deadline_) fail(now, std::string("timed out while ") + relay_client_state_name(state_));
      return;
  }
}

bool RelayClient::queue_send(const crypto::PublicKey& dst, std::span<const uint8_t> payload) {
  if (state_ != State::kUp || payload.size() > kRelayMaxPayload ||
      !out_.append({relay_header(RelayFrameType::kSend, kRelayKeySize + payload.size()), dst, payload})) {
    ++dropped_;
    return false;
  }
  return true;
}

bool RelayClient::send(const crypto::PublicKey& dst, std::span<const uint8_t> payload) {
  return queue_send(dst, payload) && flush();
}

bool RelayClient::flush() {
  if (fd_ < 0 || out_.write_to(fd_)) return true;
  fail(Clock::now(), std::string("send: ") + std::strerror(errno));
  return false;
}

void RelayClient::on_ready(short revents, Clock::time_point now) {
  if (fd_ < 0) return;
  if (state_ == State::kConnecting) {
    if (!(revents & (POLLOUT | POLLERR | POLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof(err);
    (void)::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(now, std::string("connect: ") + std::strerror(err));
    state_ = State::kAwaitHello;
    return;
  }
  if (revents & POLLOUT) {
    if (!flush()) return;
  }
  if (!(revents & (POLLIN | POLLERR | POLLHUP))) return;
  // At most one chunk per feed(), drained before the next: the reader then takes it all.
  uint8_t buf[kRelayReadChunk];
  for (int i = 0; i < kMaxReadsPerWake && fd_ >= 0; ++i) {
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n == 0) return fail(now, "closed by the relay");
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      return fail(now, std::string("recv: ") + std::strerror(errno));
    }
    last_rx_ = now;
    (void)reader_.feed({buf, size_t(n)});
    for (int frames = 0; fd_ >= 0; ++frames) {
      RelayFrame f;
      const auto r = reader_.next(f);
      if (r == RelayFrameReader::Result::kNeedMore) break;
      if (r == RelayFrameReader::Result::kMalformed)
        return fail(now, std::string("malformed frame from the relay: ") +
                             relay_malformed_name(reader_.error()));
      handle_frame(f, now);
    }
  }
}

void RelayClient::handle_frame(const RelayFrame& f, Clock::time_point now) {
  switch (state_) {
    case State::kAwaitHello: {
      if (f.type != RelayFrameType::kServerHello) return fail(now, "expected a server hello");
      const auto hello = parse_server_hello(f.body);
      if (!hello) return fail(now, "bad server hello");
      if (sodium_memcmp(hello->server_public.data(), server_public_.data(), 32) != 0)
        return fail(now, "the relay's key is not the configured [Relay] PublicKey");
      challenge_ = hello->challenge;
      RelayProof proof{};
      if (!relay_client_proof(my_private_, server_public_, challenge_, my_public_, proof))
        return fail(now, "cannot compute the authentication proof");
      out_.push(relay_encode_client_auth(my_public_, proof));
      state_ = State::kAwaitAuthOk;
      (void)flush();
      return;
    }
    case State::kAwaitAuthOk: {
      if (f.type != RelayFrameType::kAuthOk) return fail(now, "expected auth ok");
      const auto ok = parse_auth_ok(f.body);
      if (!ok || !relay_verify_server(my_private_, server_public_, challenge_, my_public_, *ok))
        return fail(now, "the relay did not prove its key");
      state_ = State::kUp;
      backoff_ = opt_.backoff_min;
      last_ping_ = now;
      spdlog::info("relay {}: connected and authenticated", server_.str());
      if (on_state) on_state(true);
      return;
    }
    case State::kUp:
      break;
    default:
      return;
  }
  switch (f.type) {
    case RelayFrameType::kRecv: {
      const auto r = parse_recv(f.body);
      if (!r) return fail(now, "bad recv frame");
      ++received_;
      if (on_receive) on_receive(r->src, r->payload);
      return;
    }
    case RelayFrameType::kPeerAbsent: {
      const auto a = parse_peer_absent(f.body);
      if (a && on_absent) on_absent(*a);
      return;
    }
    case RelayFrameType::kPing:
      if (const auto t = parse_ping(f.body)) {
        out_.push(relay_encode_pong(*t));
        (void)flush();
      }
      return;
    case RelayFrameType::kPong:
      return;
    default:
      return fail(now, "unexpected frame type from the relay");
  }
}

}  // namespace meshwg::control
