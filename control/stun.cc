// STUN Binding (RFC 8489): codec, retransmission schedule and one client transaction.
// RFC 5769 gives the test vectors; tests/control/stun_test.cc checks all of them.
//
// Message layout (§5, §14): a 20-byte header
//   0b00 | type (14 bits) | length (16 bits, bytes after the header, multiple of 4)
//   magic cookie 0x2112A442 | transaction id (96 bits)
// then TLV attributes: type (16) | length (16, without padding) | value padded to 4 bytes.
// Types < 0x8000 are comprehension-required, the rest comprehension-optional.
#include "control/stun.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "crypto/primitives.h"

namespace meshwg::control {
namespace {

using dataplane::Endpoint;

// Message type bits (§5): M11..M7 C1 M6..M4 C0 M3..M0.
constexpr uint16_t kClassMask = 0x0110;
constexpr uint16_t kClassRequest = 0x0000;
constexpr uint16_t kClassIndication = 0x0010;
constexpr uint16_t kClassSuccess = 0x0100;
constexpr uint16_t kClassError = 0x0110;
constexpr uint8_t kFamilyV4 = 0x01;
constexpr uint8_t kFamilyV6 = 0x02;

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
void put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
void put32(uint8_t* p, uint32_t v) {
  put16(p, uint16_t(v >> 16));
  put16(p + 2, uint16_t(v));
}

size_t padded(size_t len) { return (len + 3) & ~size_t{3}; }

// Text from the network is shown to people and logs: printable ASCII only, so a peer cannot
// inject terminal escapes or fake log lines.
std::string printable(std::span<const uint8_t> v) {
  std::string s(v.size(), '?');
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] >= 0x20 && v[i] < 0x7f) s[i] = char(v[i]);
  return s;
}

StunClass class_of(uint16_t type) {
  switch (type & kClassMask) {
    case kClassRequest: return StunClass::kRequest;
    case kClassIndication: return StunClass::kIndication;
    case kClassSuccess: return StunClass::kSuccess;
    default: return StunClass::kError;
  }
}

uint16_t method_of(uint16_t type) {
  return uint16_t((type & 0x000f) | (type & 0x00e0) >> 1 | (type & 0x3e00) >> 2);
}

// Attributes this decoder understands or deliberately skips; anything else below 0x8000
// makes the message fail with kUnknownRequired. MESSAGE-INTEGRITY-SHA256, USERHASH and
// PASSWORD-ALGORITHM(S) are not implemented, so they are reported unknown as §6.3.1 asks.
bool known_required(uint16_t type) {
  switch (StunAttr(type)) {
    case StunAttr::kMappedAddress:
    case StunAttr::kUsername:
    case StunAttr::kMessageIntegrity:
    case StunAttr::kErrorCode:
    case StunAttr::kUnknownAttributes:
    case StunAttr::kRealm:
    case StunAttr::kNonce:
    case StunAttr::kXorMappedAddress:
    case StunAttr::kPriority:
    case StunAttr::kUseCandidate:
      return true;
    default:
      return false;
  }
}

// (XOR-)MAPPED-ADDRESS value (§14.1, §14.2): reserved byte (ignored), family, port, address.
// `x` is XORed over port and address: zero for MAPPED-ADDRESS, cookie || txid for XOR.
std::optional<Endpoint> parse_address(std::span<const uint8_t> v, const uint8_t x[16]) {
  if (v.size() < 4) return std::nullopt;
  const uint8_t family = v[1];
  const size_t alen = family == kFamilyV4 ? 4 : family == kFamilyV6 ? 16 : 0;
  if (alen == 0 || v.size() != 4 + alen) return std::nullopt;
  const uint16_t port = be16(&v[2]) ^ be16(x);
  uint8_t a[16];
  for (size_t i = 0; i < alen; ++i) a[i] = v[4 + i] ^ x[i];
  return Endpoint::from_ip(
      family == kFamilyV4 ? dataplane::IpAddress::v4(a) : dataplane::IpAddress::v6(a), port);
}

// ERROR-CODE (§14.8): 21 reserved bits, class (3 bits, 3..6), number (0..99), reason.
std::optional<StunErrorCode> parse_error_code(std::span<const uint8_t> v) {
  if (v.size() < 4) return std::nullopt;
  const unsigned cls = v[2] & 0x07;
  const unsigned number = v[3];
  if (cls < 3 || cls > 6 || number > 99) return std::nullopt;
  return StunErrorCode{uint16_t(cls * 100 + number), printable(v.subspan(4))};
}

