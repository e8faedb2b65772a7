// The relay's wire protocol: framing, bodies and the key-possession proofs (see relay_proto.h).
#include "control/relay_proto.h"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace meshwg::control {

namespace {

constexpr std::string_view kClientLabel = "meshwg relay client v1";
constexpr std::string_view kServerLabel = "meshwg relay server v1";

std::span<const uint8_t> label_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The body size a fixed-size type must have; 0 for the variable-size Send and Recv.
size_t fixed_body(RelayFrameType t) {
  switch (t) {
    case RelayFrameType::kServerHello:
    case RelayFrameType::kClientAuth: return kRelayHelloBody;
    case RelayFrameType::kAuthOk: return kRelayAuthOkBody;
    case RelayFrameType::kPeerAbsent: return kRelayKeySize;
    case RelayFrameType::kPing:
    case RelayFrameType::kPong: return kRelayPingBody;
    case RelayFrameType::kSend:
    case RelayFrameType::kRecv: return 0;
  }
  return 0;
}

std::vector<uint8_t> frame_of(RelayFrameType t, std::initializer_list<std::span<const uint8_t>> parts) {
  size_t len = 0;
  for (const auto& p : parts) len += p.size();
  if (len > kRelayMaxBody || relay_check_header(uint8_t(t), 0, len) != RelayMalformed::kOk)
    return {};
  std::vector<uint8_t> f;
  f.reserve(kRelayHeaderSize + len);
  const auto h = relay_header(t, len);
  f.insert(f.end(), h.begin(), h.end());
  for (const auto& p : parts) f.insert(f.end(), p.begin(), p.end());
  return f;
}

template <size_t N>
std::array<uint8_t, N> take(std::span<const uint8_t> s, size_t off) {
  std::array<uint8_t, N> a;
  std::memcpy(a.data(), s.data() + off, N);
  return a;
}

}  // namespace

const char* relay_frame_type_name(RelayFrameType t) {
  switch (t) {
    case RelayFrameType::kServerHello: return "server_hello";
    case RelayFrameType::kClientAuth: return "client_auth";
    case RelayFrameType::kAuthOk: return "auth_ok";
    case RelayFrameType::kSend: return "send";
    case RelayFrameType::kRecv: return "recv";
    case RelayFrameType::kPeerAbsent: return "peer_absent";
    case RelayFrameType::kPing: return "ping";
    case RelayFrameType::kPong: return "pong";
  }
  return "?";
}

const char* relay_malformed_name(RelayMalformed m) {
  switch (m) {
    case RelayMalformed::kOk: return "ok";
    case RelayMalformed::kUnknownType: return "unknown_type";
    case RelayMalformed::kReserved: return "reserved_not_zero";
    case RelayMalformed::kBadLength: return "bad_length";
    case RelayMalformed::kTooShort: return "too_short";
    case RelayMalformed::kOversized: return "oversized";
    case RelayMalformed::kBadVersion: return "bad_version";
    case RelayMalformed::kNotAuthenticated: return "not_authenticated";
    case RelayMalformed::kWrongDirection: return "wrong_direction";
    case RelayMalformed::kAuthAgain: return "auth_again";
    case RelayMalformed::kCount: break;
  }
  return "?";
}

RelayMalformed relay_check_header(uint8_t type, uint8_t reserved, size_t body_len) {
  if (type < uint8_t(RelayFrameType::kServerHello) || type > uint8_t(RelayFrameType::kPong))
    return RelayMalformed::kUnknownType;
  if (reserved != 0) return RelayMalformed::kReserved;
  const size_t fixed = fixed_body(RelayFrameType(type));
  if (fixed != 0) return body_len == fixed ? RelayMalformed::kOk : RelayMalformed::kBadLength;
  return body_len < kRelayKeySize ? RelayMalformed::kTooShort : RelayMalformed::kOk;
}

// ---- encoding ----

std::array<uint8_t, kRelayHeaderSize> relay_header(RelayFrameType t, size_t body_len) {
  return {uint8_t(t), 0, uint8_t(body_len >> 8), uint8_t(body_len)};
}

std::vector<uint8_t> relay_encode(RelayFrameType t, std::span<const uint8_t> body) {
  return frame_of(t, {body});
}

std::vector<uint8_t> relay_encode_server_hello(const crypto::PublicKey& server_public,
                                               const RelayChallenge& challenge) {
  const uint8_t version = kRelayVersion;
  return frame_of(RelayFrameType::kServerHello, {{&version, 1}, server_public, challenge});
}

