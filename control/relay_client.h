// The client side of the relay (control/relay_proto.h): one TCP connection to the
// meshwg-server's relay, authenticated with our WireGuard static key, over which opaque
// payloads are sent to and received from other clients by public key. Reconnects with
// exponential backoff (1 s doubling to 30 s, with jitter) and then announces itself again
// simply by authenticating: the relay knows clients by key.
//
// Threads: none of its own. The control thread's poll loop owns it: it polls fd() for
// events(), calls on_ready() with what poll returned and tick() at next_deadline(). send() and
// the callbacks run on that thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "control/relay_proto.h"
#include "control/send_queue.h"
#include "crypto/primitives.h"
#include "dataplane/ip.h"

namespace meshwg::control {

struct RelayClientOptions {
  std::chrono::milliseconds backoff_min{1000};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds connect_timeout{5000};  // TCP connect plus authentication
  std::chrono::milliseconds ping_interval{20000};   // keeps NAT and relay idle timers open
  std::chrono::milliseconds dead_after{60000};      // nothing received: reconnect
  size_t max_queued_bytes = 256 * 1024;             // outgoing; beyond it sends are dropped
};

class RelayClient {
 public:
  using Clock = std::chrono::steady_clock;
  enum class State : uint8_t { kIdle, kConnecting, kAwaitHello, kAwaitAuthOk, kUp };

  RelayClient(const crypto::Key& my_private, const crypto::PublicKey& my_public,
              const crypto::PublicKey& server_public, dataplane::Endpoint server,
              RelayClientOptions opt = {});
  ~RelayClient();
  RelayClient(const RelayClient&) = delete;
  RelayClient& operator=(const RelayClient&) = delete;

  // Payload from another client (src: its public key).
  std::function<void(const crypto::PublicKey& src, std::span<const uint8_t> payload)> on_receive;
  // The destination of an earlier send is not connected to the relay.
  std::function<void(const crypto::PublicKey& dst)> on_absent;
  // Authenticated (true) or lost (false).
  std::function<void(bool up)> on_state;

  int fd() const { return fd_; }
  short events() const;  // POLLIN, plus POLLOUT while connecting or with queued bytes
  void on_ready(short revents, Clock::time_point now);
  void tick(Clock::time_point now);
  Clock::time_point next_deadline() const;

  State state() const { return state_; }
  bool up() const { return state_ == State::kUp; }
  // Queues one payload for dst and writes what the socket takes. False (and counted) when not
  // up or the queue is full, or when the write failed (the connection is gone then).
  bool send(const crypto::PublicKey& dst, std::span<const uint8_t> payload);
  // Queues without writing, for a caller that batches: several frames go out in one write
  // at its flush(). False (and counted) when not up or the queue is full.
  bool queue_send(const crypto::PublicKey& dst, std::span<const uint8_t> payload);
  // Writes what the socket takes now; the rest waits for POLLOUT. False after a fatal error.
  bool flush();

  uint64_t connects() const { return connects_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t received() const { return received_; }

 private:
  void start_connect(Clock::time_point now);
  void fail(Clock::time_point now, const std::string& why);
  void handle_frame(const RelayFrame& f, Clock::time_point now);

  crypto::Key my_private_;
  crypto::PublicKey my_public_;
  crypto::PublicKey server_public_;
  dataplane::Endpoint server_;
  RelayClientOptions opt_;

  int fd_ = -1;
  State state_ = State::kIdle;
  RelayChallenge challenge_{};
  RelayFrameReader reader_;
  SendQueue out_;
  std::chrono::milliseconds backoff_;
  Clock::time_point next_attempt_{};
  Clock::time_point deadline_{};  // connect/auth timeout
  Clock::time_point last_rx_{}, last_ping_{};
  std::mt19937 rng_{std::random_device{}()};
  uint64_t connects_ = 0, dropped_ = 0, received_ = 0;
};

const char* relay_client_state_name(RelayClient::State s);

}  // namespace meshwg::control
