// STUN, the Binding method only (RFC 8489; test vectors RFC 5769): a strict sans-I/O codec for
// binding requests, success and error responses, the RFC 8489 §6.2.1 retransmission schedule,
// and stun_query(), one client transaction over a UDP socket (the only part that does I/O).
// MESSAGE-INTEGRITY (HMAC-SHA1, §14.5) is verified and can be added with a given key;
// USERNAME, REALM, NONCE and the ICE attributes (RFC 8445) are recognised and skipped.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/ip.h"

namespace meshwg::control {

// ---- wire constants (RFC 8489 §5, §14, §18) ----
inline constexpr uint32_t kStunMagicCookie = 0x2112A442;
inline constexpr size_t kStunHeaderSize = 20;
inline constexpr size_t kStunTxidSize = 12;
inline constexpr size_t kStunAttrHeaderSize = 4;
inline constexpr size_t kStunIntegritySize = 20;  // HMAC-SHA1
inline constexpr uint32_t kStunFingerprintXor = 0x5354554e;
inline constexpr uint16_t kStunBindingMethod = 0x001;
// SOFTWARE and an error reason are "fewer than 128 characters": at most 763 bytes on decode
// and 509 on encode (§14.3, §14.8).
inline constexpr size_t kStunMaxTextDecode = 763;
inline constexpr size_t kStunMaxTextEncode = 509;
// Unknown comprehension-required attribute types kept for a 420 reply. A message can carry
// thousands; a reply has to fit one datagram, and a few are enough to tell the peer why.
inline constexpr size_t kStunMaxUnknownReported = 16;

enum class StunAttr : uint16_t {
  kMappedAddress = 0x0001,
  kUsername = 0x0006,
  kMessageIntegrity = 0x0008,
  kErrorCode = 0x0009,
  kUnknownAttributes = 0x000A,
  kRealm = 0x0014,
  kNonce = 0x0015,
  kXorMappedAddress = 0x0020,
  kPriority = 0x0024,      // RFC 8445 (ICE)
  kUseCandidate = 0x0025,  // RFC 8445 (ICE)
  kSoftware = 0x8022,
  kFingerprint = 0x8028,
};

using StunTxid = std::array<uint8_t, kStunTxidSize>;

// The four classes of a message type (§5). Only the Binding method is decoded.
enum class StunClass : uint8_t { kRequest, kIndication, kSuccess, kError };

struct StunErrorCode {
  uint16_t code = 0;   // class * 100 + number, 300..699
  std::string reason;  // printable ASCII; other bytes are shown as '?'
  bool operator==(const StunErrorCode&) const = default;
};

struct StunMessage {
  StunClass cls = StunClass::kRequest;
  StunTxid txid{};
  std::optional<dataplane::Endpoint> xor_mapped;  // XOR-MAPPED-ADDRESS, un-XORed
  std::optional<dataplane::Endpoint> mapped;      // MAPPED-ADDRESS (RFC 3489 servers)
  std::optional<std::string> software;            // printable ASCII; other bytes as '?'
  std::optional<StunErrorCode> error;             // always set in an error response
  std::vector<uint16_t> unknown_attributes;       // UNKNOWN-ATTRIBUTES (a 420 response)
  // Offset of the MESSAGE-INTEGRITY attribute's header, for stun_check_integrity().
  std::optional<size_t> integrity_offset;
  bool fingerprint = false;  // a FINGERPRINT was present (and verified: it is never wrong here)

