// Incoming path (whitepaper §5.4.2-5.4.7; kernel receive.c):
//
//   UDP receive (receive_loop, one per socket) ─► classify by type word and exact length
//     ├─ transport ─► index ─► open (tag) ─► replay window ─► roam endpoint ─► timers
//     │              ─► inner IP length/version ─► allowed-IPs source check ─► TUN write
//     └─ initiation / response / cookie ─► handshake_queue_ (bounded; multi producer)
//   handshake_loop (single consumer) ─► mac1 ─► [under load: mac2 or cookie reply; rate
//     limit per source] ─► noise ─► respond / install session ─► flush staged
//
// The endpoint is updated from any authenticated packet before the source check, so a peer
// that roams is followed even when its inner packet is refused (netns.sh test 7).
#include <spdlog/spdlog.h>

#include <cstring>

#include "crypto/aead.h"
#include "dataplane/device.h"

namespace meshwg::dataplane {

size_t Device::on_datagram(std::span<uint8_t> data, const Endpoint& from) {
  const uint32_t type = classify(data.data(), data.size());
  if (type == 0) {
    count(Drop::kMalformedMessage);
    log_drop(Drop::kMalformedMessage, &from);
    return 0;
  }
  if (type == uint32_t(MessageType::kTransport)) return on_transport(data, from);
  std::lock_guard lk(hs_mu_);
  if (handshake_queue_.size() >= kMaxQueuedHandshakes) {
    count(Drop::kHandshakeQueueFull);
    return 0;
  }
  handshake_queue_.push_back({std::vector<uint8_t>(data.begin(), data.end()), from});
  hs_cv_.notify_one();
  return 0;
}

void Device::receive_now(std::span<uint8_t> data, const Endpoint& from, bool under_load) {
  const uint32_t type = classify(data.data(), data.size());
  if (type == 0) {
    count(Drop::kMalformedMessage);
  } else if (type == uint32_t(MessageType::kTransport)) {
    const size_t len = on_transport(data, from);
    if (len != 0 && !tun_.write(data.subspan(kTransportHeaderSize, len)))
      count(Drop::kTunWriteFailed);
  } else {
    std::vector<uint8_t> copy(data.begin(), data.end());
    on_handshake_message(copy, from, under_load);
  }
}

size_t Device::on_transport(std::span<uint8_t> data, const Endpoint& from) {
  const uint32_t receiver = load_le32(data.data() + 4);
  const uint64_t counter = load_le64(data.data() + 8);
  IndexEntry entry;
  {
    std::lock_guard lk(index_mu_);
    auto it = index_.find(receiver);
    if (it == index_.end() || !it->second.keypair) {
      count(Drop::kUnknownIndex);
      return 0;
    }
    entry = it->second;
  }
  Keypair& kp = *entry.keypair;
  Peer& peer = *entry.peer;
  const Instant now = clock_.now();
  if (now - kp.created >= kRejectAfterTime || counter >= kRejectAfterMessages) {
    count(Drop::kKeypairExpired);
    return 0;
  }
  uint8_t* plain = data.data() + kTransportHeaderSize;
  const size_t sealed_len = data.size() - kTransportHeaderSize;
  if (!crypto::transport_open(plain, {plain, sealed_len}, counter, kp.recv_key.span())) {
    count(Drop::kDecryptFailed);
    log_drop(Drop::kDecryptFailed, &from);
    return 0;
  }
  {
    std::lock_guard rlk(kp.replay_mu);
    if (!kp.replay.validate(counter, kRejectAfterMessages)) {
      count(Drop::kReplayed);
      return 0;
    }
  }
  size_t plain_len = sealed_len - kTagSize;

  // Inner packet: a keepalive (empty), or IPv4/IPv6 whose header length fits the plaintext.
  // The padding after the IP total length is trimmed.
  std::span<const uint8_t> src;
  bool bad_inner = false;
  if (plain_len > 0) {
    if (plain_len >= 20 && (plain[0] >> 4) == 4) {
      const size_t total = size_t(plain[2]) << 8 | plain[3];
      if (total < 20 || total > plain_len) bad_inner = true;
      else {
        plain_len = total;
        src = {plain + 12, 4};
      }
    } else if (plain_len >= 40 && (plain[0] >> 4) == 6) {
      const size_t total = 40 + (size_t(plain[4]) << 8 | plain[5]);
      if (total > plain_len) bad_inner = true;
      else {
        plain_len = total;
        src = {plain + 8, 16};
      }
    } else {
      bad_inner = true;
    }
  }

  std::shared_lock clk(config_mu_);
  {
    std::unique_lock plk(peer.mu);
    if (peer.removed) return 0;
    peer.endpoint = from;  // roaming: follow the authenticated source
    peer.rx_bytes.fetch_add(data.size(), std::memory_order_relaxed);
    if (received_with_keypair_locked(peer, entry.keypair)) {
      timers_handshake_complete_locked(peer);
      send_staged_locked(peer, plk);
    }
    keep_key_fresh_receive_locked(peer);
    timers_any_authenticated_packet_received_locked(peer);
    timers_any_authenticated_packet_traversal_locked(peer);
    if (plain_len == 0 && !bad_inner) return 0;  // keepalive
    if (bad_inner) {
      count(Drop::kBadInnerPacket);
      return 0;
    }
    if (allowed_ips_.lookup(src) != &peer) {
      count(Drop::kSourceNotAllowed);
      log_drop(Drop::kSourceNotAllowed, &from);
      return 0;
    }
    timers_data_received_locked(peer);
  }
  return plain_len;
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
