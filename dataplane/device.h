// The WireGuard device: peers, cryptokey routing, the index table, the handshake worker, the
// timers and the packet paths (whitepaper §2-§6; kernel device.c/send.c/receive.c/timers.c).
//
// Threads (the packet pipeline in detail is drawn in pipeline.cc):
//
//   tun_loop      (1 thread)        TUN read (a TSO super-packet is split into pooled buffers)
//                                   ─► allowed-IPs ─► runs per peer: reserve nonces ─► enqueue
//   receive_loop  (1 per socket)    Bind::receive_batch (GRO) ─► classify ─┬─► transport: index
//                                     ─► enqueue                           └─► handshake_queue_
//   worker_loop   (W threads)       crypt_queue_ ─► seal / open in place ─► drain the peer's
//                                   ordered queue: UDP send_batch (GSO) / replay, roaming,
//                                   source check, GRO-merge, TUN write
//   handshake_loop (1 thread)       handshake_queue_ ─► mac1/cookie/ratelimit ─► noise ─► Bind::send
//   timer_loop    (1 thread)        timer heap ─► retransmit / keepalive / new handshake / zero keys;
//                                   the config channel's commands (config.h)
//   configuration (UAPI thread)     with_config() under config_mu_ exclusive
//
// crypt_queue_:     multi producer (TUN reader, receivers, staged flushes from any thread) /
//                   multi consumer (workers, and producers that help when it backs up)
// handshake_queue_: multi producer (receive loops) / single consumer (handshake_loop).
// Peer ordered queues: see peer.h (PeerQueues).
//
// Locking: config_mu_ (shared_mutex) guards peers_, allowed_ips_, identity_, the cookie
// checker, the listen port and the crypt queue's lifetime; packet paths hold it shared once
// per batch (a TUN read, a receive batch, a drained batch), never per packet. Then
// Peer::mu, then index_mu_ (held by receivers once per batch to resolve indices).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "crypto/cookie.h"
#include "crypto/noise.h"
#include "dataplane/allowedips.h"
#include "dataplane/bind.h"
#include "dataplane/config.h"
#include "dataplane/messages.h"
#include "dataplane/peer.h"
#include "dataplane/queue.h"
#include "dataplane/ratelimiter.h"
#include "tun/tun.h"

namespace meshwg::dataplane {

// Time source, injectable so tests can move time (rekey, expiry, cookies).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual Instant now() = 0;
  virtual WallTime wall() = 0;
};

class SystemClock final : public Clock {
 public:
  Instant now() override { return std::chrono::steady_clock::now(); }
  WallTime wall() override { return std::chrono::system_clock::now(); }
};

// Every reason the data plane drops a packet. Each has a counter.
enum class Drop : uint8_t {
  kMalformedMessage,     // wrong type word or length for its type
  kUnknownIndex,         // receiver index matches no session or handshake
  kDecryptFailed,        // transport tag did not verify
  kReplayed,             // counter seen before or too old for the window
  kKeypairExpired,       // received on a keypair past REJECT_AFTER_TIME / MESSAGES
  kBadInnerPacket,       // decrypted payload is not a valid IPv4/IPv6 packet
  kSourceNotAllowed,     // inner source address not in the peer's allowed IPs
  kNoRoute,              // outgoing destination in nobody's allowed IPs
  kNoEndpoint,           // peer has no endpoint yet
  kStagedOverflow,       // more than kMaxStagedPackets waiting for a handshake
  kHandshakeQueueFull,   // handshake queue at kMaxQueuedHandshakes
  kInvalidMac1,          // handshake message without a valid mac1
  kCookieSent,           // under load without a valid mac2: answered with a cookie
  kRateLimited,          // under load, source over its handshake rate
  kHandshakeFailed,      // noise processing failed (bad key, replayed timestamp, flood)
  kCookieReplyInvalid,   // cookie reply that does not verify
  kTunWriteFailed,
  kUdpSendFailed,
  kNoKey,                // device has no private key
  kQueueFull,            // the peer's in-order queue is full (more in flight than it holds)
  kNoBuffer,             // the packet buffer pool is exhausted
  kCount,
};
const char* drop_name(Drop d);