std::vector<uint8_t> relay_encode_client_auth(const crypto::PublicKey& client_public,
                                              const RelayProof& proof) {
  const uint8_t version = kRelayVersion;
  return frame_of(RelayFrameType::kClientAuth, {{&version, 1}, client_public, proof});
}

std::vector<uint8_t> relay_encode_auth_ok(const RelayProof& proof_server) {
  return frame_of(RelayFrameType::kAuthOk, {proof_server});
}

std::vector<uint8_t> relay_encode_send(const crypto::PublicKey& dst, std::span<const uint8_t> payload) {
  return frame_of(RelayFrameType::kSend, {dst, payload});
}

std::vector<uint8_t> relay_encode_recv(const crypto::PublicKey& src, std::span<const uint8_t> payload) {
  return frame_of(RelayFrameType::kRecv, {src, payload});
}

std::vector<uint8_t> relay_encode_peer_absent(const crypto::PublicKey& dst) {
  return frame_of(RelayFrameType::kPeerAbsent, {dst});
}

std::vector<uint8_t> relay_encode_ping(const RelayPingToken& token) {
  return frame_of(RelayFrameType::kPing, {token});
}

std::vector<uint8_t> relay_encode_pong(const RelayPingToken& token) {
  return frame_of(RelayFrameType::kPong, {token});
}

// ---- framing ----

RelayFrameReader::RelayFrameReader(size_t max_body) noexcept
    : max_body_(std::min(max_body, kRelayMaxBody)) {}

void RelayFrameReader::set_max_body(size_t max_body) noexcept {
  max_body_ = std::min(max_body, kRelayMaxBody);
}

size_t RelayFrameReader::feed(std::span<const uint8_t> data) {
  if (error_ != RelayMalformed::kOk || data.empty()) return 0;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 0 && (pos_ >= kRelayReadChunk || buf_.size() + data.size() > kCapacity)) {
    // Moves at most one incomplete frame to the front; amortised over >= a chunk consumed.
    buf_.erase(buf_.begin(), buf_.begin() + ptrdiff_t(pos_));
    pos_ = 0;
  }
  const size_t n = std::min(kCapacity - buf_.size(), data.size());
  if (buf_.size() + n > buf_.capacity())
    buf_.reserve(std::min(kCapacity, std::max(buf_.size() + n, 2 * buf_.capacity())));
  buf_.insert(buf_.end(), data.begin(), data.begin() + ptrdiff_t(n));
  return n;
}

RelayFrameReader::Result RelayFrameReader::next(RelayFrame& out) {
  if (error_ != RelayMalformed::kOk) return Result::kMalformed;
  const size_t avail = buf_.size() - pos_;
  if (avail < kRelayHeaderSize) return Result::kNeedMore;
  const uint8_t* p = buf_.data() + pos_;
  const size_t len = size_t(p[2]) << 8 | p[3];
  RelayMalformed m = relay_check_header(p[0], p[1], len);
  if (m == RelayMalformed::kOk && len > max_body_) m = RelayMalformed::kOversized;
  if (m != RelayMalformed::kOk) {
    error_ = m;
    return Result::kMalformed;
  }
  if (avail < kRelayHeaderSize + len) return Result::kNeedMore;
  out.type = RelayFrameType(p[0]);
  out.body = {p + kRelayHeaderSize, len};
  pos_ += kRelayHeaderSize + len;
  return Result::kFrame;
}

void RelayFrameReader::trim() {
  if (buffered() != 0 || buf_.capacity() <= kRelayReadChunk) return;
  std::vector<uint8_t>().swap(buf_);
  pos_ = 0;
}

// ---- bodies ----

std::optional<RelayServerHello> parse_server_hello(std::span<const uint8_t> body) {
  if (body.size() != kRelayHelloBody || body[0] != kRelayVersion) return std::nullopt;
  return RelayServerHello{take<32>(body, 1), take<32>(body, 33)};
}

std::optional<RelayClientAuth> parse_client_auth(std::span<const uint8_t> body) {
  if (body.size() != kRelayHelloBody || body[0] != kRelayVersion) return std::nullopt;
  return RelayClientAuth{take<32>(body, 1), take<32>(body, 33)};
}

std::optional<RelayProof> parse_auth_ok(std::span<const uint8_t> body) {
  if (body.size() != kRelayAuthOkBody) return std::nullopt;
  return take<32>(body, 0);
}

