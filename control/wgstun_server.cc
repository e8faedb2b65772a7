// WG-STUN responder (see wgstun_server.h for what it answers and the state it keeps).
//
//   UDP datagram ─► classify (type word, exact size)
//     ├─ initiation ─► mac1 ─► count load ─► [under load: mac2 or cookie reply; per-source
//     │                rate limit] ─► Noise: decrypt static ─► known client? else make one
//     │                (evict LRU when full) ─► timestamp newer ─► response ─► "next" session
//     ├─ cookie reply ─► the client's cookie generator (mac2 on our next response)
//     ├─ response ─► dropped (we never initiate)
//     └─ transport ─► index ─► age/counter limits ─► open ─► replay window ─► endpoint :=
//                     source, next → current, LRU touch ─► keepalive? done
//                     ─► inner IPv4/IPv6 ─► reserved destination ─► UDP :3478 STUN request
//                        (answered with the OUTER endpoint) | ICMP(v6) echo request (echo
//                        reply) ─► sealed on the current session, sent to the endpoint
#include "control/wgstun_server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "crypto/aead.h"
#include "tun/offload.h"

namespace meshwg::control {

using dataplane::Endpoint;
using dataplane::kTagSize;
using dataplane::kTransportHeaderSize;
using dataplane::load_le32;
using dataplane::load_le64;
using dataplane::store_le32;
using dataplane::store_le64;

namespace {

constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoIpv6Fragment = 44;
constexpr uint8_t kProtoIcmpv6 = 58;
constexpr uint8_t kIcmpEchoRequest = 8;
constexpr uint8_t kIcmpEchoReply = 0;
constexpr uint8_t kIcmpv6EchoRequest = 128;
constexpr uint8_t kIcmpv6EchoReply = 129;
constexpr uint8_t kReplyTtl = 64;
constexpr size_t kIpv4HeaderSize = 20;
constexpr size_t kIpv6HeaderSize = 40;
constexpr size_t kUdpHeaderSize = 8;
constexpr size_t kIcmpHeaderSize = 8;
// At most 50 initiations per second from one known client reach the response (as the device).
constexpr auto kMinInitiationInterval = std::chrono::milliseconds(1000 / 50);

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
void put_be16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}

// Writes a reply IP header at p for an L4 payload of l4_len bytes (already at p + the header
// size), from the reserved address of the family to dst. Returns the header size.
size_t write_ip_header(uint8_t* p, bool v6, const uint8_t* dst, uint8_t proto, size_t l4_len) {
  if (!v6) {
    std::memset(p, 0, kIpv4HeaderSize);
    p[0] = 0x45;
    put_be16(p + 2, uint16_t(kIpv4HeaderSize + l4_len));
    put_be16(p + 6, 0x4000);  // DF, id 0 (RFC 6864: the id only matters for fragments)
    p[8] = kReplyTtl;
    p[9] = proto;
    std::memcpy(p + 12, kWgStunAddress4.data(), 4);
    std::memcpy(p + 16, dst, 4);
    put_be16(p + 10, tun::checksum_finish(tun::checksum_sum({p, kIpv4HeaderSize})));
    return kIpv4HeaderSize;
  }
  std::memset(p, 0, kIpv6HeaderSize);
  p[0] = 0x60;
  put_be16(p + 4, uint16_t(l4_len));
  p[6] = proto;
  p[7] = kReplyTtl;
  std::memcpy(p + 8, kWgStunAddress6.data(), 16);
  std::memcpy(p + 24, dst, 16);
  return kIpv6HeaderSize;
}

// Sets the L4 checksum at `field` (an offset into l4) over l4 and, unless plain ICMP, the
// pseudo-header of a reply from the reserved address to dst. The UDP rule that a computed 0 is
// sent as 0xffff (RFC 768) only applies to UDP.
void set_l4_checksum(std::span<uint8_t> l4, size_t field, bool v6, uint8_t proto,
                     std::span<const uint8_t> dst) {
  put_be16(&l4[field], 0);
  uint16_t initial = 0;
  if (proto != kProtoIcmp) {
    const std::span<const uint8_t> src = v6 ? std::span<const uint8_t>(kWgStunAddress6)
                                            : std::span<const uint8_t>(kWgStunAddress4);
    initial = tun::pseudo_header_sum(src, dst, proto, uint32_t(l4.size()));
  }
  uint16_t c = tun::checksum_finish(tun::checksum_sum(l4, initial));
  if (c == 0 && proto == kProtoUdp) c = 0xffff;
  put_be16(&l4[field], c);
}

}  // namespace