struct DeviceOptions {
  // Encrypt/decrypt worker threads; 0 = one per online core.
  int workers = 0;
  // Packet buffers (each holds a 64 KiB packet; memory is touched only as it is used).
  // Bound the packets in flight per direction, device-wide.
  size_t tx_buffers = 2048;
  size_t rx_buffers = 2048;
  // Runs shorter than this (ACKs, pings, a lone datagram) are sealed or opened by the thread
  // that produced them: a worker's wake-up costs more than their crypto, and it would add
  // latency to every round trip. 0 sends everything through the workers (tests).
  size_t inline_below = 8;
};

class Device {
 public:
  Device(tun::Tun& tun, Bind& bind, Clock& clock, const DeviceOptions& opts = {});
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Brings the device up: opens the bind on the configured port and starts the packet
  // threads. With timer_thread=false, tests drive the timers with tick().
  [[nodiscard]] bool start(bool timer_thread = true);
  void stop();  // idempotent; joins every thread
  bool running() const { return running_; }

  // Runs every timer due at clock.now() (the timer thread calls this).
  void tick();

  // ---- configuration (the UAPI's operations) ----
  // Runs fn with config_mu_ held exclusively: every *_locked call below must happen inside.
  // fn returns 0 or a positive errno, which with_config returns.
  int with_config(const std::function<int()>& fn);
  // Runs fn with config_mu_ held shared (for snapshots).
  void with_config_shared(const std::function<void()>& fn);

  [[nodiscard]] bool set_private_key_locked(std::span<const uint8_t, 32> priv);  // zero = clear
  [[nodiscard]] int set_listen_port_locked(uint16_t port);  // 0 or positive errno
  [[nodiscard]] int set_fwmark_locked(uint32_t mark);
  Peer* find_peer_locked(const crypto::PublicKey& pk);
  // Creates a peer; nullptr when the key equals our own public key (ignored, as
  // wireguard-go) or the peer limit is reached.
  Peer* add_peer_locked(const crypto::PublicKey& pk);
  void remove_peer_locked(Peer* p);
  void remove_all_peers_locked();
  void set_preshared_key_locked(Peer* p, std::span<const uint8_t, 32> psk);
  void set_endpoint_locked(Peer* p, const Endpoint& e);
  void set_persistent_keepalive_locked(Peer* p, uint16_t seconds);
  void clear_allowed_ips_locked(Peer* p);
  void add_allowed_ip_locked(Peer* p, const IpPrefix& prefix);
  void remove_allowed_ip_locked(Peer* p, const IpPrefix& prefix);

  // The two configuration operations as a whole (config.cc): a set applied atomically
  // (0 or a positive errno; a port that cannot be bound changes nothing), and a get.
  [[nodiscard]] int apply_set(const SetRequest& req);
  DeviceSnapshot snapshot();
  // Serves ch's commands on the timer thread (tick()), so a control plane in this process
  // configures the device without sharing a lock with it. Before start(); nullptr detaches.
  // ch must outlive the device or be detached first.
  void attach_config_channel(ConfigChannel* ch);

  // Read-only views, with config_mu_ held (shared or exclusive).
  const crypto::LocalStatic& identity_locked() const { return identity_; }
  uint16_t listen_port_locked() const { return listen_port_; }
  uint32_t fwmark_locked() const { return fwmark_; }
  // In creation order (stable across calls, like the kernel's peer list).
  void for_each_peer_locked(const std::function<void(Peer&)>& fn);
  void for_each_allowed_ip_locked(Peer* p, const std::function<void(const IpPrefix&)>& fn);

  uint64_t drops(Drop d) const { return drops_[size_t(d)].load(std::memory_order_relaxed); }
  // Cookie replies accepted (a peer under load asked us for mac2).
  uint64_t cookie_replies() const { return cookie_replies_.load(std::memory_order_relaxed); }
  size_t peer_count();
  int workers() const { return workers_; }

  // Test hooks: force the under-load state (cookie replies) regardless of queue length.
  void force_under_load(bool on) { force_under_load_ = on; }
  // Fuzzing hook: processes one datagram on the caller's thread, handshakes included (no
  // queue), so a fuzz input's effects are deterministic. The device need not be started.
  void receive_now(std::span<uint8_t> data, const Endpoint& from, bool under_load);