  // XOR-MAPPED-ADDRESS if present, else MAPPED-ADDRESS.
  [[nodiscard]] std::optional<dataplane::Endpoint> mapped_address() const {
    return xor_mapped ? xor_mapped : mapped;
  }
};

// Why a datagram was rejected. Every value is a distinct lie the checks catch.
enum class StunError : uint8_t {
  kOk,
  kTooShort,                   // shorter than the 20-byte header
  kNotStun,                    // top two bits of the type are not zero
  kBadCookie,                  // magic cookie is not 0x2112A442 (RFC 3489 or not STUN)
  kBadLength,                  // length field not a multiple of 4
  kLengthMismatch,             // length field does not match the datagram
  kNotBinding,                 // a method other than Binding
  kTruncatedAttribute,         // attribute header or value (with padding) runs past the end
  kBadAddress,                 // (XOR-)MAPPED-ADDRESS with a bad family or length
  kBadErrorCode,               // ERROR-CODE too short, class not 3..6, number > 99
  kTextTooLong,                // SOFTWARE or reason phrase longer than 763 bytes
  kBadUnknownAttributes,       // UNKNOWN-ATTRIBUTES length not a multiple of 2
  kBadIntegrity,               // MESSAGE-INTEGRITY value is not 20 bytes
  kBadFingerprint,             // FINGERPRINT not 4 bytes or CRC mismatch
  kAttributeAfterFingerprint,  // FINGERPRINT is not the last attribute
  kMissingErrorCode,           // error response without ERROR-CODE
  kUnknownRequired,            // unknown comprehension-required attribute(s): answer 420
  kCount,
};
[[nodiscard]] const char* stun_error_name(StunError e);

struct StunDecodeFailure {
  StunError error = StunError::kOk;
  // Set once the header has passed its checks, so a server can still answer a request whose
  // attributes failed (400, or 420 for kUnknownRequired) and a client can match the txid.
  std::optional<StunClass> cls;
  StunTxid txid{};
  // kUnknownRequired: the unknown types in message order, each once, at most
  // kStunMaxUnknownReported.
  std::vector<uint16_t> unknown_required;
};

// Decodes one datagram strictly: header checks, then every attribute in order. Attributes
// after MESSAGE-INTEGRITY other than FINGERPRINT are ignored (§14.5); of a repeated
// attribute only the first counts (§14); unknown comprehension-optional ones (>= 0x8000) are
// skipped. A present FINGERPRINT is verified. MESSAGE-INTEGRITY is not verified here (that
// needs a key): see stun_check_integrity. Returns nullopt and fills `fail` on any error.
[[nodiscard]] std::optional<StunMessage> stun_decode(std::span<const uint8_t> datagram,
                                                     StunDecodeFailure& fail);

// HMAC-SHA1 over the message up to MESSAGE-INTEGRITY with the length field as if MI were the
// last attribute (§14.5), compared in constant time. `msg` must be the datagram `m` was
// decoded from. key: the short-term password bytes (§9.1), or the long-term
// MD5(username ":" realm ":" password) (§9.2). False when m has no MESSAGE-INTEGRITY.
[[nodiscard]] bool stun_check_integrity(std::span<const uint8_t> msg, const StunMessage& m,
                                        std::span<const uint8_t> key);

// A fresh random transaction id (libsodium; crypto::init() must have run).
[[nodiscard]] StunTxid stun_new_txid();

struct StunEncodeOptions {
  std::string_view software;          // omitted when empty; at most kStunMaxTextEncode bytes
  std::span<const uint8_t> integrity_key;  // adds MESSAGE-INTEGRITY when not empty
  bool fingerprint = true;
};

// Encoders. Each returns the datagram, or an empty vector when an argument is out of range
// (software or reason too long, code not 300..699, unknown list longer than
// kStunMaxUnknownReported, mapped address not IPv4/IPv6).
[[nodiscard]] std::vector<uint8_t> stun_encode_binding_request(const StunTxid& txid,
                                                               const StunEncodeOptions& opt = {});
[[nodiscard]] std::vector<uint8_t> stun_encode_binding_success(
    const StunTxid& txid, const dataplane::Endpoint& mapped, const StunEncodeOptions& opt = {});
// A 420 response carries `unknown` as UNKNOWN-ATTRIBUTES (§14.9); other codes ignore it.
[[nodiscard]] std::vector<uint8_t> stun_encode_binding_error(
    const StunTxid& txid, uint16_t code, std::string_view reason,
    std::span<const uint16_t> unknown = {}, const StunEncodeOptions& opt = {});

// CRC-32 (ISO-HDLC, as zlib's crc32) used by FINGERPRINT; exposed for tests.
[[nodiscard]] uint32_t stun_crc32(std::span<const uint8_t> data);

// ---- client transaction (§6.2.1) ----

// Retransmission over UDP: request k (0-based, k < rc) goes out at RTO * (2^k - 1) after the
// first; the transaction fails rm * RTO after the last request. With the defaults: requests
// at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s, failure at 39.5 s.
struct StunRetransmit {
  std::chrono::milliseconds rto{500};
  unsigned rc = 7;
  unsigned rm = 16;
  // rto 1 ms..60 s, rc 1..16, rm 1..64, and the whole schedule at most an hour.
  [[nodiscard]] bool valid() const;
};
// Offset of request k from the first (k < rc), and of the give-up time. Pure arithmetic.
[[nodiscard]] std::chrono::milliseconds stun_send_offset(const StunRetransmit& r, unsigned k);
[[nodiscard]] std::chrono::milliseconds stun_give_up_offset(const StunRetransmit& r);

struct StunQueryOptions {
  StunRetransmit retransmit;
  std::string_view software = "meshwg";
  bool fingerprint = true;
  // Datagrams read per transaction before giving up (kFlooded): a bound besides time.
  unsigned max_datagrams = 4096;
};

enum class StunQueryError : uint8_t {
  kOk,
  kBadArgument,     // server not IPv4/IPv6, fd not a UDP socket of a usable family, bad options
  kSocket,          // could not create the fresh socket
  kSend,            // sendto failed (sys_errno)
  kReceive,         // recv/poll failed (sys_errno)
  kUnreachable,     // ICMP said the server is unreachable (fresh, connected socket only)
  kTimeout,         // no matching response within the schedule
  kErrorResponse,   // the server answered an error response (server_error)
  kUnknownRequired, // the response had unknown comprehension-required attributes (§6.3.4)
  kNoMappedAddress, // a success response without (XOR-)MAPPED-ADDRESS
  kFlooded,         // more than max_datagrams arrived before an answer
  kCount,
};
[[nodiscard]] const char* stun_query_error_name(StunQueryError e);

struct StunQueryResult {
  StunQueryError error = StunQueryError::kOk;
  dataplane::Endpoint mapped;                 // kOk: the reflexive address
  std::optional<StunErrorCode> server_error;  // kErrorResponse
  int sys_errno = 0;                          // kSocket, kSend, kReceive, kUnreachable
  unsigned requests_sent = 0;
  unsigned ignored = 0;  // datagrams dropped: other source, other txid, malformed, requests
  StunError last_ignored_reason = StunError::kOk;  // why the last malformed one was dropped
  [[nodiscard]] bool ok() const { return error == StunQueryError::kOk; }
};

// One binding transaction with `server`. fd < 0: a fresh UDP socket of the server's family,
// connected to it (so ICMP errors are seen) and closed afterwards; otherwise a caller's UDP
// socket (IPv4, or IPv6 which may reach an IPv4 server through a v4-mapped address), which is
// left open and whose other traffic arriving meanwhile is consumed and ignored. Blocks for at
// most stun_give_up_offset(opt.retransmit). Datagrams not from the server, not matching the
// transaction id, or malformed are ignored. crypto::init() must have run (transaction id).
[[nodiscard]] StunQueryResult stun_query(const dataplane::Endpoint& server, int fd,
                                         const StunQueryOptions& opt = {});

}  // namespace meshwg::control
