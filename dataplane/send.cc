// Outgoing path (whitepaper §5.4.6 transport messages, §6.2 key freshness; kernel send.c):
//
//   TUN read (tun_loop; a TSO/USO super-packet is split into pooled, MTU-sized packets)
//     ─► route_and_send: allowed-IPs by destination, consecutive packets for one peer form a run
//     ─► send_run: peer has a fresh current keypair? ── no ─► stage (≤128, oldest dropped)
//                                                   │          + initiation
//                                                   └─ yes ─► reserve run.size() nonces
//     ─► dispatch (pipeline.cc) ─► a worker pads and seals in place (seal)
//     ─► drain_tx, in nonce order per peer: Bind::send_batch (UDP GSO), counters, timers
//
// Staged packets are flushed through the same pipeline when a session becomes usable; they
// take their nonces first, so they leave before anything sent after the flush.
// route_and_send runs on tun_loop; send_staged_locked on whichever thread completes a
// handshake, fires a timer or drains received packets; drain_tx on the workers.
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
// A sealed keepalive: header, no payload, tag.
constexpr size_t kKeepaliveWireSize = kTransportHeaderSize + kTagSize;
}  // namespace

void Device::seal(PacketBuf& b) {
  const size_t len = b.size();
  const size_t padded = padded_length(len, size_t(mtu_.load(std::memory_order_relaxed)));
  uint8_t* pad = b.push_back(padded - len + kTagSize);
  uint8_t* hdr = b.push_front(kTransportHeaderSize);
  if (!pad || !hdr) {  // the pool's headroom and tailroom are sized for this: a bug
    count(Drop::kUdpSendFailed);
    b.crypt_state.finish(CryptState::kDropped);
    return;
  }
  std::memset(pad, 0, padded - len);
  uint8_t* plain = hdr + kTransportHeaderSize;
  store_le32(hdr, uint32_t(MessageType::kTransport));
  store_le32(hdr + 4, b.keypair->remote_index);
  store_le64(hdr + 8, b.nonce);
  crypto::transport_seal(plain, {plain, padded}, b.nonce, b.keypair->send_key.span());
  b.crypt_state.finish(CryptState::kDone);
}

