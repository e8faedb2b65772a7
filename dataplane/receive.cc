// Incoming path (whitepaper §5.4.2-5.4.7; kernel receive.c):
//
//   UDP receive (receive_loop, one per socket) ─► classify by type word and exact length
//     ├─ transport ─► index (resolve_transport_locked) ─► dispatch (pipeline.cc)
//     │     ─► a worker opens it in place (open) ─► drain_rx, in arrival order per peer:
//     │        replay window ─► roam endpoint ─► timers ─► inner IP length/version
//     │        ─► allowed-IPs source check ─► deliver: GRO-merge ─► TUN write
//     └─ initiation / response / cookie ─► handshake_queue_ (bounded; multi producer)
//   handshake_loop (single consumer) ─► mac1 ─► [under load: mac2 or cookie reply; rate
//     limit per source] ─► noise ─► respond / install session ─► flush staged
//
// The replay check runs in the in-order stage, after decryption (only authenticated
// counters may move the window) and one drain at a time per peer (so the window needs no
// lock). The endpoint is updated from any authenticated packet before the source check, so
// a peer that roams is followed even when its inner packet is refused (netns.sh test 7).
#include <spdlog/spdlog.h>

#include <cstring>

#include "crypto/aead.h"
#include "dataplane/device.h"
#include "tun/offload.h"