std::optional<RelaySend> parse_send(std::span<const uint8_t> body) {
  if (body.size() < kRelayKeySize || body.size() > kRelayMaxBody) return std::nullopt;
  return RelaySend{take<32>(body, 0), body.subspan(kRelayKeySize)};
}

std::optional<RelayRecv> parse_recv(std::span<const uint8_t> body) {
  if (body.size() < kRelayKeySize || body.size() > kRelayMaxBody) return std::nullopt;
  return RelayRecv{take<32>(body, 0), body.subspan(kRelayKeySize)};
}

std::optional<crypto::PublicKey> parse_peer_absent(std::span<const uint8_t> body) {
  if (body.size() != kRelayKeySize) return std::nullopt;
  return take<32>(body, 0);
}

std::optional<RelayPingToken> parse_ping(std::span<const uint8_t> body) {
  if (body.size() != kRelayPingBody) return std::nullopt;
  return take<kRelayPingBody>(body, 0);
}

// ---- authentication ----

bool relay_auth_key(const crypto::Key& my_private, const crypto::PublicKey& their_public,
                    crypto::Key& k) {
  uint8_t dh[32];
  if (!crypto::x25519(dh, my_private.span(), their_public)) {
    crypto::wipe(dh, sizeof(dh));  // x25519 already did; cheap insurance
    k.clear();
    return false;
  }
  crypto::blake2s(k.span(), dh);
  crypto::wipe(dh, sizeof(dh));
  return true;
}

void relay_client_mac(const crypto::Key& k, const crypto::PublicKey& server_public,
                      const RelayChallenge& challenge, const crypto::PublicKey& client_public,
                      RelayProof& out) {
  // Blake2s wipes its keyed state when destroyed.
  crypto::Blake2s(32, k.span())
      .update(label_bytes(kClientLabel))
      .update(server_public)
      .update(challenge)
      .update(client_public)
      .final(out);
}

void relay_server_mac(const crypto::Key& k, const RelayChallenge& challenge,
                      const crypto::PublicKey& client_public, RelayProof& out) {
  crypto::Blake2s(32, k.span())
      .update(label_bytes(kServerLabel))
      .update(challenge)
      .update(client_public)
      .final(out);
}

bool relay_client_proof(const crypto::Key& client_private, const crypto::PublicKey& server_public,
                        const RelayChallenge& challenge, const crypto::PublicKey& client_public,
                        RelayProof& out) {
  crypto::Key k;  // wiped when it goes out of scope
  if (!relay_auth_key(client_private, server_public, k)) return false;
  relay_client_mac(k, server_public, challenge, client_public, out);
  return true;
}

bool relay_verify_server(const crypto::Key& client_private, const crypto::PublicKey& server_public,
                         const RelayChallenge& challenge, const crypto::PublicKey& client_public,
                         const RelayProof& proof_server) {
  crypto::Key k;
  if (!relay_auth_key(client_private, server_public, k)) return false;
  RelayProof want;
  relay_server_mac(k, challenge, client_public, want);
  return crypto::equal_ct(want, proof_server);
}

bool relay_verify_client(const crypto::Key& server_private, const crypto::PublicKey& server_public,
                         const RelayChallenge& challenge, const crypto::PublicKey& client_public,
                         const RelayProof& proof) {
  crypto::Key k;
  if (!relay_auth_key(server_private, client_public, k)) return false;
  RelayProof want;
  relay_client_mac(k, server_public, challenge, client_public, want);
  return crypto::equal_ct(want, proof);
}

bool relay_server_proof(const crypto::Key& server_private, const RelayChallenge& challenge,
                        const crypto::PublicKey& client_public, RelayProof& out) {
  crypto::Key k;
  if (!relay_auth_key(server_private, client_public, k)) return false;
  relay_server_mac(k, challenge, client_public, out);
  return true;
}

bool relay_server_accept(const crypto::Key& server_private, const crypto::PublicKey& server_public,
                         const RelayChallenge& challenge, const crypto::PublicKey& client_public,
                         const RelayProof& proof, RelayProof& proof_server) {
  crypto::Key k;
  if (!relay_auth_key(server_private, client_public, k)) return false;
  RelayProof want;
  relay_client_mac(k, server_public, challenge, client_public, want);
  if (!crypto::equal_ct(want, proof)) return false;
  relay_server_mac(k, challenge, client_public, proof_server);
  return true;
}

}  // namespace meshwg::control
