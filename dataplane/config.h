// The device's configuration operations, as the cross-platform configuration interface
// defines them (wireguard.com/xplatform "set" and "get"), and the channel through which a
// control plane in the same process performs them without sharing a lock with it.
//
// Pipeline:
//
//   control thread ──submit()──► commands (SpscQueue) ──► timer thread: Device::tick()
//                                                          serve_config_channel():
//                                                            apply_set() / snapshot()
//   control thread ◄─take_reply()── replies (SpscQueue) ◄──┘  (+ eventfd write)
//
// submit / take_reply: single producer / single consumer, the control thread.
// take_command / post_reply: single consumer / single producer, the device's timer thread.
// The data plane never waits for the control plane: a reply that finds the reply queue full
// is dropped and counted (replies_dropped), and the control plane times the command out.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include "crypto/primitives.h"
#include "dataplane/ip.h"
#include "dataplane/queue.h"

namespace meshwg::dataplane {

struct AllowedIpChange {
  IpPrefix prefix;
  bool remove = false;  // "allowed_ip=-a.b.c.d/n"
};

struct PeerChange {
  crypto::PublicKey public_key{};
  bool remove = false;
  bool update_only = false;
  std::optional<crypto::Key> preshared_key;  // all-zero = remove the PSK
  std::optional<Endpoint> endpoint;
  std::optional<uint16_t> persistent_keepalive;  // seconds, 0 = off
  bool replace_allowed_ips = false;
  std::vector<AllowedIpChange> allowed_ips;  // in order
};

// One "set": applied as a whole under the configuration lock, or (a port that cannot be
// bound) not at all.
struct SetRequest {
  std::optional<crypto::Key> private_key;  // all-zero = remove the key
  std::optional<uint16_t> listen_port;
  std::optional<uint32_t> fwmark;
  bool replace_peers = false;
  std::vector<PeerChange> peers;  // in order; the same key may appear twice
};

struct PeerSnapshot {
  crypto::PublicKey public_key{};
  crypto::Key preshared_key;  // zero when none
  std::optional<Endpoint> endpoint;
  int64_t last_handshake_sec = 0;
  int64_t last_handshake_nsec = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
  uint16_t persistent_keepalive = 0;
  std::vector<IpPrefix> allowed_ips;  // canonical order: IPv4 first, then address, length
};

// One "get".
struct DeviceSnapshot {
  std::optional<crypto::Key> private_key;
  uint16_t listen_port = 0;
  uint32_t fwmark = 0;
  std::vector<PeerSnapshot> peers;  // in creation order
};

struct ConfigCommand {
  uint64_t id = 0;                 // echoed in the reply
  std::optional<SetRequest> set;   // empty: a get
};

struct ConfigReply {
  uint64_t id = 0;
  int error = 0;                            // set: 0 or a positive errno
  std::optional<DeviceSnapshot> snapshot;   // get
};

class ConfigChannel {
 public:
  explicit ConfigChannel(size_t capacity = 64);
  ~ConfigChannel();
  ConfigChannel(const ConfigChannel&) = delete;
  ConfigChannel& operator=(const ConfigChannel&) = delete;

  // ---- control thread ----
  // Single producer. False when the command queue is full (c is left untouched).
  [[nodiscard]] bool submit(ConfigCommand&& c);
  // Single consumer. The oldest reply, or false.
  [[nodiscard]] bool take_reply(ConfigReply& out);
  // Readable (POLLIN) while replies may be pending; take_reply() clears it.
  int reply_fd() const { return efd_; }
  uint64_t replies_dropped() const { return replies_dropped_.load(std::memory_order_relaxed); }

  // ---- device side ----
  // The device's consumer registers how it is woken (Device::attach_config_channel).
  void set_consumer_wake(std::function<void()> wake);
  // Single consumer (timer thread).
  [[nodiscard]] bool take_command(ConfigCommand& out) { return commands_.try_pop(out); }
  // Single producer (timer thread). Never blocks: a full reply queue drops and counts.
  void post_reply(ConfigReply&& r);

 private:
  SpscQueue<ConfigCommand> commands_;
  SpscQueue<ConfigReply> replies_;
  int efd_ = -1;
  std::atomic<uint64_t> replies_dropped_{0};
  std::mutex wake_mu_;  // guards wake_ against attach/detach only
  std::function<void()> wake_;
};

}  // namespace meshwg::dataplane