 private:
  struct IndexEntry {
    std::shared_ptr<Peer> peer;
    std::shared_ptr<Keypair> keypair;  // null: the index names an in-progress handshake
  };
  struct QueuedHandshake {
    std::vector<uint8_t> data;
    Endpoint from;
  };
  struct TimerEntry {
    Instant when;
    std::shared_ptr<Peer> peer;
    Timer timer;
    bool operator>(const TimerEntry& o) const { return when > o.when; }
  };

  // threads
  void tun_loop();
  void receive_loop(int i);
  void handshake_loop();
  void timer_loop();

  // pipeline.cc: the parallel crypto stage and the hand-off to the in-order stages.
  // Puts a run of packets for one peer and direction, whose pipeline fields are set, into
  // the peer's ordered queue and, chained, into the crypt queue as one item. Requires
  // config_mu_ held (shared or exclusive): stop() closes the crypt queue under it after
  // running_ is cleared, so a push never meets a closed queue. Drops are counted and their
  // buffers returned. Returns null, or a chain the caller must run_inline() once it holds
  // no lock: a short run unless kWorkers (handing it to a worker would cost more than its
  // crypto), or inbound packets when the device is not running.
  enum class Handoff : uint8_t {
    kWorkers,        // always to the workers, waking one (callers holding locks)
    kShortInline,    // short runs back to the caller, others to the workers, waking one
    kProducerFirst,  // as kShortInline, but nobody is woken for a lone chain: the caller
                     // runs it itself before it next sleeps (help()), unless more pile up
  };
  [[nodiscard]] PacketBuf* dispatch(std::span<PacketBuf* const> run, Handoff how);
  void run_inline(PacketBuf* chain);
  void worker_loop();
  // Seals or opens each packet of each chain, then drains the ordered queue of every peer
  // involved.
  void run_crypto(std::span<PacketBuf* const> chains);
  // A producer lends a hand when the crypt queue backs up: processes up to max chains.
  void help(size_t max_chains);
  // Packets per crypt-queue item: a producer cuts longer runs. Small enough that the
  // workers share one 64 KiB TUN read, large enough for a good UDP GSO batch.
  static constexpr size_t kMaxChain = 64;
  bool backlogged() const;
  // Timer thread, every 250 ms: measures the machine's idle CPU (/proc/stat) and decides
  // whether handing crypto to the workers can pay (see pipeline.cc).
  void sample_cpu();
  // tick(): applies what the config channel holds (a bounded batch).
  void serve_config_channel();
  void drain(Peer& peer, bool outbound);

  // send.cc
  // Routes each packet by destination and hands runs for one peer to send_run. Takes
  // ownership of every buffer. Holds config_mu_ shared. Appends to run_after the chains
  // the caller must run_inline() (see dispatch()).
  void route_and_send(std::span<PacketBuf* const> pkts, std::vector<PacketBuf*>& run_after);
  void send_run(Peer& peer, std::span<PacketBuf* const> run, std::vector<PacketBuf*>& run_after);
  void seal(PacketBuf& b);
  // The in-order stage of one peer's outgoing packets (ordered-queue drain token held).
  void drain_tx(Peer& peer, std::span<PacketBuf*> batch);
  void send_staged_locked(Peer& peer, std::unique_lock<std::mutex>& lk);
  void send_keepalive_locked(Peer& peer, std::unique_lock<std::mutex>& lk);
  void send_initiation_locked(Peer& peer, bool is_retry);
  void send_to_peer_locked(Peer& peer, std::span<const uint8_t> msg);
  void keep_key_fresh_send_locked(Peer& peer);

  // receive.cc
  // Resolves a received transport datagram (b holds it; from is its source) to its session
  // and fills b's pipeline fields. Requires index_mu_. False: dropped and counted (b is
  // still the caller's).
  [[nodiscard]] bool resolve_transport_locked(PacketBuf& b, const Endpoint& from);
  void open(PacketBuf& b);
  // The in-order stage of one peer's received packets (ordered-queue drain token held).
  void drain_rx(Peer& peer, std::span<PacketBuf*> batch);
  // Writes decrypted packets to the TUN, GRO-coalesced when the TUN has offloads, and
  // returns the buffers to their pool.
  void deliver(std::span<PacketBuf* const> pkts);
  void on_handshake_datagram(std::span<const uint8_t> data, const Endpoint& from);
  void on_handshake_message(std::vector<uint8_t>& data, const Endpoint& from, bool under_load);
  void consume_initiation(std::span<uint8_t> data, const Endpoint& from);
  void consume_response(std::span<uint8_t> data, const Endpoint& from);
  void consume_cookie_reply(std::span<const uint8_t> data);
  bool received_with_keypair_locked(Peer& peer, const std::shared_ptr<Keypair>& kp);
  void keep_key_fresh_receive_locked(Peer& peer);

