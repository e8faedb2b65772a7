// The configuration operations of wireguard.com/xplatform applied to the device (set as one
// atomic change, get as one consistent snapshot), and the in-process channel that carries
// them from a control-plane thread to the device's timer thread. Threads: see config.h.
#include "dataplane/config.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <tuple>

#include "dataplane/device.h"

namespace meshwg::dataplane {

ConfigChannel::ConfigChannel(size_t capacity)
    : commands_(capacity), replies_(capacity), efd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

ConfigChannel::~ConfigChannel() {
  if (efd_ >= 0) ::close(efd_);
}

bool ConfigChannel::submit(ConfigCommand&& c) {
  if (!commands_.try_push(std::move(c))) return false;
  std::lock_guard lk(wake_mu_);
  if (wake_) wake_();
  return true;
}

bool ConfigChannel::take_reply(ConfigReply& out) {
  uint64_t n;
  // Clear the eventfd before popping: a reply posted after the pop sets it again.
  if (efd_ >= 0) (void)!::read(efd_, &n, sizeof(n));
  return replies_.try_pop(out);
}

void ConfigChannel::set_consumer_wake(std::function<void()> wake) {
  std::lock_guard lk(wake_mu_);
  wake_ = std::move(wake);
}

void ConfigChannel::post_reply(ConfigReply&& r) {
  if (!replies_.try_push(std::move(r))) {
    replies_dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const uint64_t one = 1;
  if (efd_ >= 0) (void)!::write(efd_, &one, sizeof(one));
}

int Device::apply_set(const SetRequest& req) {
  return with_config([&]() -> int {
    // The only step that can fail is binding the port: do it first, so a failure leaves
    // everything else untouched.
    if (req.listen_port) {
      if (int e = set_listen_port_locked(*req.listen_port); e != 0) return e;
    }
    if (req.fwmark) {
      if (int e = set_fwmark_locked(*req.fwmark); e != 0) return e;
    }
    if (req.private_key) (void)set_private_key_locked(req.private_key->span());
    if (req.replace_peers) remove_all_peers_locked();
    for (const PeerChange& pc : req.peers) {
      Peer* peer = find_peer_locked(pc.public_key);
      if (pc.remove) {
        if (peer) remove_peer_locked(peer);
        continue;
      }
      if (!peer) {
        if (pc.update_only) continue;
        peer = add_peer_locked(pc.public_key);
        if (!peer) continue;  // our own public key: ignored, as wireguard-go does
      }
      if (pc.preshared_key) set_preshared_key_locked(peer, pc.preshared_key->span());
      if (pc.endpoint) set_endpoint_locked(peer, *pc.endpoint);
      if (pc.replace_allowed_ips) clear_allowed_ips_locked(peer);
      for (const AllowedIpChange& a : pc.allowed_ips) {
        if (a.remove)
          remove_allowed_ip_locked(peer, a.prefix);
        else
          add_allowed_ip_locked(peer, a.prefix);
      }
      // Last, so the keepalive it may send goes to the endpoint set above.
      if (pc.persistent_keepalive) set_persistent_keepalive_locked(peer, *pc.persistent_keepalive);
    }
    return 0;
  });
}

DeviceSnapshot Device::snapshot() {
  DeviceSnapshot snap;
  with_config_shared([&] {
    if (identity_.has_key) snap.private_key = identity_.private_key;
    snap.listen_port = listen_port_;
    snap.fwmark = fwmark_;
    for_each_peer_locked([&](Peer& p) {
      PeerSnapshot ps;
      ps.public_key = p.public_key;
      {
        std::lock_guard lk(p.mu);
        ps.preshared_key = p.preshared_key;
        if (p.endpoint.valid()) ps.endpoint = p.endpoint;
        if (p.last_handshake.time_since_epoch().count() != 0) {
          const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              p.last_handshake.time_since_epoch())
                              .count();
          ps.last_handshake_sec = ns / 1'000'000'000;
          ps.last_handshake_nsec = ns % 1'000'000'000;
        }
        ps.persistent_keepalive = p.persistent_keepalive;
      }
      ps.rx_bytes = p.rx_bytes.load();
      ps.tx_bytes = p.tx_bytes.load();
      for_each_allowed_ip_locked(&p, [&](const IpPrefix& pfx) { ps.allowed_ips.push_back(pfx); });
      // A canonical order makes `wg showconf` output stable, so setconf(showconf)
      // reproduces it byte for byte.
      std::sort(ps.allowed_ips.begin(), ps.allowed_ips.end(),
                [](const IpPrefix& x, const IpPrefix& y) {
                  return std::tie(x.addr.family, x.addr.bytes, x.cidr) <
                         std::tie(y.addr.family, y.addr.bytes, y.cidr);
                });
      snap.peers.push_back(std::move(ps));
    });
  });
  return snap;
}

void Device::attach_config_channel(ConfigChannel* ch) {
  if (channel_) channel_->set_consumer_wake(nullptr);
  channel_ = ch;
  if (ch) {
    ch->set_consumer_wake([this] {
      {
        std::lock_guard lk(timer_mu_);
        channel_pending_ = true;
      }
      timer_cv_.notify_one();
    });
  }
}

void Device::serve_config_channel() {
  if (!channel_) return;
  {
    std::lock_guard lk(timer_mu_);
    channel_pending_ = false;
  }
  // A bounded batch per tick, so a chatty control plane cannot starve the timers.
  constexpr int kMaxCommandsPerTick = 32;
  ConfigCommand c;
  int served = 0;
  for (; served < kMaxCommandsPerTick && channel_->take_command(c); ++served) {
    ConfigReply r;
    r.id = c.id;
    if (c.set)
      r.error = apply_set(*c.set);
    else
      r.snapshot = snapshot();
    channel_->post_reply(std::move(r));
    c = ConfigCommand{};
  }
  if (served == kMaxCommandsPerTick) {
    std::lock_guard lk(timer_mu_);
    channel_pending_ = true;  // more may wait: the timer loop comes straight back
  }
}

}  // namespace meshwg::dataplane