void Device::route_and_send(std::span<PacketBuf* const> pkts,
                            std::vector<PacketBuf*>& run_after) {
  std::shared_lock lk(config_mu_);
  size_t i = 0;
  Peer* run_peer = nullptr;
  size_t run_start = 0;
  auto flush = [&](size_t end) {
    if (run_peer && end > run_start)
      send_run(*run_peer, pkts.subspan(run_start, end - run_start), run_after);
    run_peer = nullptr;
  };
  auto drop = [&](Drop d) {
    flush(i);
    count(d);
    tx_pool_.put(pkts[i]);
  };
  for (; i < pkts.size(); ++i) {
    const uint8_t* pkt = pkts[i]->head();
    const size_t n = pkts[i]->size();
    std::span<const uint8_t> dst;
    if (n >= 20 && (pkt[0] >> 4) == 4) {
      dst = {pkt + 16, 4};
    } else if (n >= 40 && (pkt[0] >> 4) == 6) {
      dst = {pkt + 24, 16};
    } else {
      drop(Drop::kBadInnerPacket);
      continue;
    }
    Peer* peer = allowed_ips_.lookup(dst);
    if (!peer) {
      // The kernel answers with ICMP unreachable; we drop and count, as wireguard-go does.
      drop(Drop::kNoRoute);
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

void Device::send_run(Peer& peer, std::span<PacketBuf* const> run,
                      std::vector<PacketBuf*>& run_after) {
  auto release_all = [&] {
    for (PacketBuf* b : run) tx_pool_.put(b);
  };
  std::unique_lock lk(peer.mu);
  if (peer.removed) {
    release_all();
    return;
  }
  auto stage_all = [&] {
    for (PacketBuf* b : run) {
      if (peer.staged.size() >= kMaxStagedPackets) {
        peer.staged.pop_front();
        count(Drop::kStagedOverflow);
      }
      peer.staged.emplace_back(b->head(), b->head() + b->size());
    }
    release_all();
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
  // One reservation of nonces for the whole run, under the lock; the run is sealed by the
  // workers without it.
  const uint64_t first = kp->send_counter.fetch_add(run.size(), std::memory_order_relaxed);
  if (first + run.size() > kRejectAfterMessages || first + run.size() < first) {
    stage_all();
    send_initiation_locked(peer, false);
    return;
  }
  if (!peer.endpoint.valid()) {
    drops_[size_t(Drop::kNoEndpoint)].fetch_add(run.size(), std::memory_order_relaxed);
    release_all();
    return;
  }
  lk.unlock();
  for (size_t j = 0; j < run.size(); ++j) {
    PacketBuf* b = run[j];
    b->outbound = true;
    b->peer = &peer;
    b->keypair = kp;
    b->nonce = first + j;
  }
  for (size_t off = 0; off < run.size(); off += kMaxChain) {
    if (PacketBuf* c = dispatch(run.subspan(off, std::min(kMaxChain, run.size() - off)),
                                 Handoff::kProducerFirst))
      run_after.push_back(c);
  }
}

void Device::drain_tx(Peer& peer, std::span<PacketBuf*> batch) {
  // The caller (run_crypto) holds a keypair reference, so peer outlives the buffers
  // returned below.
  std::array<std::span<const uint8_t>, OrderedQueue<PacketBuf>::kMaxDrainBatch> dgrams;
  size_t n = 0;
  for (PacketBuf* b : batch)
    if (b->crypt_state.load() == CryptState::kDone) dgrams[n++] = b->bytes();
  Endpoint to;
  {
    std::shared_lock clk(config_mu_);
    std::lock_guard lk(peer.mu);
    to = peer.endpoint;
    if (peer.removed || n == 0) {
      n = 0;
    } else if (!to.valid()) {
      drops_[size_t(Drop::kNoEndpoint)].fetch_add(n, std::memory_order_relaxed);
      n = 0;
    } else {
      // Before the send, as the kernel does: the timers see the packets as on their way.
      timers_any_authenticated_packet_traversal_locked(peer);
      timers_any_authenticated_packet_sent_locked(peer);
    }
  }
  if (n == 0) {
    for (PacketBuf* b : batch) tx_pool_.put(b);
    return;
  }
  const bool had_local = to.local.family != 0;
  const size_t sent = bind_.send_batch({dgrams.data(), n}, to);
  size_t bytes = 0;
  bool data = false;
  for (size_t j = 0; j < sent; ++j) {
    bytes += dgrams[j].size();
    data |= dgrams[j].size() > kKeepaliveWireSize;
  }
  for (PacketBuf* b : batch) tx_pool_.put(b);
  std::shared_lock clk(config_mu_);  // a rekey reads the identity
  std::lock_guard lk(peer.mu);
  if (sent < n) {
    drops_[size_t(Drop::kUdpSendFailed)].fetch_add(n - sent, std::memory_order_relaxed);
    // The bind dropped a sticky source address that no longer exists: forget it.
    if (had_local && !to.local.family) peer.endpoint.local = {};
  }
  if (sent == 0 || peer.removed) return;
  peer.tx_bytes.fetch_add(bytes, std::memory_order_relaxed);
  if (data) timers_data_sent_locked(peer);
  keep_key_fresh_send_locked(peer);
}

void Device::send_staged_locked(Peer& peer, std::unique_lock<std::mutex>& lk) {
  (void)lk;  // held throughout; dispatch() never waits and never drains
  if (!running_) return;  // kept until the device runs (start() flushes keepalives)
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
  std::array<PacketBuf*, kMaxChain> chain;
  size_t n = 0;
  auto flush = [&] {
    (void)dispatch({chain.data(), n}, Handoff::kWorkers);  // outbound: always null
    n = 0;
  };
  while (!peer.staged.empty()) {
    std::vector<uint8_t>& pkt = peer.staged.front();
    PacketBuf* b = tx_pool_.get();
    if (!b || b->tailroom() < pkt.size() + kPaddingMultiple + kTagSize) {
      tx_pool_.put(b);
      count(Drop::kNoBuffer);
      break;  // what is left stays staged for the next flush
    }
    const uint64_t nonce = kp->send_counter.fetch_add(1, std::memory_order_relaxed);
    if (nonce >= kRejectAfterMessages) {
      tx_pool_.put(b);
      send_initiation_locked(peer, false);
      break;
    }
    if (!pkt.empty()) std::memcpy(b->push_back(pkt.size()), pkt.data(), pkt.size());
    peer.staged.pop_front();
    b->outbound = true;
    b->peer = &peer;
    b->keypair = kp;
    b->nonce = nonce;
    chain[n++] = b;
    if (n == chain.size()) flush();
  }
  flush();
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