  // handshake helpers (device.cc)
  std::shared_ptr<Keypair> install_session_locked(Peer& peer, crypto::SessionKeys& keys);
  void clear_keypairs_locked(Peer& peer);
  void clear_handshake_locked(Peer& peer);
  uint32_t new_index_locked(Peer& peer, std::shared_ptr<Keypair> kp);  // takes index_mu_
  void drop_index(uint32_t index);

  // timers.cc
  void timer_set_locked(Peer& peer, Timer t, Instant when);
  void timer_del_locked(Peer& peer, Timer t);
  bool timer_pending_locked(Peer& peer, Timer t) const;
  void timer_fire_locked(Peer& peer, Timer t, std::unique_lock<std::mutex>& lk);
  std::chrono::milliseconds jitter();
  void timers_data_sent_locked(Peer& peer);
  void timers_data_received_locked(Peer& peer);
  void timers_any_authenticated_packet_sent_locked(Peer& peer);
  void timers_any_authenticated_packet_received_locked(Peer& peer);
  void timers_any_authenticated_packet_traversal_locked(Peer& peer);
  void timers_handshake_initiated_locked(Peer& peer);
  void timers_handshake_complete_locked(Peer& peer);
  void timers_session_derived_locked(Peer& peer);

  void count(Drop d) { drops_[size_t(d)].fetch_add(1, std::memory_order_relaxed); }
  void log_drop(Drop d, const Endpoint* from);

  tun::Tun& tun_;
  Bind& bind_;
  Clock& clock_;

  std::shared_mutex config_mu_;
  crypto::LocalStatic identity_;
  crypto::CookieChecker cookie_checker_;
  uint16_t listen_port_ = 0;
  uint32_t fwmark_ = 0;
  std::unordered_map<std::string, std::shared_ptr<Peer>> peers_;  // key: raw public key bytes
  AllowedIps allowed_ips_;
  uint64_t next_peer_seq_ = 0;

  std::mutex index_mu_;
  std::unordered_map<uint32_t, IndexEntry> index_;

  std::mutex hs_mu_;
  std::condition_variable hs_cv_;
  std::deque<QueuedHandshake> handshake_queue_;
  Instant last_under_load_{};
  bool was_under_load_ = false;
  RateLimiter ratelimiter_;  // handshake thread only
  std::atomic<bool> force_under_load_{false};

  std::mutex timer_mu_;
  std::condition_variable timer_cv_;
  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<>> timer_heap_;
  ConfigChannel* channel_ = nullptr;
  bool channel_pending_ = false;  // under timer_mu_: the channel has commands to serve

  // Packet buffers: separate pools so a flood from the network cannot starve sending.
  PacketPool tx_pool_;
  PacketPool rx_pool_;
  // Created by start(), closed by stop(); see dispatch() for why config_mu_ orders it.
  std::unique_ptr<BlockingQueue<PacketBuf*>> crypt_queue_;
  const int workers_;
  const size_t inline_below_;
  // Whether chains go to the workers at all: only while the machine has idle CPU for them.
  std::atomic<bool> use_workers_{true};
  uint64_t cpu_prev_total_ = 0;  // timer thread only
  uint64_t cpu_prev_idle_ = 0;

  std::mutex rng_mu_;
  std::mt19937 rng_;

  const bool offload_;  // the TUN carries virtio-net headers (TSO reads, GRO writes)
  std::atomic<int> mtu_{1420};  // refreshed from the TUN every second: padding cap
  std::atomic<bool> running_{false};
  bool bind_open_ = false;
  bool timer_thread_ = true;
  std::vector<std::thread> threads_;         // I/O, handshake and timer threads
  std::vector<std::thread> worker_threads_;  // joined after threads_: they drain what is left
  std::array<std::atomic<uint64_t>, size_t(Drop::kCount)> drops_{};
  std::atomic<int64_t> last_drop_log_ns_{0};
  std::atomic<uint64_t> cookie_replies_{0};
};

}  // namespace meshwg::dataplane
