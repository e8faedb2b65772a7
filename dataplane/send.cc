// Outgoing path (whitepaper §5.4.6 transport messages, §6.2 key freshness; kernel send.c):
//
//   TUN read (tun_loop) ─► allowed-IPs by destination ─► send_packet:
//     peer has a fresh current keypair? ── no ─► stage (≤128, oldest dropped) + initiation
//                                       └─ yes ─► nonce = counter++ ─► pad ─► seal ─► UDP send
//
// Staged packets are flushed in order when a session becomes usable, before newer packets.
// Runs on tun_loop, and on the receive/handshake/timer threads when they flush or keepalive.
#include <spdlog/spdlog.h>

#include <cstring>

#include "crypto/aead.h"
#include "dataplane/device.h"

namespace meshwg::dataplane {

namespace {
bool keypair_usable(const Keypair* kp, Instant now) {
  return kp && now - kp->created < kRejectAfterTime &&
         kp->send_counter.load(std::memory_order_relaxed) < kRejectAfterMessages;
}
}  // namespace

size_t Device::seal_packet(Keypair& kp, uint64_t nonce, uint8_t* buf, size_t len) {
  uint8_t* plain = buf + kTransportHeaderSize;
  const size_t padded = padded_length(len, size_t(mtu_.load(std::memory_order_relaxed)));
  std::memset(plain + len, 0, padded - len);
  store_le32(buf, uint32_t(MessageType::kTransport));
  store_le32(buf + 4, kp.remote_index);
  store_le64(buf + 8, nonce);
  crypto::transport_seal(plain, {plain, padded}, nonce, kp.send_key.span());
  return kTransportHeaderSize + padded + kTagSize;
}

void Device::send_packet(Peer& peer, uint8_t* buf, size_t len) {
  std::unique_lock lk(peer.mu);
  if (peer.removed) return;
  auto stage = [&] {
    if (peer.staged.size() >= kMaxStagedPackets) {
      peer.staged.pop_front();
      count(Drop::kStagedOverflow);
    }
    peer.staged.emplace_back(buf + kTransportHeaderSize, buf + kTransportHeaderSize + len);
  };
  if (!peer.staged.empty()) {
    // Older packets are waiting: keep the order.
    stage();
    send_staged_locked(peer, lk);
    return;
  }
  const Instant now = clock_.now();
  std::shared_ptr<Keypair> kp = peer.current;
  if (!keypair_usable(kp.get(), now)) {
    stage();
    send_initiation_locked(peer, false);
    return;
  }
  const uint64_t nonce = kp->send_counter.fetch_add(1, std::memory_order_relaxed);
  if (nonce >= kRejectAfterMessages) {
    stage();
    send_initiation_locked(peer, false);
    return;
  }
  if (!peer.endpoint.valid()) {
    count(Drop::kNoEndpoint);
    return;
  }
  Endpoint to = peer.endpoint;
  lk.unlock();
  // Crypto and the syscall run without the peer lock.
  const size_t total = seal_packet(*kp, nonce, buf, len);
  const bool ok = bind_.send({buf, total}, to);
  lk.lock();
  if (!ok) {
    count(Drop::kUdpSendFailed);
    if (!to.local.family && peer.endpoint.local.family) peer.endpoint.local = {};
    return;
  }
  peer.tx_bytes.fetch_add(total, std::memory_order_relaxed);
  timers_any_authenticated_packet_traversal_locked(peer);
  timers_any_authenticated_packet_sent_locked(peer);
  timers_data_sent_locked(peer);
  keep_key_fresh_send_locked(peer);
}

void Device::send_staged_locked(Peer& peer, std::unique_lock<std::mutex>& lk) {
  (void)lk;  // held throughout: staged flushes are rare (after a handshake)
  const Instant now = clock_.now();
  std::shared_ptr<Keypair> kp = peer.current;
  if (!keypair_usable(kp.get(), now)) {
    send_initiation_locked(peer, false);
    return;
  }
  if (!peer.endpoint.valid()) {
    count(Drop::kNoEndpoint);
    return;
  }
  std::vector<uint8_t> buf;
  bool data_sent = false;
  while (!peer.staged.empty()) {
    std::vector<uint8_t> pkt = std::move(peer.staged.front());
    peer.staged.pop_front();
    const uint64_t nonce = kp->send_counter.fetch_add(1, std::memory_order_relaxed);
    if (nonce >= kRejectAfterMessages) {
      peer.staged.push_front(std::move(pkt));
      send_initiation_locked(peer, false);
      return;
    }
    buf.resize(kTransportHeaderSize + pkt.size() + kPaddingMultiple + kTagSize);
    if (!pkt.empty()) std::memcpy(buf.data() + kTransportHeaderSize, pkt.data(), pkt.size());
    const size_t total = seal_packet(*kp, nonce, buf.data(), pkt.size());
    if (!bind_.send({buf.data(), total}, peer.endpoint)) {
      count(Drop::kUdpSendFailed);
      continue;
    }
    peer.tx_bytes.fetch_add(total, std::memory_order_relaxed);
    timers_any_authenticated_packet_traversal_locked(peer);
    timers_any_authenticated_packet_sent_locked(peer);
    if (!pkt.empty()) data_sent = true;
  }
  if (data_sent) timers_data_sent_locked(peer);
  keep_key_fresh_send_locked(peer);
}

void Device::send_keepalive_locked(Peer& peer, std::unique_lock<std::mutex>& lk) {
  // An empty packet is a keepalive; when data is already waiting it confirms just as well.
  if (peer.staged.empty()) peer.staged.emplace_back();
  send_staged_locked(peer, lk);
}

void Device::send_to_peer_locked(Peer& peer, std::span<const uint8_t> msg) {
  if (!peer.endpoint.valid()) {
    count(Drop::kNoEndpoint);
    return;
  }
  if (!bind_.send(msg, peer.endpoint)) {
    count(Drop::kUdpSendFailed);
    return;
  }
  peer.tx_bytes.fetch_add(msg.size(), std::memory_order_relaxed);
}

void Device::send_initiation_locked(Peer& peer, bool is_retry) {
  const Instant now = clock_.now();
  if (!is_retry) peer.handshake_attempts = 0;
  // One initiation per REKEY_TIMEOUT, however many packets ask for one.
  if (peer.sent_handshake_ever && now - peer.last_sent_handshake < kRekeyTimeout) return;
  if (!identity_.has_key || !peer.handshake.usable() || peer.removed) {
    count(Drop::kNoKey);
    return;
  }
  peer.last_sent_handshake = now;
  peer.sent_handshake_ever = true;
  drop_index(peer.handshake_index);
  peer.handshake_index = new_index_locked(peer, nullptr);
  MessageInitiation msg{};
  const crypto::Tai64n ts = crypto::tai64n_from(clock_.wall());
  if (!peer.handshake.create_initiation(msg, identity_, peer.handshake_index, ts)) {
    drop_index(peer.handshake_index);
    peer.handshake_index = 0;
    count(Drop::kHandshakeFailed);
    return;
  }
  auto bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&msg), sizeof(msg));
  peer.cookie.add_macs(bytes, now);
  timers_any_authenticated_packet_traversal_locked(peer);
  timers_any_authenticated_packet_sent_locked(peer);
  send_to_peer_locked(peer, bytes);
  timers_handshake_initiated_locked(peer);
}

void Device::keep_key_fresh_send_locked(Peer& peer) {
  const Keypair* kp = peer.current.get();
  if (!kp || !kp->initiator) return;
  const Instant now = clock_.now();
  if (kp->send_counter.load(std::memory_order_relaxed) > kRekeyAfterMessages ||
      now - kp->created > kRekeyAfterTime)
    send_initiation_locked(peer, false);
}

}  // namespace meshwg::dataplane
