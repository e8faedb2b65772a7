// WG-STUN server: a minimal WireGuard responder whose only job is to tell each client the
// outer address and port its WireGuard packets arrive from, i.e. the NAT mapping other peers
// will see (DESIGN.md "Traversal"). It is built from crypto/ and dataplane/messages.h, not
// from dataplane::Device: the data plane stays vanilla and has no accept-any-peer mode.
//
// Reserved tunnel addresses (a client routes them into its tunnel to this server):
//   IPv4  100.100.100.100          IPv6  fd6d:6573:6877::1   ("fd" + "mesh" + "w" in ASCII)
// Inside the tunnel the server answers exactly
//   - STUN binding requests (RFC 8489) to UDP port 3478 at either address: a UDP/IP packet
//     back through the tunnel whose success response's XOR-MAPPED-ADDRESS is the OUTER source
//     address and port of the WireGuard packet that carried the request (a request with
//     unknown comprehension-required attributes gets a 420, as from the plain server);
//   - ICMP echo requests (IPv4) and ICMPv6 echo requests to either address: echo replies.
// Everything else inside the tunnel is dropped and counted; nothing is ever forwarded.
//
// WireGuard side (whitepaper §5.4, §6):
//   - Handshake initiations are accepted from ANY client static key (Noise IK reveals it);
//     mac1 must be valid for our public key. Clients must not use a preshared key. Under load
//     (more than WgStunOptions::load_initiations_per_second initiations with a valid mac1 in
//     one second, and for a second after, kUnderLoadAfterTime) an initiation without a valid
//     mac2 gets a cookie reply instead of a response, and those with a valid mac2 are
//     rate-limited per source address (dataplane::RateLimiter). A known client's initiations
//     are taken at most 50 per second and only with a newer TAI64N timestamp.
//   - The response makes a "next" session; it becomes the client's current one when the
//     first transport packet arrives on it (the responder rule). Replies go out on the
//     current session only. Transport packets are checked as the kernel does: index, age
//     (REJECT_AFTER_TIME) and counter (REJECT_AFTER_MESSAGES), tag, then the replay window.
//   - The client's endpoint is the source of its latest authenticated packet (roaming).
//   - Passive keepalive: a client that sent data we did not answer gets an empty transport
//     packet after KEEPALIVE_TIMEOUT. This server never initiates handshakes.
//
// State bounds: at most WgStunOptions::max_clients clients, each with a handshake state, a
// cookie generator and up to three sessions (previous, current, next; ~1.1 KiB each with the
// replay window). Clients live in two LRU lists, "confirmed" (a session was confirmed by a
// transport packet) and "unconfirmed" (handshake answered, nothing since), with hash maps by
// static key (keyed SipHash: keys are chosen by clients) and by local index. When full, the
// least recently active unconfirmed client is evicted, else the least recently active
// confirmed one: a flood of fresh keys that never send transport churns only among itself.
// Idle clients expire: unconfirmed after unconfirmed_timeout, confirmed after idle_timeout.
// The rate limiter bounds its own table. Per-datagram work allocates only for an accepted
// handshake (a client entry, a session, index map nodes) or an encoded STUN answer
// (std::bad_alloc is fatal, as everywhere); unauthenticated junk allocates nothing.
//
// Threads: not thread-safe; one thread (meshwg-server's poll loop) drives a responder or
// server. Counters and clients() may be read from any thread (relaxed atomics). No exceptions
// are thrown on the packet path other than std::bad_alloc.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "control/key_hash.h"
#include "control/stun_server.h"
#include "crypto/cookie.h"
#include "crypto/noise.h"
#include "crypto/replay.h"
#include "dataplane/ip.h"
#include "dataplane/messages.h"
#include "dataplane/ratelimiter.h"