void hmac_sha1(std::span<const uint8_t> key, std::span<const uint8_t> data,
               uint8_t out[kStunIntegritySize]) {
  // OpenSSL 3 rejects a null key pointer even with length 0.
  static const uint8_t kNoKey = 0;
  unsigned int len = kStunIntegritySize;
  if (HMAC(EVP_sha1(), key.empty() ? &kNoKey : key.data(), int(key.size()), data.data(),
           data.size(), out, &len) == nullptr)
    std::memset(out, 0, kStunIntegritySize);  // cannot happen with SHA-1; fails to verify
}

// Builds a message: header, then attributes, each padded with zeros.
class Writer {
 public:
  Writer(uint16_t type, const StunTxid& txid) : b_(kStunHeaderSize) {
    put16(&b_[0], type);
    put32(&b_[4], kStunMagicCookie);
    std::copy(txid.begin(), txid.end(), b_.begin() + 8);
  }
  void attr(StunAttr type, std::span<const uint8_t> value) {
    const size_t at = b_.size();
    b_.resize(at + kStunAttrHeaderSize + padded(value.size()), 0);
    put16(&b_[at], uint16_t(type));
    put16(&b_[at + 2], uint16_t(value.size()));
    std::copy(value.begin(), value.end(), b_.begin() + ptrdiff_t(at + kStunAttrHeaderSize));
  }
  void text(StunAttr type, std::string_view s) {
    attr(type, {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }
  // The trailer attributes cover everything before them with the length field already
  // counting them (§14.5, §14.7).
  void integrity(std::span<const uint8_t> key) {
    set_length(b_.size() + kStunAttrHeaderSize + kStunIntegritySize);
    uint8_t mac[kStunIntegritySize];
    hmac_sha1(key, b_, mac);
    attr(StunAttr::kMessageIntegrity, mac);
  }
  void fingerprint() {
    set_length(b_.size() + kStunAttrHeaderSize + 4);
    uint8_t crc[4];
    put32(crc, stun_crc32(b_) ^ kStunFingerprintXor);
    attr(StunAttr::kFingerprint, crc);
  }
  std::vector<uint8_t> finish(const StunEncodeOptions& opt) {
    if (!opt.software.empty()) text(StunAttr::kSoftware, opt.software);
    if (!opt.integrity_key.empty()) integrity(opt.integrity_key);
    if (opt.fingerprint) fingerprint();
    set_length(b_.size());
    return std::move(b_);
  }

 private:
  void set_length(size_t total) { put16(&b_[2], uint16_t(total - kStunHeaderSize)); }
  std::vector<uint8_t> b_;
};

uint16_t binding_type(uint16_t cls_bits) { return uint16_t(kStunBindingMethod | cls_bits); }

// An IPv4-mapped IPv6 address (a dual-stack server socket) is reported as the IPv4 address
// it stands for; the client has no use for the mapped form.
Endpoint unmap_v4(const Endpoint& e) {
  if (e.addr.sa.sa_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&e.addr.in6.sin6_addr)) return e;
  Endpoint v4;
  v4.addr.in4.sin_family = AF_INET;
  v4.addr.in4.sin_port = e.addr.in6.sin6_port;
  std::memcpy(&v4.addr.in4.sin_addr, &e.addr.in6.sin6_addr.s6_addr[12], 4);
  return v4;
}

}  // namespace

const char* stun_error_name(StunError e) {
  switch (e) {
    case StunError::kOk: return "ok";
    case StunError::kTooShort: return "shorter than a STUN header";
    case StunError::kNotStun: return "top two bits of the message type are not zero";
    case StunError::kBadCookie: return "wrong magic cookie";
    case StunError::kBadLength: return "length not a multiple of 4";
    case StunError::kLengthMismatch: return "length field does not match the datagram";
    case StunError::kNotBinding: return "method is not Binding";
    case StunError::kTruncatedAttribute: return "attribute runs past the end of the message";
    case StunError::kBadAddress: return "malformed (XOR-)MAPPED-ADDRESS";
    case StunError::kBadErrorCode: return "malformed ERROR-CODE";
    case StunError::kTextTooLong: return "SOFTWARE or reason phrase too long";
    case StunError::kBadUnknownAttributes: return "malformed UNKNOWN-ATTRIBUTES";
    case StunError::kBadIntegrity: return "MESSAGE-INTEGRITY is not 20 bytes";
    case StunError::kBadFingerprint: return "FINGERPRINT does not match";
    case StunError::kAttributeAfterFingerprint: return "attribute after FINGERPRINT";
    case StunError::kMissingErrorCode: return "error response without ERROR-CODE";
    case StunError::kUnknownRequired: return "unknown comprehension-required attribute";
    case StunError::kCount: break;
  }
  return "unknown error";
}

