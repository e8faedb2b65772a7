// Strict codec for the sealed peer messages (see peer_message.h for the wire format): a reader
// that fails on the first short field and a writer that refuses what the reader would reject,
// so whatever encodes also decodes to the same message.
#include "control/peer_message.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace meshwg::control {

namespace {

constexpr uint8_t kFlagForWireGuard = 0x01;

// Bounds-checked big-endian reader over the input; the first failure sticks.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  bool failed() const { return error_ != PeerMessageError::kOk; }
  PeerMessageError error() const { return error_; }
  bool at_end() const { return pos_ == in_.size(); }
  void fail(PeerMessageError e) {
    if (!failed()) error_ = e;
  }

  uint64_t uint(size_t bytes) {
    if (failed()) return 0;
    if (in_.size() - pos_ < bytes) {
      fail(PeerMessageError::kTruncated);
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) v = v << 8 | in_[pos_ + i];
    pos_ += bytes;
    return v;
  }
  uint8_t u8() { return uint8_t(uint(1)); }
  uint16_t u16() { return uint16_t(uint(2)); }
  uint32_t u32() { return uint32_t(uint(4)); }
  uint64_t u64() { return uint(8); }

  bool boolean() {
    const uint8_t b = u8();
    if (b > 1) fail(PeerMessageError::kBadBool);
    return b == 1;
  }

  dataplane::Endpoint endpoint() {
    dataplane::Endpoint e;
    const uint8_t family = u8();
    if (failed()) return e;
    if (family != 4 && family != 6) {
      fail(PeerMessageError::kBadFamily);
      return e;
    }
    const size_t n = family == 4 ? 4 : 16;
    if (in_.size() - pos_ < n) {
      fail(PeerMessageError::kTruncated);
      return e;
    }
    const uint8_t* a = &in_[pos_];
    pos_ += n;
    const uint16_t port = u16();
    if (failed()) return e;
    // Address before port, in wire order, so the reason names the first bad field.
    if (std::all_of(a, a + n, [](uint8_t b) { return b == 0; })) {
      fail(PeerMessageError::kBadAddress);
      return e;
    }
    if (port == 0) {
      fail(PeerMessageError::kBadPort);
      return e;
    }
    return dataplane::Endpoint::from_ip(
        family == 4 ? dataplane::IpAddress::v4(a) : dataplane::IpAddress::v6(a), port);
  }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  PeerMessageError error_ = PeerMessageError::kOk;
};

class Writer {
 public:
  Writer() { out_.reserve(64); }
  bool ok() const { return ok_; }
  void fail() { ok_ = false; }
  std::vector<uint8_t> take() { return ok_ ? std::move(out_) : std::vector<uint8_t>{}; }

  void uint(uint64_t v, size_t bytes) {
    for (size_t i = bytes; i-- > 0;) out_.push_back(uint8_t(v >> (8 * i)));
  }
  void u8(uint8_t v) { uint(v, 1); }
  void u16(uint16_t v) { uint(v, 2); }
  void u32(uint32_t v) { uint(v, 4); }
  void u64(uint64_t v) { uint(v, 8); }

  void endpoint(const dataplane::Endpoint& e) {
    const dataplane::IpAddress ip = e.ip();
    const uint16_t port = e.port();
    if ((ip.family != 4 && ip.family != 6) || port == 0) return fail();
    const auto a = ip.span();
    if (std::all_of(a.begin(), a.end(), [](uint8_t b) { return b == 0; })) return fail();
    u8(ip.family);
    out_.insert(out_.end(), a.begin(), a.end());
    u16(port);
  }

 private:
  std::vector<uint8_t> out_;
  bool ok_ = true;
};

bool kind_valid(PeerCandidateKind k) { return uint8_t(k) <= uint8_t(PeerCandidateKind::kRelay); }

void encode_body(Writer& w, const PeerCandidates& m) {
  if (m.candidates.size() > kPeerMaxCandidates) return w.fail();
  w.u32(m.generation);
  w.u8(uint8_t(m.candidates.size()));
  for (const PeerCandidate& c : m.candidates) {
    if (!kind_valid(c.kind)) return w.fail();
    w.u8(uint8_t(c.kind));
    w.u8(c.for_wireguard ? kFlagForWireGuard : 0);
    w.endpoint(c.address);
  }
}
void encode_body(Writer& w, const PeerPing& m) {
  w.u64(m.id);
  w.u64(m.sent_ns);
}
void encode_body(Writer& w, const PeerPong& m) {
  w.u64(m.id);
  w.u64(m.sent_ns);
}
void encode_body(Writer& w, const PeerSwitchProposal& m) {
  if (m.at_ms > kPeerMaxSwitchDelayMs) return w.fail();
  w.u64(m.id);
  w.endpoint(m.mine);
  w.endpoint(m.yours);
  w.u32(m.at_ms);
}
void encode_body(Writer& w, const PeerSwitchAck& m) {
  w.u64(m.id);
  w.u8(m.accept ? 1 : 0);
}
void encode_body(Writer& w, const PeerSwitchConfirm& m) {
  w.u64(m.id);
  w.u8(m.ok ? 1 : 0);
}
void encode_body(Writer&, const PeerBye&) {}
void encode_body(Writer&, const PeerHello&) {}