const char* wgstun_drop_name(WgStunDrop d) {
  switch (d) {
    case WgStunDrop::kMalformed: return "malformed";
    case WgStunDrop::kTruncated: return "truncated";
    case WgStunDrop::kInvalidMac1: return "invalid_mac1";
    case WgStunDrop::kCookieSent: return "cookie_sent";
    case WgStunDrop::kRateLimited: return "rate_limited";
    case WgStunDrop::kHandshakeFailed: return "handshake_failed";
    case WgStunDrop::kHandshakeTooFast: return "handshake_too_fast";
    case WgStunDrop::kUnexpectedResponse: return "unexpected_response";
    case WgStunDrop::kCookieReplyUnknown: return "cookie_reply_unknown_index";
    case WgStunDrop::kCookieReplyInvalid: return "cookie_reply_invalid";
    case WgStunDrop::kUnknownIndex: return "unknown_index";
    case WgStunDrop::kKeypairExpired: return "keypair_expired";
    case WgStunDrop::kDecryptFailed: return "decrypt_failed";
    case WgStunDrop::kReplayed: return "replayed";
    case WgStunDrop::kBadInnerPacket: return "bad_inner_packet";
    case WgStunDrop::kInnerFragment: return "inner_fragment";
    case WgStunDrop::kNotReserved: return "not_reserved_address";
    case WgStunDrop::kUnsupportedProtocol: return "unsupported_protocol";
    case WgStunDrop::kBadInnerChecksum: return "bad_inner_checksum";
    case WgStunDrop::kWrongPort: return "wrong_port";
    case WgStunDrop::kNotEchoRequest: return "not_echo_request";
    case WgStunDrop::kStunMalformed: return "stun_malformed";
    case WgStunDrop::kStunNotRequest: return "stun_not_request";
    case WgStunDrop::kNoSession: return "no_session";
    case WgStunDrop::kSendFailed: return "send_failed";
    case WgStunDrop::kCount: break;
  }
  return "?";
}

const char* wgstun_event_name(WgStunEvent e) {
  switch (e) {
    case WgStunEvent::kHandshakes: return "handshakes";
    case WgStunEvent::kNewClients: return "new_clients";
    case WgStunEvent::kSessionsConfirmed: return "sessions_confirmed";
    case WgStunEvent::kClientsEvicted: return "clients_evicted";
    case WgStunEvent::kClientsExpired: return "clients_expired";
    case WgStunEvent::kRoamed: return "roamed";
    case WgStunEvent::kKeepalivesReceived: return "keepalives_received";
    case WgStunEvent::kKeepalivesSent: return "keepalives_sent";
    case WgStunEvent::kCookieRepliesConsumed: return "cookie_replies_consumed";
    case WgStunEvent::kStunAnswered: return "stun_answered";
    case WgStunEvent::kStunUnknownAttributes: return "stun_420";
    case WgStunEvent::kEchoAnswered: return "echo_answered";
    case WgStunEvent::kCount: break;
  }
  return "?";
}

// One transport session (whitepaper §5.4.6). Keys wipe themselves (crypto::Secret).
struct WgStunResponder::Session {
  crypto::Key send;
  crypto::Key recv;
  uint32_t local_index = 0;
  uint32_t remote_index = 0;
  Instant created{};
  uint64_t send_counter = 0;
  crypto::ReplayFilter replay;
};

struct WgStunResponder::Client {
  crypto::PublicKey key{};
  crypto::Handshake handshake;  // holds the precomputed static DH and the latest timestamp
  crypto::CookieGenerator cookie;
  std::unique_ptr<Session> previous, current, next;
  Endpoint endpoint;             // source of the latest authenticated packet
  Instant last_seen{};           // of the latest authenticated packet (the LRU order)
  Instant last_initiation{};
  std::optional<Instant> keepalive_due;  // passive keepalive (data received, nothing sent)
  bool confirmed = false;                // in confirmed_ (else in unconfirmed_)
};