const char* stun_query_error_name(StunQueryError e) {
  switch (e) {
    case StunQueryError::kOk: return "ok";
    case StunQueryError::kBadArgument: return "bad argument";
    case StunQueryError::kSocket: return "cannot create a UDP socket";
    case StunQueryError::kSend: return "send failed";
    case StunQueryError::kReceive: return "receive failed";
    case StunQueryError::kUnreachable: return "server unreachable";
    case StunQueryError::kTimeout: return "no response (timeout)";
    case StunQueryError::kErrorResponse: return "server answered with an error";
    case StunQueryError::kUnknownRequired:
      return "response has unknown comprehension-required attributes";
    case StunQueryError::kNoMappedAddress: return "success response without a mapped address";
    case StunQueryError::kFlooded: return "too many unrelated datagrams";
    case StunQueryError::kCount: break;
  }
  return "unknown error";
}

uint32_t stun_crc32(std::span<const uint8_t> data) {
  static constexpr auto kTable = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (const uint8_t b : data) c = kTable[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::optional<StunMessage> stun_decode(std::span<const uint8_t> d, StunDecodeFailure& fail) {
  fail = {};
  auto reject = [&fail](StunError e) -> std::nullopt_t {
    fail.error = e;
    // Unknown types seen before another error would suggest a 420 where a 400 is due.
    if (e != StunError::kUnknownRequired) fail.unknown_required.clear();
    return std::nullopt;
  };

  // ---- header (§5, §6.3) ----
  if (d.size() < kStunHeaderSize) return reject(StunError::kTooShort);
  const uint16_t type = be16(&d[0]);
  const uint16_t length = be16(&d[2]);
  // Catches other protocols sharing the port (RTP, DTLS, WireGuard's little-endian types).
  if (type & 0xC000) return reject(StunError::kNotStun);
  if (be32(&d[4]) != kStunMagicCookie) return reject(StunError::kBadCookie);
  if (length % 4 != 0) return reject(StunError::kBadLength);
  // A datagram carries exactly one message: trailing or missing bytes are a lie.
  if (size_t(length) + kStunHeaderSize != d.size()) return reject(StunError::kLengthMismatch);
  if (method_of(type) != kStunBindingMethod) return reject(StunError::kNotBinding);

  StunMessage m;
  m.cls = class_of(type);
  std::copy_n(&d[8], kStunTxidSize, m.txid.begin());
  fail.cls = m.cls;
  fail.txid = m.txid;

  uint8_t xor_key[16];
  std::copy_n(&d[4], 16, xor_key);  // cookie || transaction id
  static constexpr uint8_t kZero[16] = {};

  // ---- attributes (§14) ----
  bool after_integrity = false;
  size_t off = kStunHeaderSize;
  while (off < d.size()) {
    // A FINGERPRINT has to be the last attribute (§14.7).
    if (m.fingerprint) return reject(StunError::kAttributeAfterFingerprint);
    if (d.size() - off < kStunAttrHeaderSize) return reject(StunError::kTruncatedAttribute);
    const uint16_t at = be16(&d[off]);
    const size_t alen = be16(&d[off + 2]);
    // The padding must be there too: a message's length is always a multiple of 4.
    if (padded(alen) > d.size() - off - kStunAttrHeaderSize)
      return reject(StunError::kTruncatedAttribute);
    const auto v = d.subspan(off + kStunAttrHeaderSize, alen);
    const size_t at_off = off;
    off += kStunAttrHeaderSize + padded(alen);

    if (at == uint16_t(StunAttr::kFingerprint)) {
      // The header length already ends with this attribute (it is last), so the CRC covers
      // the datagram as received up to here.
      if (alen != 4 || be32(v.data()) != (stun_crc32(d.first(at_off)) ^ kStunFingerprintXor))
        return reject(StunError::kBadFingerprint);
      m.fingerprint = true;
      continue;
    }
    // Everything between MESSAGE-INTEGRITY and FINGERPRINT is not covered by the MAC and
    // must be ignored (§14.5).
    if (after_integrity) continue;

    switch (StunAttr(at)) {
      case StunAttr::kXorMappedAddress:
        if (m.xor_mapped) break;  // §14: only the first of a repeated attribute counts
        if (!(m.xor_mapped = parse_address(v, xor_key))) return reject(StunError::kBadAddress);
        break;
      case StunAttr::kMappedAddress:
        if (m.mapped) break;
        if (!(m.mapped = parse_address(v, kZero))) return reject(StunError::kBadAddress);
        break;
      case StunAttr::kSoftware:
        if (alen > kStunMaxTextDecode) return reject(StunError::kTextTooLong);
        if (!m.software) m.software = printable(v);
        break;
      case StunAttr::kErrorCode:
        if (alen > 4 + kStunMaxTextDecode) return reject(StunError::kTextTooLong);
        if (m.error) break;
        if (!(m.error = parse_error_code(v))) return reject(StunError::kBadErrorCode);
        break;
      case StunAttr::kUnknownAttributes:
        if (alen % 2 != 0) return reject(StunError::kBadUnknownAttributes);
        if (!m.unknown_attributes.empty()) break;
        for (size_t i = 0; i < alen && m.unknown_attributes.size() < kStunMaxUnknownReported;
             i += 2)
          m.unknown_attributes.push_back(be16(&v[i]));
        break;
      case StunAttr::kMessageIntegrity:
        if (alen != kStunIntegritySize) return reject(StunError::kBadIntegrity);
        m.integrity_offset = at_off;
        after_integrity = true;
        break;
      default:
        if (at < 0x8000 && !known_required(at) &&
            fail.unknown_required.size() < kStunMaxUnknownReported &&
            std::find(fail.unknown_required.begin(), fail.unknown_required.end(), at) ==
                fail.unknown_required.end())
          fail.unknown_required.push_back(at);
        break;  // known but unused (USERNAME, ...) or comprehension-optional: skipped
    }
  }
  // Reported only once the whole message parsed: a malformed message gets no 420.
  if (!fail.unknown_required.empty()) return reject(StunError::kUnknownRequired);
  if (m.cls == StunClass::kError && !m.error) return reject(StunError::kMissingErrorCode);
  return m;
}

bool stun_check_integrity(std::span<const uint8_t> msg, const StunMessage& m,
                          std::span<const uint8_t> key) {
  if (!m.integrity_offset) return false;
  const size_t at = *m.integrity_offset;
  const size_t end = at + kStunAttrHeaderSize + kStunIntegritySize;
  if (at < kStunHeaderSize || end > msg.size()) return false;
  // The MAC input is the message before the attribute with the length field patched to end
  // at MESSAGE-INTEGRITY (a FINGERPRINT after it is not counted).
  std::vector<uint8_t> input(msg.begin(), msg.begin() + ptrdiff_t(at));
  put16(&input[2], uint16_t(end - kStunHeaderSize));
  uint8_t mac[kStunIntegritySize];
  hmac_sha1(key, input, mac);
  return crypto::equal_ct(mac, msg.subspan(at + kStunAttrHeaderSize, kStunIntegritySize));
}

StunTxid stun_new_txid() {
  StunTxid t;
  crypto::random_bytes(t);
  return t;
}

std::vector<uint8_t> stun_encode_binding_request(const StunTxid& txid,
                                                 const StunEncodeOptions& opt) {
  if (opt.software.size() > kStunMaxTextEncode) return {};
  return Writer(binding_type(kClassRequest), txid).finish(opt);
}

std::vector<uint8_t> stun_encode_binding_success(const StunTxid& txid, const Endpoint& mapped,
                                                 const StunEncodeOptions& opt) {
  if (opt.software.size() > kStunMaxTextEncode || !mapped.valid()) return {};
  const Endpoint e = unmap_v4(mapped);
  const dataplane::IpAddress ip = e.ip();
  uint8_t v[20] = {};
  v[1] = ip.family == 4 ? kFamilyV4 : kFamilyV6;
  put16(&v[2], uint16_t(e.port() ^ (kStunMagicCookie >> 16)));
  uint8_t x[16];
  put32(x, kStunMagicCookie);
  std::copy(txid.begin(), txid.end(), x + 4);
  for (size_t i = 0; i < ip.size(); ++i) v[4 + i] = ip.bytes[i] ^ x[i];

  Writer w(binding_type(kClassSuccess), txid);
  w.attr(StunAttr::kXorMappedAddress, std::span<const uint8_t>(v, 4 + ip.size()));
  return w.finish(opt);
}

std::vector<uint8_t> stun_encode_binding_error(const StunTxid& txid, uint16_t code,
                                               std::string_view reason,
                                               std::span<const uint16_t> unknown,
                                               const StunEncodeOptions& opt) {
  if (opt.software.size() > kStunMaxTextEncode || reason.size() > kStunMaxTextEncode ||
      code < 300 || code > 699 || unknown.size() > kStunMaxUnknownReported)
    return {};
  std::vector<uint8_t> v(4 + reason.size());
  v[2] = uint8_t(code / 100);
  v[3] = uint8_t(code % 100);
  std::copy(reason.begin(), reason.end(), v.begin() + 4);

  Writer w(binding_type(kClassError), txid);
  w.attr(StunAttr::kErrorCode, v);
  if (code == 420 && !unknown.empty()) {
    std::vector<uint8_t> u(unknown.size() * 2);
    for (size_t i = 0; i < unknown.size(); ++i) put16(&u[2 * i], unknown[i]);
    w.attr(StunAttr::kUnknownAttributes, u);
  }
  return w.finish(opt);
}

// ---- client transaction ----

bool StunRetransmit::valid() const {
  using namespace std::chrono_literals;
  return rto >= 1ms && rto <= 60s && rc >= 1 && rc <= 16 && rm >= 1 && rm <= 64 &&
         stun_give_up_offset(*this) <= 1h;
}

std::chrono::milliseconds stun_send_offset(const StunRetransmit& r, unsigned k) {
  // RTO doubles after every request: the k-th goes out after RTO * (1 + 2 + ... + 2^(k-1)).
  // k is below rc <= 16 for valid options; the clamp keeps any input from overflowing.
  return r.rto * ((int64_t{1} << std::min(k, 16u)) - 1);
}

std::chrono::milliseconds stun_give_up_offset(const StunRetransmit& r) {
  return stun_send_offset(r, r.rc - 1) + r.rto * r.rm;
}

namespace {

using Clock = std::chrono::steady_clock;

// Closes a socket this file opened, on every return path.
class OwnedFd {
 public:
  explicit OwnedFd(int fd) : fd_(fd) {}
  ~OwnedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;

 private:
  int fd_;
};

// The server as the socket must address it: an IPv6 socket reaches an IPv4 server through
// ::ffff:a.b.c.d. nullopt when the socket's family cannot reach it.
std::optional<Endpoint> destination_for(int fd, const Endpoint& server) {
  int type = 0;
  socklen_t tlen = sizeof(type);
  sockaddr_storage local{};
  socklen_t llen = sizeof(local);
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_DGRAM ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0)
    return std::nullopt;
  if (local.ss_family == server.addr.sa.sa_family) return server;
  if (local.ss_family != AF_INET6 || server.addr.sa.sa_family != AF_INET) return std::nullopt;
  Endpoint m;
  m.addr.in6.sin6_family = AF_INET6;
  m.addr.in6.sin6_port = server.addr.in4.sin_port;
  m.addr.in6.sin6_addr.s6_addr[10] = 0xff;
  m.addr.in6.sin6_addr.s6_addr[11] = 0xff;
  std::memcpy(&m.addr.in6.sin6_addr.s6_addr[12], &server.addr.in4.sin_addr, 4);
  return m;
}

// Same address and port. Scope ids are compared only when both are set: the address a
// name resolves to usually has none, while the received one does for link-local.
bool from_server(const Endpoint& from, const Endpoint& dest) {
  if (from.ip() != dest.ip() || from.port() != dest.port()) return false;
  if (from.addr.sa.sa_family != AF_INET6) return true;
  const uint32_t a = from.addr.in6.sin6_scope_id;
  const uint32_t b = dest.addr.in6.sin6_scope_id;
  return a == 0 || b == 0 || a == b;
}

bool unreachable_errno(int e) {
  return e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH;
}

// Classifies one datagram from the server. Returns true when it ends the transaction.
bool on_datagram(std::span<const uint8_t> d, const StunTxid& txid, StunQueryResult& r) {
  StunDecodeFailure fail;
  const auto m = stun_decode(d, fail);
  if (!m) {
    // A response to our request whose attributes we must understand but do not: the
    // transaction has failed (§6.3.3, §6.3.4). Everything else malformed is dropped (§6.3).
    const bool response = fail.cls == StunClass::kSuccess || fail.cls == StunClass::kError;
    if (fail.error == StunError::kUnknownRequired && response && fail.txid == txid) {
      r.error = StunQueryError::kUnknownRequired;
      return true;
    }
    ++r.ignored;
    r.last_ignored_reason = fail.error;
    return false;
  }
  if (m->txid != txid || m->cls == StunClass::kRequest || m->cls == StunClass::kIndication) {
    ++r.ignored;
    return false;
  }
  if (m->cls == StunClass::kError) {
    r.error = StunQueryError::kErrorResponse;
    r.server_error = m->error;
    return true;
  }
  const auto mapped = m->mapped_address();
  if (!mapped) {
    r.error = StunQueryError::kNoMappedAddress;
    return true;
  }
  r.error = StunQueryError::kOk;
  r.mapped = *mapped;
  return true;
}

}  // namespace

StunQueryResult stun_query(const Endpoint& server, int fd, const StunQueryOptions& opt) {
  StunQueryResult r;
  r.error = StunQueryError::kBadArgument;
  if (!server.valid() || !opt.retransmit.valid() || opt.software.size() > kStunMaxTextEncode)
    return r;

  const bool own = fd < 0;
  if (own) {
    fd = ::socket(server.addr.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      r.error = StunQueryError::kSocket;
      r.sys_errno = errno;
      return r;
    }
  }
  const OwnedFd closer(own ? fd : -1);
  // Connected, the kernel filters other sources and reports ICMP errors on this socket.
  if (own && ::connect(fd, &server.addr.sa, server.socklen()) != 0) {
    r.error = unreachable_errno(errno) ? StunQueryError::kUnreachable : StunQueryError::kSend;
    r.sys_errno = errno;
    return r;
  }
  const auto dest = destination_for(fd, server);
  if (!dest) return r;  // kBadArgument

  const StunTxid txid = stun_new_txid();
  const std::vector<uint8_t> request = stun_encode_binding_request(
      txid, {.software = opt.software, .fingerprint = opt.fingerprint});

  const StunRetransmit& rt = opt.retransmit;
  const Clock::time_point start = Clock::now();
  const Clock::time_point give_up = start + stun_give_up_offset(rt);
  unsigned datagrams = 0;
  // Every pass sends, reads a datagram or sleeps until the next deadline, so rc sends +
  // max_datagrams reads + one wake per deadline (or per minute of waiting) bound it; the
  // slack covers those and EINTR wakeups.
  const unsigned max_passes = 2 * rt.rc + opt.max_datagrams + 1024;
  for (unsigned pass = 0; pass < max_passes; ++pass) {
    const Clock::time_point now = Clock::now();
    if (r.requests_sent < rt.rc && now >= start + stun_send_offset(rt, r.requests_sent)) {
      const ssize_t n = ::sendto(fd, request.data(), request.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                                 own ? nullptr : &dest->addr.sa, own ? 0 : dest->socklen());
      ++r.requests_sent;
      // A full socket buffer is one more lost datagram: the retransmissions cover it.
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS &&
          errno != EINTR) {
        r.error = unreachable_errno(errno) ? StunQueryError::kUnreachable : StunQueryError::kSend;
        r.sys_errno = errno;
        return r;
      }
      continue;
    }
    const Clock::time_point wake =
        r.requests_sent < rt.rc ? start + stun_send_offset(rt, r.requests_sent) : give_up;
    if (now >= wake) break;  // only reached once all requests are out: timeout

    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake - now);
    pollfd p{fd, POLLIN, 0};
    const int pr = ::poll(&p, 1, int(std::min<int64_t>(wait.count(), 60'000)));
    if (pr < 0 && errno != EINTR) {
      r.error = StunQueryError::kReceive;
      r.sys_errno = errno;
      return r;
    }
    if (pr <= 0) continue;

    uint8_t buf[2048];  // responses are a few dozen bytes; larger ones are not ours
    sockaddr_storage from_ss{};
    socklen_t flen = sizeof(from_ss);
    const ssize_t n = ::recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC,
                                 reinterpret_cast<sockaddr*>(&from_ss), &flen);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      // On a shared socket an ICMP error may belong to another flow.
      if (unreachable_errno(errno) && !own) continue;
      r.error = unreachable_errno(errno) ? StunQueryError::kUnreachable : StunQueryError::kReceive;
      r.sys_errno = errno;
      return r;
    }
    if (++datagrams > opt.max_datagrams) {
      r.error = StunQueryError::kFlooded;
      return r;
    }
    const Endpoint from = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&from_ss), flen);
    if (size_t(n) > sizeof(buf) || !from_server(from, *dest)) {
      ++r.ignored;
      continue;
    }
    if (on_datagram({buf, size_t(n)}, txid, r)) return r;
  }
  r.error = StunQueryError::kTimeout;
  return r;
}

}  // namespace meshwg::control
