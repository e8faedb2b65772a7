// Outgoing path (whitepaper §5.4.6 transport messages, §6.2 key freshness; kernel send.c):
//
//   TUN read (tun_loop; a TSO/USO super-packet is split into MTU-sized packets first)
//     ─► route_and_send: allowed-IPs by destination, consecutive packets for one peer form a run
//     ─► send_run: peer has a fresh current keypair? ── no ─► stage (≤128, oldest dropped)
//                                                   │          + initiation
//                                                   └─ yes ─► reserve run.size() nonces
//                  ─► pad + seal each in place (no lock) ─► Bind::send_batch (UDP GSO)
//
// Staged packets are flushed in order when a session becomes usable, before newer packets.
// Runs on tun_loop, and on the receive/handshake/timer threads when they flush or keepalive.
#include <spdlog/spdlog.h>

#include <array>
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

void Device::route_and_send(std::span<TxPacket> pkts) {
  std::shared_lock lk(config_mu_);
  size_t i = 0;
  Peer* run_peer = nullptr;
  size_t run_start = 0;
  auto flush = [&](size_t end) {
    if (run_peer && end > run_start) send_run(*run_peer, pkts.subspan(run_start, end - run_start));
    run_peer = nullptr;
  };
  for (; i < pkts.size(); ++i) {
    const uint8_t* pkt = pkts[i].buf + kTransportHeaderSize;
    const size_t n = pkts[i].len;
    std::span<const uint8_t> dst;
    if (n >= 20 && (pkt[0] >> 4) == 4) {
      dst = {pkt + 16, 4};
    } else if (n >= 40 && (pkt[0] >> 4) == 6) {
      dst = {pkt + 24, 16};
    } else {
      flush(i);
      count(Drop::kBadInnerPacket);
      continue;
    }
    Peer* peer = allowed_ips_.lookup(dst);
    if (!peer) {
      // The kernel answers with ICMP unreachable; we drop and count, as wireguard-go does.
      flush(i);
      count(Drop::kNoRoute);
      continue;
    }
    if (peer != run_peer) {
      flush(i);
      run_peer = peer;
      run_start = i;
    }
  }
  flush(i);
}

void Device::send_run(Peer& peer, std::span<TxPacket> run) {
  std::unique_lock lk(peer.mu);
  if (peer.removed) return;
  auto stage_all = [&] {
    for (const TxPacket& p : run) {
      if (peer.staged.size() >= kMaxStagedPackets) {
        peer.staged.pop_front();
        count(Drop::kStagedOverflow);
      }
      peer.staged.emplace_back(p.buf + kTransportHeaderSize, p.buf + kTransportHeaderSize + p.len);
    }
  };
  if (!peer.staged.empty()) {
    // Older packets are waiting: keep the order.
    stage_all();
    send_staged_locked(peer, lk);
    return;
  }
  const Instant now = clock_.now();
  std::shared_ptr<Keypair> kp = peer.current;
  if (!keypair_usable(kp.get(), now)) {
    stage_all();
    send_initiation_locked(peer, false);
    return;
  }
  // One reservation of nonces for the whole run: the run is sealed without the lock.
  const uint64_t first = kp->send_counter.fetch_add(run.size(), std::memory_order_relaxed);
  if (first + run.size() > kRejectAfterMessages || first + run.size() < first) {
    stage_all();
    send_initiation_locked(peer, false);
    return;
  }
  if (!peer.endpoint.valid()) {
    drops_[size_t(Drop::kNoEndpoint)].fetch_add(run.size(), std::memory_order_relaxed);
    return;
  }
  Endpoint to = peer.endpoint;
  lk.unlock();
  std::array<std::span<const uint8_t>, 128> dgrams;
  size_t total_bytes = 0;
  size_t sent = 0;
  for (size_t off = 0; off < run.size(); off += dgrams.size()) {
    const size_t m = std::min(dgrams.size(), run.size() - off);
    for (size_t j = 0; j < m; ++j) {
      const TxPacket& p = run[off + j];
      dgrams[j] = {p.buf, seal_packet(*kp, first + off + j, p.buf, p.len)};
    }
    const size_t k = bind_.send_batch({dgrams.data(), m}, to);
    for (size_t j = 0; j < k; ++j) total_bytes += dgrams[j].size();
    sent += k;
    if (k < m) break;
  }
  lk.lock();
  if (sent < run.size()) {
    drops_[size_t(Drop::kUdpSendFailed)].fetch_add(run.size() - sent, std::memory_order_relaxed);
    if (!to.local.family && peer.endpoint.local.family) peer.endpoint.local = {};
  }
  if (sent == 0) return;
  peer.tx_bytes.fetch_add(total_bytes, std::memory_order_relaxed);
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