namespace meshwg::control {

inline constexpr std::array<uint8_t, 4> kWgStunAddress4 = {100, 100, 100, 100};
inline constexpr std::array<uint8_t, 16> kWgStunAddress6 = {0xfd, 0x6d, 0x65, 0x73, 0x68, 0x77,
                                                            0,    0,    0,    0,    0,    0,
                                                            0,    0,    0,    1};
inline constexpr uint16_t kWgStunPort = 3478;

struct WgStunOptions {
  size_t max_clients = 4096;                   // 1 .. dataplane::kMaxPeers
  uint32_t load_initiations_per_second = 256;  // above this: cookies (mac2) and rate limits
  std::chrono::seconds idle_timeout{180};        // confirmed clients (REJECT_AFTER_TIME)
  std::chrono::seconds unconfirmed_timeout{30};  // answered, never sent a transport packet
  std::string software = "meshwg-server";      // SOFTWARE in STUN answers; empty = none
};

// Why a datagram (or an inner packet) was dropped. Each value has a counter.
enum class WgStunDrop : uint8_t {
  kMalformed,           // not a WireGuard message: type word or exact size wrong (classify)
  kTruncated,           // longer than the receive buffer
  kInvalidMac1,         // handshake message whose mac1 is not for our public key
  kCookieSent,          // under load without a valid mac2: a cookie reply went out instead
  kRateLimited,         // under load, over the per-source initiation rate
  kHandshakeFailed,     // initiation did not decrypt, low-order key, or a replayed timestamp
  kHandshakeTooFast,    // a known client's initiation within 20 ms of its last one
  kUnexpectedResponse,  // a handshake response: this server never initiates
  kCookieReplyUnknown,  // cookie reply for an index we do not have
  kCookieReplyInvalid,  // cookie reply that does not verify
  kUnknownIndex,        // transport packet for no session
  kKeypairExpired,      // session older than REJECT_AFTER_TIME or counter too high
  kDecryptFailed,       // transport tag does not verify
  kReplayed,            // counter seen before or too old for the window
  kBadInnerPacket,      // inner packet: too short, not IPv4/IPv6, lengths lie, bad IPv4 header sum
  kInnerFragment,       // inner IPv4 fragment or IPv6 fragment header
  kNotReserved,         // inner destination is not one of the reserved addresses
  kUnsupportedProtocol, // inner protocol not UDP or ICMP(v6) (IPv6 extension headers too)
  kBadInnerChecksum,    // UDP/ICMP checksum wrong (or zero UDP checksum over IPv6)
  kWrongPort,           // UDP to a port other than 3478
  kNotEchoRequest,      // ICMP(v6) other than an echo request
  kStunMalformed,       // inner STUN that stun_decode refuses (other than the 420 case)
  kStunNotRequest,      // inner STUN indication or response
  kNoSession,           // a reply is due but no usable sending session (expired/exhausted)
  kSendFailed,          // the socket refused a datagram
  kCount,
};
[[nodiscard]] const char* wgstun_drop_name(WgStunDrop d);

// Things that happened. Each value has a counter.
enum class WgStunEvent : uint8_t {
  kHandshakes,         // handshake responses sent
  kNewClients,         // clients created (first accepted initiation of a static key)
  kSessionsConfirmed,  // a next session became current (first transport packet on it)
  kClientsEvicted,     // removed to make room (LRU)
  kClientsExpired,     // removed after being idle
  kRoamed,             // a client's outer endpoint changed
  kKeepalivesReceived,
  kKeepalivesSent,     // passive keepalives
  kCookieRepliesConsumed,  // a client's cookie reply to our response, taken
  kStunAnswered,       // binding success responses sent through the tunnel
  kStunUnknownAttributes,  // 420 responses sent through the tunnel
  kEchoAnswered,       // echo replies (ICMP and ICMPv6)
  kCount,
};
[[nodiscard]] const char* wgstun_event_name(WgStunEvent e);

// Where a responder's datagrams go: the UDP socket in WgStunServer, a recorder in tests.
class WgStunSink {
 public:
  virtual ~WgStunSink() = default;
  // False when the datagram could not be sent (counted as kSendFailed).
  virtual bool send(std::span<const uint8_t> data, const dataplane::Endpoint& to) = 0;
};

// The protocol core, sans-I/O: datagrams and the time in, datagrams out through the sink.
class WgStunResponder {
 public:
  using Instant = std::chrono::steady_clock::time_point;
  // A datagram larger than this is not a WireGuard message we can take (UDP's own limit).
  static constexpr size_t kMaxDatagram = 65536;

  // private_key: our static key (clamped here); never all zeros (the config parser ensures it).
  WgStunResponder(std::span<const uint8_t, 32> private_key, WgStunSink& sink,
                  const WgStunOptions& opt = {});
  ~WgStunResponder();
  WgStunResponder(const WgStunResponder&) = delete;
  WgStunResponder& operator=(const WgStunResponder&) = delete;

  // Handles one datagram that arrived from `from` (whose local address fields, if set, are
  // kept so replies leave from the same address). At most one datagram is sent in answer.
  void receive(std::span<const uint8_t> datagram, const dataplane::Endpoint& from, Instant now);
  // Expires idle clients and sends due passive keepalives. Call about once a second.
  void tick(Instant now);