namespace meshwg::dataplane {

void Device::on_handshake_datagram(std::span<const uint8_t> data, const Endpoint& from) {
  std::lock_guard lk(hs_mu_);
  if (handshake_queue_.size() >= kMaxQueuedHandshakes) {
    count(Drop::kHandshakeQueueFull);
    return;
  }
  handshake_queue_.push_back({std::vector<uint8_t>(data.begin(), data.end()), from});
  hs_cv_.notify_one();
}

void Device::receive_now(std::span<uint8_t> data, const Endpoint& from, bool under_load) {
  const uint32_t type = classify(data.data(), data.size());
  if (type == 0) {
    count(Drop::kMalformedMessage);
    return;
  }
  if (type != uint32_t(MessageType::kTransport)) {
    std::vector<uint8_t> copy(data.begin(), data.end());
    on_handshake_message(copy, from, under_load);
    return;
  }
  PacketBuf* b = rx_pool_.get();
  if (!b || b->tailroom() < data.size()) {
    rx_pool_.put(b);
    count(Drop::kNoBuffer);
    return;
  }
  std::memcpy(b->push_back(data.size()), data.data(), data.size());
  PacketBuf* inline_chain;
  {
    std::shared_lock clk(config_mu_);
    bool ok;
    {
      std::lock_guard ilk(index_mu_);
      ok = resolve_transport_locked(*b, from);
    }
    if (!ok) {
      rx_pool_.put(b);
      return;
    }
    inline_chain = dispatch({&b, 1}, Handoff::kShortInline);
  }
  run_inline(inline_chain);
}

bool Device::resolve_transport_locked(PacketBuf& b, const Endpoint& from) {
  const uint8_t* hdr = b.head();
  const uint32_t receiver = load_le32(hdr + 4);
  const uint64_t counter = load_le64(hdr + 8);
  auto it = index_.find(receiver);
  if (it == index_.end() || !it->second.keypair) {
    count(Drop::kUnknownIndex);
    return false;
  }
  const std::shared_ptr<Keypair>& kp = it->second.keypair;
  if (clock_.now() - kp->created >= kRejectAfterTime || counter >= kRejectAfterMessages) {
    count(Drop::kKeypairExpired);
    return false;
  }
  b.outbound = false;
  b.peer = it->second.peer.get();
  b.keypair = kp;
  b.nonce = counter;
  b.wire_len = uint32_t(b.size());
  b.endpoint = from;
  return true;
}

void Device::open(PacketBuf& b) {
  uint8_t* plain = b.head() + kTransportHeaderSize;
  const size_t sealed_len = b.size() - kTransportHeaderSize;
  if (!crypto::transport_open(plain, {plain, sealed_len}, b.nonce, b.keypair->recv_key.span())) {
    count(Drop::kDecryptFailed);
    log_drop(Drop::kDecryptFailed, &b.endpoint);
    b.crypt_state.finish(CryptState::kDropped);
    return;
  }
  (void)b.pull_front(kTransportHeaderSize);  // sizes checked by classify()
  (void)b.trim(sealed_len - kTagSize);
  b.crypt_state.finish(CryptState::kDone);
}

namespace {
// The inner packet's source address, with b trimmed to the IP total length (the padding
// goes). Empty span: not a valid IPv4/IPv6 packet.
std::span<const uint8_t> inner_source(PacketBuf& b) {
  const uint8_t* p = b.head();
  const size_t len = b.size();
  if (len >= 20 && (p[0] >> 4) == 4) {
    const size_t total = size_t(p[2]) << 8 | p[3];
    if (total < 20 || total > len) return {};
    (void)b.trim(total);
    return {p + 12, 4};
  }
  if (len >= 40 && (p[0] >> 4) == 6) {
    const size_t total = 40 + (size_t(p[4]) << 8 | p[5]);
    if (total > len) return {};
    (void)b.trim(total);
    return {p + 8, 16};
  }
  return {};
}
}  // namespace

void Device::drain_rx(Peer& peer, std::span<PacketBuf*> batch) {
  // The caller (run_crypto) holds a keypair reference, so peer outlives the buffers
  // returned below.
  std::array<PacketBuf*, OrderedQueue<PacketBuf>::kMaxDrainBatch> accepted;
  size_t n_accepted = 0;
  {
    std::shared_lock clk(config_mu_);
    std::unique_lock plk(peer.mu);
    const PacketBuf* last_auth = nullptr;
    uint64_t rx = 0;
    for (PacketBuf* b : batch) {
      if (peer.removed || b->crypt_state.load() != CryptState::kDone) {
        rx_pool_.put(b);  // a failed open was counted by the worker
        continue;
      }
      if (!b->keypair->replay.validate(b->nonce, kRejectAfterMessages)) {
        count(Drop::kReplayed);
        rx_pool_.put(b);
        continue;
      }
      rx += b->wire_len;
      if (last_auth) rx_pool_.put(const_cast<PacketBuf*>(last_auth));
      last_auth = nullptr;
      if (received_with_keypair_locked(peer, b->keypair)) {
        timers_handshake_complete_locked(peer);
        send_staged_locked(peer, plk);
      }
      if (b->size() == 0) {  // keepalive
        last_auth = b;
        continue;
      }
      const std::span<const uint8_t> src = inner_source(*b);
      if (src.empty()) {
        count(Drop::kBadInnerPacket);
      } else if (allowed_ips_.lookup(src) != &peer) {
        count(Drop::kSourceNotAllowed);
        log_drop(Drop::kSourceNotAllowed, &b->endpoint);
      } else {
        accepted[n_accepted++] = b;
        continue;
      }
      last_auth = b;
    }
    if (rx != 0) {
      // Roaming: the newest authenticated source wins. last_auth (kept back from the pool
      // for this) or the last accepted packet carries it.
      const PacketBuf* newest = last_auth ? last_auth : accepted[n_accepted - 1];
      peer.endpoint = newest->endpoint;
      peer.rx_bytes.fetch_add(rx, std::memory_order_relaxed);
      keep_key_fresh_receive_locked(peer);
      timers_any_authenticated_packet_received_locked(peer);
      timers_any_authenticated_packet_traversal_locked(peer);
      if (n_accepted) timers_data_received_locked(peer);
    }
    rx_pool_.put(const_cast<PacketBuf*>(last_auth));
  }
  if (n_accepted) deliver({accepted.data(), n_accepted});
}

void Device::deliver(std::span<PacketBuf* const> pkts) {
  if (!offload_) {
    for (PacketBuf* b : pkts) {
      if (!tun_.write(b->bytes())) count(Drop::kTunWriteFailed);
      rx_pool_.put(b);
    }
    return;
  }
  // GroTable wants each IP packet preceded by room for the virtio-net header (the buffer's
  // headroom) and followed by room to merge others into (the rest of the 64 KiB buffer).
  std::array<std::span<uint8_t>, OrderedQueue<PacketBuf>::kMaxDrainBatch> bufs;
  std::array<size_t, OrderedQueue<PacketBuf>::kMaxDrainBatch> lens;
  std::array<size_t, OrderedQueue<PacketBuf>::kMaxDrainBatch> out{};
  static_assert(OrderedQueue<PacketBuf>::kMaxDrainBatch <= Bind::kMaxBatch);
  const size_t n = std::min(pkts.size(), bufs.size());
  for (size_t j = 0; j < n; ++j) {
    PacketBuf* b = pkts[j];
    bufs[j] = {b->head() - tun::kVnetHdrLen, b->data + b->capacity};
    lens[j] = b->size();
  }
  tun::GroTable gro(tun::GroTable::Options{.tcp = true, .udp = tun_.uso()});
  const int k = gro.coalesce({bufs.data(), n}, {lens.data(), n}, out);
  if (k < 0) {  // a caller bug (a buffer too small): count, never write garbage
    drops_[size_t(Drop::kTunWriteFailed)].fetch_add(n, std::memory_order_relaxed);
  } else {
    for (int j = 0; j < k; ++j) {
      const size_t idx = out[size_t(j)];
      if (!tun_.write(bufs[idx].first(tun::kVnetHdrLen + lens[idx])))
        count(Drop::kTunWriteFailed);
    }
  }
  for (PacketBuf* b : pkts) rx_pool_.put(b);
}

void Device::on_handshake_message(std::vector<uint8_t>& data, const Endpoint& from,
                                  bool under_load) {
  std::shared_lock clk(config_mu_);
  if (!identity_.has_key) {
    count(Drop::kNoKey);
    return;
  }
  const uint32_t type = load_le32(data.data());
  if (type == uint32_t(MessageType::kCookieReply)) {
    consume_cookie_reply(data);
    return;
  }
  const Instant now = clock_.now();
  uint8_t src[18];
  const size_t src_len = from.key_bytes(src);
  const auto mac = cookie_checker_.check(data, {src, src_len}, under_load, now);
  if (mac == crypto::CookieChecker::Result::kInvalidMac1) {
    count(Drop::kInvalidMac1);
    log_drop(Drop::kInvalidMac1, &from);
    return;
  }
  if (under_load) {
    if (mac != crypto::CookieChecker::Result::kValidMac2) {
      // Prove the source address first: answer with a cookie, do no DH work.
      MessageCookieReply reply{};
      const uint32_t sender = load_le32(data.data() + 4);
      cookie_checker_.create_reply(reply, data, sender, {src, src_len}, now);
      Endpoint to = from;
      if (!bind_.send({reinterpret_cast<const uint8_t*>(&reply), sizeof(reply)}, to))
        count(Drop::kUdpSendFailed);
      count(Drop::kCookieSent);
      return;
    }
    if (!ratelimiter_.allow(from.ip(), now)) {
      count(Drop::kRateLimited);
      return;
    }
  }
  if (type == uint32_t(MessageType::kInitiation))
    consume_initiation(data, from);
  else
    consume_response(data, from);
}

void Device::consume_initiation(std::span<uint8_t> data, const Endpoint& from) {
  MessageInitiation msg;
  std::memcpy(&msg, data.data(), sizeof(msg));
  crypto::InitiationPartial partial;
  if (!crypto::decrypt_initiation(msg, identity_, partial)) {
    count(Drop::kHandshakeFailed);
    log_drop(Drop::kHandshakeFailed, &from);
    return;
  }
  Peer* peer = find_peer_locked(partial.remote_static);
  if (!peer) {
    count(Drop::kHandshakeFailed);
    return;
  }
  std::unique_lock plk(peer->mu);
  const Instant now = clock_.now();
  if (peer->removed || !peer->handshake.usable()) {
    count(Drop::kHandshakeFailed);
    return;
  }
  // At most 50 initiations per second per peer reach the DH-heavy response.
  if (peer->consumed_initiation_ever &&
      now - peer->last_initiation_consumed < std::chrono::milliseconds(1000 / 50)) {
    count(Drop::kHandshakeFailed);
    return;
  }
  if (!peer->handshake.consume_initiation(msg, partial)) {
    count(Drop::kHandshakeFailed);
    return;
  }
  peer->last_initiation_consumed = now;
  peer->consumed_initiation_ever = true;
  peer->endpoint = from;
  peer->rx_bytes.fetch_add(data.size(), std::memory_order_relaxed);
  timers_any_authenticated_packet_received_locked(*peer);
  timers_any_authenticated_packet_traversal_locked(*peer);

  drop_index(peer->handshake_index);
  peer->handshake_index = new_index_locked(*peer, nullptr);
  MessageResponse resp{};
  crypto::SessionKeys keys;
  if (!peer->handshake.create_response(resp, peer->handshake_index) ||
      !peer->handshake.derive_session(keys)) {
    clear_handshake_locked(*peer);
    count(Drop::kHandshakeFailed);
    return;
  }
  auto bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&resp), sizeof(resp));
  peer->cookie.add_macs(bytes, now);
  install_session_locked(*peer, keys);
  timers_session_derived_locked(*peer);
  timers_any_authenticated_packet_traversal_locked(*peer);
  timers_any_authenticated_packet_sent_locked(*peer);
  send_to_peer_locked(*peer, bytes);
}

