// WireGuard timers (whitepaper §6.2-6.5; kernel timers.c), per peer:
//   retransmit_handshake  REKEY_TIMEOUT+jitter after an initiation with no response:
//                         resend, up to MAX_TIMER_HANDSHAKES (90 s), then give up
//   send_keepalive        KEEPALIVE_TIMEOUT after data was received and nothing was sent
//   new_handshake         KEEPALIVE+REKEY_TIMEOUT+jitter after data was sent and nothing
//                         authenticated came back: the session is presumed dead
//   zero_key_material     3×REJECT_AFTER_TIME after the last session was derived: wipe keys
//   persistent_keepalive  the configured interval after any authenticated packet
// Deadlines live in Peer::deadline (guarded by Peer::mu); the device's heap holds at most
// one entry per (peer, timer). tick() runs on the timer thread (or a test).
#include <spdlog/spdlog.h>

#include "dataplane/device.h"

namespace meshwg::dataplane {

std::chrono::milliseconds Device::jitter() {
  std::lock_guard lk(rng_mu_);
  return std::chrono::milliseconds(
      std::uniform_int_distribution<int>(0, int(kRekeyTimeoutJitterMax.count()))(rng_));
}

void Device::timer_set_locked(Peer& peer, Timer t, Instant when) {
  const size_t i = size_t(t);
  peer.deadline[i] = when;
  if (peer.queued[i] && *peer.queued[i] <= when) return;  // fires early, re-queues itself
  peer.queued[i] = when;
  std::lock_guard lk(timer_mu_);
  const bool earliest = timer_heap_.empty() || when < timer_heap_.top().when;
  timer_heap_.push({when, peer.shared_from_this(), t});
  if (earliest) timer_cv_.notify_one();
}

void Device::timer_del_locked(Peer& peer, Timer t) { peer.deadline[size_t(t)].reset(); }

bool Device::timer_pending_locked(Peer& peer, Timer t) const {
  return peer.deadline[size_t(t)].has_value();
}

void Device::tick() {
  serve_config_channel();
  const Instant now = clock_.now();
  for (int budget = 0; budget < 100000; ++budget) {
    TimerEntry e;
    {
      std::lock_guard lk(timer_mu_);
      if (timer_heap_.empty() || timer_heap_.top().when > now) return;
      e = timer_heap_.top();
      timer_heap_.pop();
    }
    std::shared_lock clk(config_mu_);
    Peer& peer = *e.peer;
    std::unique_lock plk(peer.mu);
    const size_t i = size_t(e.timer);
    if (!peer.queued[i] || *peer.queued[i] != e.when) continue;  // superseded entry
    peer.queued[i].reset();
    if (peer.removed || !peer.deadline[i]) continue;
    if (*peer.deadline[i] > now) {
      // Moved later since it was queued: queue it again at its real deadline.
      timer_set_locked(peer, e.timer, *peer.deadline[i]);
      continue;
    }
    peer.deadline[i].reset();
    timer_fire_locked(peer, e.timer, plk);
  }
}

void Device::timer_fire_locked(Peer& peer, Timer t, std::unique_lock<std::mutex>& lk) {
  const Instant now = clock_.now();
  switch (t) {
    case Timer::kRetransmitHandshake:
      if (peer.handshake_attempts > kMaxTimerHandshakes) {
        // Give up after REKEY_ATTEMPT_TIME; the next packet to send starts over.
        spdlog::debug("handshake did not complete after {} attempts, giving up",
                      kMaxTimerHandshakes + 2);
        timer_del_locked(peer, Timer::kSendKeepalive);
        peer.staged.clear();
        if (!timer_pending_locked(peer, Timer::kZeroKeyMaterial))
          timer_set_locked(peer, Timer::kZeroKeyMaterial, now + 3 * kRejectAfterTime);
      } else {
        ++peer.handshake_attempts;
        peer.endpoint.local = {};  // the source address may be what broke the path
        send_initiation_locked(peer, true);
      }
      break;
    case Timer::kSendKeepalive:
      send_keepalive_locked(peer, lk);
      if (peer.need_another_keepalive) {
        peer.need_another_keepalive = false;
        timer_set_locked(peer, Timer::kSendKeepalive, now + kKeepaliveTimeout);
      }
      break;
    case Timer::kNewHandshake:
      spdlog::debug("no reply for {} s after sending data, new handshake",
                    (kKeepaliveTimeout + kRekeyTimeout).count());
      peer.endpoint.local = {};
      send_initiation_locked(peer, false);
      break;
    case Timer::kZeroKeyMaterial:
      clear_keypairs_locked(peer);
      clear_handshake_locked(peer);
      break;
    case Timer::kPersistentKeepalive:
      if (peer.persistent_keepalive != 0) send_keepalive_locked(peer, lk);
      break;
    case Timer::kCount:
      break;
  }
}

void Device::timers_data_sent_locked(Peer& peer) {
  if (!timer_pending_locked(peer, Timer::kNewHandshake))
    timer_set_locked(peer, Timer::kNewHandshake,
                     clock_.now() + kKeepaliveTimeout + kRekeyTimeout + jitter());
}

void Device::timers_data_received_locked(Peer& peer) {
  if (!timer_pending_locked(peer, Timer::kSendKeepalive))
    timer_set_locked(peer, Timer::kSendKeepalive, clock_.now() + kKeepaliveTimeout);
  else
    peer.need_another_keepalive = true;
}

void Device::timers_any_authenticated_packet_sent_locked(Peer& peer) {
  timer_del_locked(peer, Timer::kSendKeepalive);
}

void Device::timers_any_authenticated_packet_received_locked(Peer& peer) {
  timer_del_locked(peer, Timer::kNewHandshake);
}

void Device::timers_any_authenticated_packet_traversal_locked(Peer& peer) {
  if (peer.persistent_keepalive != 0)
    timer_set_locked(peer, Timer::kPersistentKeepalive,
                     clock_.now() + std::chrono::seconds(peer.persistent_keepalive));
}

void Device::timers_handshake_initiated_locked(Peer& peer) {
  timer_set_locked(peer, Timer::kRetransmitHandshake, clock_.now() + kRekeyTimeout + jitter());
}

void Device::timers_handshake_complete_locked(Peer& peer) {
  timer_del_locked(peer, Timer::kRetransmitHandshake);
  peer.handshake_attempts = 0;
  peer.sent_lastminute_handshake = false;
  peer.last_handshake = clock_.wall();
}

void Device::timers_session_derived_locked(Peer& peer) {
  timer_set_locked(peer, Timer::kZeroKeyMaterial, clock_.now() + 3 * kRejectAfterTime);
}

}  // namespace meshwg::dataplane