WgStunResponder::WgStunResponder(std::span<const uint8_t, 32> private_key, WgStunSink& sink,
                                 const WgStunOptions& opt)
    : sink_(sink), opt_(opt) {
  opt_.max_clients = std::clamp<size_t>(opt_.max_clients, 1, dataplane::kMaxPeers);
  if (opt_.load_initiations_per_second == 0) opt_.load_initiations_per_second = 1;
  if (opt_.software.size() > kStunMaxTextEncode) opt_.software.resize(kStunMaxTextEncode);
  identity_.set(private_key);
  cookie_checker_.init(identity_.public_key);
  // Keys are chosen by clients: no predictable buckets.
  by_key_ = decltype(by_key_)(64, PublicKeyHash::random());
  scratch_.resize(kTransportHeaderSize + kMaxDatagram + dataplane::kPaddingMultiple + kTagSize);
}

WgStunResponder::~WgStunResponder() = default;

void WgStunResponder::count(WgStunDrop d) {
  auto& a = drops_[size_t(d)];
  a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void WgStunResponder::count(WgStunEvent e) {
  auto& a = events_[size_t(e)];
  a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void WgStunResponder::drop(WgStunDrop d, const Endpoint& from) {
  count(d);
  if (log_limit_.allow(std::chrono::steady_clock::now()))
    spdlog::debug("wgstun: dropped a packet from {}: {}", from.str(), wgstun_drop_name(d));
}

bool WgStunResponder::under_load(Instant now) const {
  return was_over_ && now - last_over_ < dataplane::kUnderLoadAfterTime;
}

std::optional<Endpoint> WgStunResponder::client_endpoint(const crypto::PublicKey& k) const {
  const auto it = by_key_.find(k);
  if (it == by_key_.end()) return std::nullopt;
  return it->second->endpoint;
}

// ---- client table ----

uint32_t WgStunResponder::new_index() {
  // With at most 3 * kMaxPeers indices in use out of 2^32, a few tries always suffice.
  for (int i = 0; i < 64; ++i) {
    uint32_t v;
    crypto::random_bytes({reinterpret_cast<uint8_t*>(&v), sizeof(v)});
    if (v != 0 && !by_index_.contains(v)) return v;
  }
  return 0;
}

void WgStunResponder::drop_session(std::unique_ptr<Session>& s) {
  if (!s) return;
  by_index_.erase(s->local_index);
  s.reset();
}

void WgStunResponder::touch(ClientIt it, Instant now) {
  it->last_seen = now;
  ClientList& list = it->confirmed ? confirmed_ : unconfirmed_;
  list.splice(list.begin(), list, it);
}

void WgStunResponder::remove(ClientIt it) {
  drop_session(it->previous);
  drop_session(it->current);
  drop_session(it->next);
  by_key_.erase(it->key);
  (it->confirmed ? confirmed_ : unconfirmed_).erase(it);
  client_count_.store(client_count_.load(std::memory_order_relaxed) - 1,
                      std::memory_order_relaxed);
}

void WgStunResponder::make_room() {
  while (clients() >= opt_.max_clients) {
    ClientList& victims = unconfirmed_.empty() ? confirmed_ : unconfirmed_;
    if (victims.empty()) return;  // unreachable: clients() counts both lists
    if (table_log_limit_.allow(std::chrono::steady_clock::now()))
      spdlog::info("wgstun: client table full ({} clients), evicting the least recently active "
                   "{} client", opt_.max_clients, &victims == &unconfirmed_ ? "unconfirmed" : "confirmed");
    remove(std::prev(victims.end()));
    count(WgStunEvent::kClientsEvicted);
  }
}

void WgStunResponder::tick(Instant now) {
  auto expire = [&](ClientList& list, std::chrono::seconds timeout) {
    // Most recently active first, so the idle ones are at the back.
    while (!list.empty() && now - list.back().last_seen >= timeout) {
      remove(std::prev(list.end()));
      count(WgStunEvent::kClientsExpired);
    }
  };
  expire(unconfirmed_, opt_.unconfirmed_timeout);
  expire(confirmed_, opt_.idle_timeout);
  // Only confirmed clients can have sent data. O(clients) once a second.
  for (Client& c : confirmed_) {
    if (!c.keepalive_due || *c.keepalive_due > now) continue;
    c.keepalive_due.reset();
    if (send_transport(c, 0, 0, now)) count(WgStunEvent::kKeepalivesSent);
  }
}

// ---- datagrams ----

void WgStunResponder::receive(std::span<const uint8_t> data, const Endpoint& from, Instant now) {
  switch (dataplane::classify(data.data(), data.size())) {
    case uint32_t(dataplane::MessageType::kInitiation): on_initiation(data, from, now); return;
    case uint32_t(dataplane::MessageType::kResponse):
      drop(WgStunDrop::kUnexpectedResponse, from);
      return;
    case uint32_t(dataplane::MessageType::kCookieReply): on_cookie_reply(data, now); return;
    case uint32_t(dataplane::MessageType::kTransport): on_transport(data, from, now); return;
    default: drop(WgStunDrop::kMalformed, from); return;
  }
}

void WgStunResponder::on_initiation(std::span<const uint8_t> data, const Endpoint& from,
                                    Instant now) {
  uint8_t src[18];
  const size_t src_len = from.key_bytes(src);
  if (cookie_checker_.check(data, {src, src_len}, false, now) ==
      crypto::CookieChecker::Result::kInvalidMac1) {
    drop(WgStunDrop::kInvalidMac1, from);
    return;
  }
  // Load is the rate of initiations that would reach the DH work (mac1 valid): junk with a
  // bad mac1 costs one BLAKE2s and must not make real clients pay a cookie round trip.
  if (now - window_start_ >= std::chrono::seconds(1)) {
    window_start_ = now;
    window_count_ = 0;
  }
  if (++window_count_ > opt_.load_initiations_per_second) {
    last_over_ = now;
    was_over_ = true;
  }
  if (under_load(now)) {
    if (cookie_checker_.check(data, {src, src_len}, true, now) !=
        crypto::CookieChecker::Result::kValidMac2) {
      // Prove the source address first: answer with a cookie, do no DH work.
      dataplane::MessageCookieReply reply{};
      cookie_checker_.create_reply(reply, data, load_le32(data.data() + 4), {src, src_len}, now);
      count(WgStunDrop::kCookieSent);
      if (!sink_.send({reinterpret_cast<const uint8_t*>(&reply), sizeof(reply)}, from))
        count(WgStunDrop::kSendFailed);
      return;
    }
    if (!rate_limiter_.allow(from.ip(), now)) {
      drop(WgStunDrop::kRateLimited, from);
      return;
    }
  }

  dataplane::MessageInitiation msg;
  std::memcpy(&msg, data.data(), sizeof(msg));  // size checked by classify
  crypto::InitiationPartial partial;
  if (!crypto::decrypt_initiation(msg, identity_, partial)) {
    drop(WgStunDrop::kHandshakeFailed, from);
    return;
  }
  ClientIt it;
  if (const auto kit = by_key_.find(partial.remote_static); kit != by_key_.end()) {
    it = kit->second;
    if (now - it->last_initiation < kMinInitiationInterval) {
      drop(WgStunDrop::kHandshakeTooFast, from);
      return;
    }
    if (!it->handshake.consume_initiation(msg, partial)) {  // e.g. a replayed timestamp
      drop(WgStunDrop::kHandshakeFailed, from);
      return;
    }
  } else {
    // Built aside and spliced in only once the initiation proved genuine, so failures
    // neither allocate lasting state nor evict anyone.
    ClientList fresh;
    Client& c = fresh.emplace_back();
    c.key = partial.remote_static;
    static const crypto::Key kNoPsk;  // WG-STUN clients use no preshared key
    if (!c.handshake.set_keys(identity_, c.key, kNoPsk.span()) ||
        !c.handshake.consume_initiation(msg, partial)) {
      drop(WgStunDrop::kHandshakeFailed, from);
      return;
    }
    c.cookie.init(c.key);
    make_room();
    unconfirmed_.splice(unconfirmed_.begin(), fresh);
    it = unconfirmed_.begin();
    by_key_.emplace(it->key, it);
    client_count_.store(client_count_.load(std::memory_order_relaxed) + 1,
                        std::memory_order_relaxed);
    count(WgStunEvent::kNewClients);
  }
  Client& c = *it;
  c.last_initiation = now;
  if (!c.endpoint.same_remote(from) && c.endpoint.valid()) count(WgStunEvent::kRoamed);
  c.endpoint = from;
  touch(it, now);

  const uint32_t index = new_index();
  dataplane::MessageResponse resp{};
  crypto::SessionKeys keys;
  if (index == 0 || !c.handshake.create_response(resp, index) || !c.handshake.derive_session(keys)) {
    c.handshake.clear();
    drop(WgStunDrop::kHandshakeFailed, from);
    return;
  }
  auto s = std::make_unique<Session>();
  s->send = keys.send;
  s->recv = keys.recv;
  s->local_index = index;
  s->remote_index = keys.remote_index;
  s->created = now;
  drop_session(c.next);  // an unconfirmed older response is superseded
  c.next = std::move(s);
  by_index_.emplace(index, it);

  const auto bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(&resp), sizeof(resp));
  c.cookie.add_macs(bytes, now);
  if (!sink_.send(bytes, c.endpoint)) {
    count(WgStunDrop::kSendFailed);
    return;
  }
  count(WgStunEvent::kHandshakes);
}

void WgStunResponder::on_cookie_reply(std::span<const uint8_t> data, Instant now) {
  dataplane::MessageCookieReply reply;
  std::memcpy(&reply, data.data(), sizeof(reply));  // size checked by classify
  const auto it = by_index_.find(load_le32(data.data() + 4));
  if (it == by_index_.end()) {
    count(WgStunDrop::kCookieReplyUnknown);
    return;
  }
  if (!it->second->cookie.consume_reply(reply, now)) {
    count(WgStunDrop::kCookieReplyInvalid);
    return;
  }
  count(WgStunEvent::kCookieRepliesConsumed);
}

void WgStunResponder::on_transport(std::span<const uint8_t> data, const Endpoint& from,
                                   Instant now) {
  const uint32_t receiver = load_le32(data.data() + 4);
  const uint64_t counter = load_le64(data.data() + 8);
  const auto iit = by_index_.find(receiver);
  if (iit == by_index_.end()) {
    drop(WgStunDrop::kUnknownIndex, from);
    return;
  }
  const ClientIt it = iit->second;
  Client& c = *it;
  std::unique_ptr<Session>* slot = nullptr;
  for (auto* p : {&c.current, &c.next, &c.previous})
    if (*p && (*p)->local_index == receiver) slot = p;
  if (slot == nullptr) {  // by_index_ and the sessions disagree: a bug, but not fatal
    drop(WgStunDrop::kUnknownIndex, from);
    return;
  }
  Session& s = **slot;
  if (now - s.created >= dataplane::kRejectAfterTime || counter >= dataplane::kRejectAfterMessages) {
    drop(WgStunDrop::kKeypairExpired, from);
    return;
  }
  uint8_t* plain = scratch_.data() + kTransportHeaderSize;
  const auto sealed = data.subspan(kTransportHeaderSize);
  const size_t plain_len = sealed.size() - kTagSize;  // classify: at least a tag
  if (!crypto::transport_open(plain, sealed, counter, s.recv.span())) {
    drop(WgStunDrop::kDecryptFailed, from);
    return;
  }
  // Only an authenticated counter may move the window.
  if (!s.replay.validate(counter, dataplane::kRejectAfterMessages)) {
    drop(WgStunDrop::kReplayed, from);
    return;
  }
  // Authenticated from here on: follow the client (roaming) and keep it fresh.
  if (!c.endpoint.same_remote(from)) count(WgStunEvent::kRoamed);
  c.endpoint = from;
  if (slot == &c.next) {
    drop_session(c.previous);
    c.previous = std::move(c.current);
    c.current = std::move(c.next);
    count(WgStunEvent::kSessionsConfirmed);
    if (!c.confirmed) {
      c.confirmed = true;
      confirmed_.splice(confirmed_.begin(), unconfirmed_, it);
    }
  }
  touch(it, now);
  if (plain_len == 0) {
    count(WgStunEvent::kKeepalivesReceived);
    return;
  }
  if (!on_inner(c, plain_len, now) && !c.keepalive_due)
    c.keepalive_due = now + dataplane::kKeepaliveTimeout;
}

// ---- inside the tunnel ----

bool WgStunResponder::on_inner(Client& c, size_t plain_len, Instant now) {
  uint8_t* p = scratch_.data() + kTransportHeaderSize;
  const Endpoint& from = c.endpoint;
  bool v6;
  size_t hdr_len;
  size_t total;
  uint8_t proto;
  if (plain_len >= kIpv4HeaderSize && p[0] >> 4 == 4) {
    v6 = false;
    hdr_len = size_t(p[0] & 0x0f) * 4;
    total = be16(p + 2);
    // The total length may be shorter than the plaintext (padding), never longer.
    if (hdr_len < kIpv4HeaderSize || total < hdr_len || total > plain_len ||
        tun::checksum_sum({p, hdr_len}) != 0xffff) {
      drop(WgStunDrop::kBadInnerPacket, from);
      return false;
    }
    if ((be16(p + 6) & 0x3fff) != 0) {  // more-fragments flag or an offset
      drop(WgStunDrop::kInnerFragment, from);
      return false;
    }
    if (std::memcmp(p + 16, kWgStunAddress4.data(), 4) != 0) {
      drop(WgStunDrop::kNotReserved, from);
      return false;
    }
    proto = p[9];
  } else if (plain_len >= kIpv6HeaderSize && p[0] >> 4 == 6) {
    v6 = true;
    hdr_len = kIpv6HeaderSize;
    total = kIpv6HeaderSize + be16(p + 4);
    if (total > plain_len) {
      drop(WgStunDrop::kBadInnerPacket, from);
      return false;
    }
    if (std::memcmp(p + 24, kWgStunAddress6.data(), 16) != 0) {
      drop(WgStunDrop::kNotReserved, from);
      return false;
    }
    proto = p[6];
    if (proto == kProtoIpv6Fragment) {
      drop(WgStunDrop::kInnerFragment, from);
      return false;
    }
  } else {
    drop(WgStunDrop::kBadInnerPacket, from);
    return false;
  }

  // The reply goes back to the request's source; copy it before the buffer is rewritten.
  uint8_t peer_addr[16];
  const size_t addr_len = v6 ? 16 : 4;
  std::memcpy(peer_addr, p + (v6 ? 8 : 12), addr_len);
  const std::span<uint8_t> l4{p + hdr_len, total - hdr_len};
  const uint16_t l4_sum_initial =
      tun::pseudo_header_sum({peer_addr, addr_len}, v6 ? std::span<const uint8_t>(kWgStunAddress6)
                                                       : std::span<const uint8_t>(kWgStunAddress4),
                             proto, uint32_t(l4.size()));

  if (proto == kProtoUdp) {
    if (l4.size() < kUdpHeaderSize || be16(&l4[4]) != l4.size()) {
      drop(WgStunDrop::kBadInnerPacket, from);
      return false;
    }
    // A zero UDP checksum means "none" over IPv4 and is forbidden over IPv6 (RFC 8200 §8.1).
    const bool has_sum = be16(&l4[6]) != 0;
    if ((v6 && !has_sum) || (has_sum && tun::checksum_sum(l4, l4_sum_initial) != 0xffff)) {
      drop(WgStunDrop::kBadInnerChecksum, from);
      return false;
    }
    if (be16(&l4[2]) != kWgStunPort) {
      drop(WgStunDrop::kWrongPort, from);
      return false;
    }
    const uint16_t peer_port = be16(&l4[0]);
    StunServerReply r = stun_server_answer(l4.subspan(kUdpHeaderSize), c.endpoint, opt_.software);
    if (r.outcome == StunServerCounter::kNotRequest) {
      drop(WgStunDrop::kStunNotRequest, from);
      return false;
    }
    if (r.datagram.empty()) {
      drop(WgStunDrop::kStunMalformed, from);
      return false;
    }
    // Build the reply in place: IP header, UDP header, the STUN answer.
    const size_t ip_hdr = v6 ? kIpv6HeaderSize : kIpv4HeaderSize;
    const size_t udp_len = kUdpHeaderSize + r.datagram.size();
    uint8_t* u = p + ip_hdr;
    std::memcpy(u + kUdpHeaderSize, r.datagram.data(), r.datagram.size());
    put_be16(u, kWgStunPort);
    put_be16(u + 2, peer_port);
    put_be16(u + 4, uint16_t(udp_len));
    write_ip_header(p, v6, peer_addr, kProtoUdp, udp_len);
    set_l4_checksum({u, udp_len}, 6, v6, kProtoUdp, {peer_addr, addr_len});
    if (!send_transport(c, ip_hdr + udp_len, plain_len, now)) return false;
    count(r.outcome == StunServerCounter::kSuccess ? WgStunEvent::kStunAnswered
                                                   : WgStunEvent::kStunUnknownAttributes);
    return true;
  }

  if (proto == (v6 ? kProtoIcmpv6 : kProtoIcmp)) {
    if (l4.size() < kIcmpHeaderSize) {
      drop(WgStunDrop::kBadInnerPacket, from);
      return false;
    }
    if (tun::checksum_sum(l4, v6 ? l4_sum_initial : 0) != 0xffff) {
      drop(WgStunDrop::kBadInnerChecksum, from);
      return false;
    }
    if (l4[0] != (v6 ? kIcmpv6EchoRequest : kIcmpEchoRequest) || l4[1] != 0) {
      drop(WgStunDrop::kNotEchoRequest, from);
      return false;
    }
    // The reply keeps identifier, sequence and data; IPv4 options are not echoed.
    const size_t ip_hdr = v6 ? kIpv6HeaderSize : kIpv4HeaderSize;
    const size_t icmp_len = l4.size();
    uint8_t* m = p + ip_hdr;
    std::memmove(m, l4.data(), icmp_len);
    m[0] = v6 ? kIcmpv6EchoReply : kIcmpEchoReply;
    write_ip_header(p, v6, peer_addr, proto, icmp_len);
    set_l4_checksum({m, icmp_len}, 2, v6, proto, {peer_addr, addr_len});
    if (!send_transport(c, ip_hdr + icmp_len, plain_len, now)) return false;
    count(WgStunEvent::kEchoAnswered);
    return true;
  }

  drop(WgStunDrop::kUnsupportedProtocol, from);
  return false;
}

bool WgStunResponder::send_transport(Client& c, size_t len, size_t pad_limit, Instant now) {
  Session* s = c.current.get();
  if (s == nullptr || now - s->created >= dataplane::kRejectAfterTime ||
      s->send_counter >= dataplane::kRejectAfterMessages) {
    drop(WgStunDrop::kNoSession, c.endpoint);
    return false;
  }
  // Padded as a sender pads (whitepaper §5.4.6), but never past the size of the request it
  // answers, which the client already fitted to its MTU.
  const size_t padded = dataplane::padded_length(len, pad_limit);
  uint8_t* hdr = scratch_.data();
  uint8_t* plain = hdr + kTransportHeaderSize;
  std::memset(plain + len, 0, padded - len);
  const uint64_t counter = s->send_counter++;
  store_le32(hdr, uint32_t(dataplane::MessageType::kTransport));
  store_le32(hdr + 4, s->remote_index);
  store_le64(hdr + 8, counter);
  crypto::transport_seal(plain, {plain, padded}, counter, s->send.span());
  if (!sink_.send({hdr, kTransportHeaderSize + padded + kTagSize}, c.endpoint)) {
    count(WgStunDrop::kSendFailed);
    return false;
  }
  c.keepalive_due.reset();  // any authenticated packet sent counts as a keepalive
  return true;
}

// ---- the UDP socket ----

size_t WgStunServer::on_readable(WgStunResponder::Instant now) {
  size_t n = 0;
  for (; n < kMaxBatch; ++n) {
    Endpoint from;
    bool truncated = false;
    const ssize_t len = sock_.recv(buf_, from, truncated);
    if (len < 0) break;
    if (truncated) {
      responder_.count(WgStunDrop::kTruncated);
      continue;
    }
    responder_.receive({buf_.data(), size_t(len)}, from, now);
  }
  return n;
}

}  // namespace meshwg::control