  const crypto::PublicKey& public_key() const { return identity_.public_key; }
  size_t clients() const { return client_count_.load(std::memory_order_relaxed); }
  // For tests and status (driving thread only): a client's current outer endpoint, if the
  // client is known.
  [[nodiscard]] std::optional<dataplane::Endpoint> client_endpoint(const crypto::PublicKey& k) const;
  [[nodiscard]] bool under_load(Instant now) const;

  uint64_t drops(WgStunDrop d) const { return drops_[size_t(d)].load(std::memory_order_relaxed); }
  uint64_t events(WgStunEvent e) const {
    return events_[size_t(e)].load(std::memory_order_relaxed);
  }
  // For the I/O layer's own drops (kTruncated, kSendFailed).
  void count(WgStunDrop d);

 private:
  struct Session;
  struct Client;
  using ClientList = std::list<Client>;
  using ClientIt = ClientList::iterator;
  void count(WgStunEvent e);
  void drop(WgStunDrop d, const dataplane::Endpoint& from);
  void on_initiation(std::span<const uint8_t> data, const dataplane::Endpoint& from, Instant now);
  void on_cookie_reply(std::span<const uint8_t> data, Instant now);
  void on_transport(std::span<const uint8_t> data, const dataplane::Endpoint& from, Instant now);
  // Handles a decrypted inner packet (plain_len bytes at scratch_ + 16). Returns true when a
  // reply was sent.
  bool on_inner(Client& c, size_t plain_len, Instant now);
  // Seals the inner packet at scratch_ + 16 (len bytes, padded up to at most pad_limit) with
  // the client's current session and sends it. Returns false (counted) if it could not.
  bool send_transport(Client& c, size_t len, size_t pad_limit, Instant now);
  [[nodiscard]] uint32_t new_index();
  void drop_session(std::unique_ptr<Session>& s);
  void touch(ClientIt it, Instant now);
  void remove(ClientIt it);
  void make_room();

  WgStunSink& sink_;
  WgStunOptions opt_;
  crypto::LocalStatic identity_;
  crypto::CookieChecker cookie_checker_;
  dataplane::RateLimiter rate_limiter_;

  ClientList confirmed_;    // most recently active first
  ClientList unconfirmed_;  // most recently active first
  std::unordered_map<crypto::PublicKey, ClientIt, PublicKeyHash> by_key_;
  std::unordered_map<uint32_t, ClientIt> by_index_;  // local index of any session
  std::atomic<size_t> client_count_{0};

  // Load: initiations with a valid mac1 in the current one-second window.
  Instant window_start_{};
  uint32_t window_count_ = 0;
  Instant last_over_{};
  bool was_over_ = false;

  std::vector<uint8_t> scratch_;  // kMaxDatagram + padding: decrypt and build replies here
  std::array<std::atomic<uint64_t>, size_t(WgStunDrop::kCount)> drops_{};
  std::array<std::atomic<uint64_t>, size_t(WgStunEvent::kCount)> events_{};
  LogLimiter log_limit_;
  LogLimiter table_log_limit_{std::chrono::seconds(10)};
};

// The responder on a UDP socket.
class WgStunServer final : private WgStunSink {
 public:
  // Datagrams read per on_readable() before returning to the poll loop (fairness).
  static constexpr size_t kMaxBatch = 64;

  explicit WgStunServer(std::span<const uint8_t, 32> private_key, const WgStunOptions& opt = {})
      : responder_(private_key, *this, opt), buf_(WgStunResponder::kMaxDatagram) {}
  [[nodiscard]] bool open(const dataplane::Endpoint& bind, std::string& err) {
    return sock_.open(bind, err);
  }
  int fd() const { return sock_.fd(); }
  const dataplane::Endpoint& local() const { return sock_.local(); }

  // Reads and handles up to kMaxBatch datagrams without blocking; the poll loop calls it when
  // fd() is readable. Returns how many were read.
  size_t on_readable(WgStunResponder::Instant now);
  void on_tick(WgStunResponder::Instant now) { responder_.tick(now); }

  WgStunResponder& responder() { return responder_; }
  const WgStunResponder& responder() const { return responder_; }

 private:
  bool send(std::span<const uint8_t> data, const dataplane::Endpoint& to) override {
    return sock_.send(data, to);
  }
  UdpServerSocket sock_;
  WgStunResponder responder_;
  std::vector<uint8_t> buf_;
};

}  // namespace meshwg::control