void Device::consume_response(std::span<uint8_t> data, const Endpoint& from) {
  MessageResponse msg;
  std::memcpy(&msg, data.data(), sizeof(msg));
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard lk(index_mu_);
    auto it = index_.find(load_le32(reinterpret_cast<const uint8_t*>(&msg.receiver)));
    if (it == index_.end() || it->second.keypair) {
      count(Drop::kUnknownIndex);
      return;
    }
    peer = it->second.peer;
  }
  std::unique_lock plk(peer->mu);
  if (peer->removed ||
      peer->handshake.state() != crypto::Handshake::State::kCreatedInitiation ||
      peer->handshake_index != load_le32(reinterpret_cast<const uint8_t*>(&msg.receiver))) {
    count(Drop::kHandshakeFailed);
    return;
  }
  crypto::SessionKeys keys;
  if (!peer->handshake.consume_response(msg, identity_) || !peer->handshake.derive_session(keys)) {
    count(Drop::kHandshakeFailed);
    log_drop(Drop::kHandshakeFailed, &from);
    return;
  }
  peer->endpoint = from;
  peer->rx_bytes.fetch_add(data.size(), std::memory_order_relaxed);
  install_session_locked(*peer, keys);
  timers_session_derived_locked(*peer);
  timers_handshake_complete_locked(*peer);
  timers_any_authenticated_packet_received_locked(*peer);
  timers_any_authenticated_packet_traversal_locked(*peer);
  // Confirm the session to the responder at once: staged data, or a keepalive.
  send_keepalive_locked(*peer, plk);
}

void Device::consume_cookie_reply(std::span<const uint8_t> data) {
  MessageCookieReply msg;
  std::memcpy(&msg, data.data(), sizeof(msg));
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard lk(index_mu_);
    auto it = index_.find(load_le32(reinterpret_cast<const uint8_t*>(&msg.receiver)));
    if (it == index_.end()) {
      count(Drop::kUnknownIndex);
      return;
    }
    peer = it->second.peer;
  }
  std::lock_guard plk(peer->mu);
  if (!peer->cookie.consume_reply(msg, clock_.now()))
    count(Drop::kCookieReplyInvalid);
  else
    cookie_replies_.fetch_add(1, std::memory_order_relaxed);
}

void Device::keep_key_fresh_receive_locked(Peer& peer) {
  const Keypair* kp = peer.current.get();
  if (!kp || !kp->initiator || peer.sent_lastminute_handshake) return;
  // Initiate before the responder's keys expire: it cannot (it waits for us to rekey).
  if (clock_.now() - kp->created > kRejectAfterTime - kKeepaliveTimeout - kRekeyTimeout) {
    peer.sent_lastminute_handshake = true;
    send_initiation_locked(peer, false);
  }
}

}  // namespace meshwg::dataplane