PeerCandidates decode_candidates(Reader& r) {
  PeerCandidates m;
  m.generation = r.u32();
  const uint8_t count = r.u8();
  if (r.failed()) return m;
  // Before the loop: the count bounds the allocation.
  if (count > kPeerMaxCandidates) {
    r.fail(PeerMessageError::kTooManyCandidates);
    return m;
  }
  m.candidates.reserve(count);
  for (uint8_t i = 0; i < count && !r.failed(); ++i) {
    PeerCandidate c;
    const uint8_t kind = r.u8();
    const uint8_t flags = r.u8();
    if (r.failed()) break;
    if (kind > uint8_t(PeerCandidateKind::kRelay)) {
      r.fail(PeerMessageError::kBadKind);
      break;
    }
    if ((flags & ~kFlagForWireGuard) != 0) {
      r.fail(PeerMessageError::kBadFlags);
      break;
    }
    c.kind = PeerCandidateKind(kind);
    c.for_wireguard = (flags & kFlagForWireGuard) != 0;
    c.address = r.endpoint();
    m.candidates.push_back(c);
  }
  return m;
}

}  // namespace

const char* peer_candidate_kind_name(PeerCandidateKind k) {
  switch (k) {
    case PeerCandidateKind::kLocal: return "local";
    case PeerCandidateKind::kWgStun: return "wg-stun";
    case PeerCandidateKind::kStun: return "stun";
    case PeerCandidateKind::kUpnp: return "upnp";
    case PeerCandidateKind::kNatPmp: return "nat-pmp";
    case PeerCandidateKind::kRelay: return "relay";
  }
  return "unknown";
}

bool PeerCandidate::operator==(const PeerCandidate& o) const {
  return kind == o.kind && for_wireguard == o.for_wireguard && address.same_remote(o.address);
}

bool PeerSwitchProposal::operator==(const PeerSwitchProposal& o) const {
  return id == o.id && at_ms == o.at_ms && mine.same_remote(o.mine) && yours.same_remote(o.yours);
}

PeerMessageType peer_message_type(const PeerMessage& m) {
  // The variant's alternatives are in wire order, from type 1.
  return PeerMessageType(m.index() + 1);
}

const char* peer_message_type_name(PeerMessageType t) {
  switch (t) {
    case PeerMessageType::kCandidates: return "candidates";
    case PeerMessageType::kPing: return "ping";
    case PeerMessageType::kPong: return "pong";
    case PeerMessageType::kSwitchProposal: return "switch-proposal";
    case PeerMessageType::kSwitchAck: return "switch-ack";
    case PeerMessageType::kSwitchConfirm: return "switch-confirm";
    case PeerMessageType::kBye: return "bye";
    case PeerMessageType::kHello: return "hello";
  }
  return "unknown";
}

const char* peer_message_error_name(PeerMessageError e) {
  switch (e) {
    case PeerMessageError::kOk: return "ok";
    case PeerMessageError::kEmpty: return "empty";
    case PeerMessageError::kUnknownType: return "unknown type";
    case PeerMessageError::kTruncated: return "truncated";
    case PeerMessageError::kTrailingBytes: return "trailing bytes";
    case PeerMessageError::kTooManyCandidates: return "too many candidates";
    case PeerMessageError::kBadKind: return "bad candidate kind";
    case PeerMessageError::kBadFlags: return "bad candidate flags";
    case PeerMessageError::kBadFamily: return "bad address family";
    case PeerMessageError::kBadAddress: return "unspecified address";
    case PeerMessageError::kBadPort: return "port 0";
    case PeerMessageError::kBadBool: return "bad boolean";
    case PeerMessageError::kBadDelay: return "switch delay too long";
    case PeerMessageError::kCount: break;
  }
  return "unknown error";
}

std::vector<uint8_t> peer_message_encode(const PeerMessage& m) {
  Writer w;
  w.u8(uint8_t(peer_message_type(m)));
  std::visit([&w](const auto& body) { encode_body(w, body); }, m);
  return w.take();
}

std::optional<PeerMessage> peer_message_decode(std::span<const uint8_t> in,
                                               PeerMessageError& error) {
  error = PeerMessageError::kOk;
  if (in.empty()) {
    error = PeerMessageError::kEmpty;
    return std::nullopt;
  }
  Reader r(in);
  const uint8_t type = r.u8();
  PeerMessage m;
  switch (PeerMessageType(type)) {
    case PeerMessageType::kCandidates:
      m = decode_candidates(r);
      break;
    case PeerMessageType::kPing: {
      PeerPing p;
      p.id = r.u64();
      p.sent_ns = r.u64();
      m = p;
      break;
    }
    case PeerMessageType::kPong: {
      PeerPong p;
      p.id = r.u64();
      p.sent_ns = r.u64();
      m = p;
      break;
    }
    case PeerMessageType::kSwitchProposal: {
      PeerSwitchProposal p;
      p.id = r.u64();
      p.mine = r.endpoint();
      p.yours = r.endpoint();
      p.at_ms = r.u32();
      if (!r.failed() && p.at_ms > kPeerMaxSwitchDelayMs) r.fail(PeerMessageError::kBadDelay);
      m = p;
      break;
    }
    case PeerMessageType::kSwitchAck: {
      PeerSwitchAck p;
      p.id = r.u64();
      p.accept = r.boolean();
      m = p;
      break;
    }
    case PeerMessageType::kSwitchConfirm: {
      PeerSwitchConfirm p;
      p.id = r.u64();
      p.ok = r.boolean();
      m = p;
      break;
    }
    case PeerMessageType::kBye:
      m = PeerBye{};
      break;
    case PeerMessageType::kHello:
      m = PeerHello{};
      break;
    default:
      error = PeerMessageError::kUnknownType;
      return std::nullopt;
  }
  if (!r.failed() && !r.at_end()) r.fail(PeerMessageError::kTrailingBytes);
  if (r.failed()) {
    error = r.error();
    return std::nullopt;
  }
  return m;
}

}  // namespace meshwg::control
