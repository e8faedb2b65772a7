// The relay's wire protocol (meshwg-server's Relay TCP address, DESIGN.md "Traversal"):
// framing, the bodies of each frame type, and the key-possession proofs. Sans-I/O: bytes in,
// bytes out; the server (control/relay_server.h) and the client (control/relay_client.h) own
// the sockets and the clocks.
//
// Frame (all integers big-endian):
//   type u8 | reserved u8 (0) | body length u16 | body (0 .. kRelayMaxBody bytes)
//
//   type              dir   body
//   0x01 ServerHello  s→c   version u8 (1) | server_public[32] | challenge[32]   (65 bytes)
//   0x02 ClientAuth   c→s   version u8 (1) | client_public[32] | proof[32]       (65 bytes)
//   0x03 AuthOk       s→c   proof_server[32]                                    (32 bytes)
//   0x04 Send         c→s   dst_public[32] | payload (0 .. kRelayMaxPayload, opaque)
//   0x05 Recv         s→c   src_public[32] | payload
//   0x06 PeerAbsent   s→c   dst_public[32]: not connected (at most 1/s per destination)
//   0x07 Ping         both  8 opaque bytes
//   0x08 Pong         both  the 8 bytes of the Ping it answers
//
// Session: on accept the server sends ServerHello with a fresh random challenge. The
// client's first frame must be ClientAuth; the server answers AuthOk (or closes). Then the
// client sends Send / Ping / Pong and receives Recv / PeerAbsent / Ping / Pong.
//
// Proof of possession of the WireGuard static keys (both sides, one X25519 each):
//   K            = BLAKE2s-256( X25519(client_private, server_public) )
//                = BLAKE2s-256( X25519(server_private, client_public) )
//   proof        = BLAKE2s-256, keyed with K, of
//                  "meshwg relay client v1" || server_public || challenge || client_public
//   proof_server = BLAKE2s-256, keyed with K, of
//                  "meshwg relay server v1" || challenge || client_public
// A low-order key (all-zero X25519 result) never authenticates. The challenge makes a proof
// good for one connection only; proof_server tells the client it reached the key it
// configured. K and the DH result are wiped after use.
//
// Malformed (RelayMalformed): an unknown type, reserved != 0, a fixed-size body of the wrong
// length, a Send/Recv body shorter than its key, a body longer than the reader's limit; and,
// judged by the endpoints, a bad version, a first frame that is not ClientAuth, a frame for
// the other direction, a second ClientAuth. The framing checks are made on the 4-byte header,
// before the body arrives, so a lying length is refused without waiting for (or buffering) it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "crypto/primitives.h"

namespace meshwg::control {

inline constexpr uint8_t kRelayVersion = 1;
inline constexpr size_t kRelayHeaderSize = 4;
inline constexpr size_t kRelayMaxBody = 65535;  // the u16 length field's range
inline constexpr size_t kRelayMaxFrame = kRelayHeaderSize + kRelayMaxBody;
inline constexpr size_t kRelayKeySize = 32;
inline constexpr size_t kRelayMaxPayload = kRelayMaxBody - kRelayKeySize;  // Send / Recv
inline constexpr size_t kRelayHelloBody = 1 + 32 + 32;  // ServerHello and ClientAuth
inline constexpr size_t kRelayAuthOkBody = 32;
inline constexpr size_t kRelayPingBody = 8;
// Bytes a RelayFrameReader takes per feed() at most when drained after each (see feed()).
inline constexpr size_t kRelayReadChunk = 16384;

enum class RelayFrameType : uint8_t {
  kServerHello = 0x01,
  kClientAuth = 0x02,
  kAuthOk = 0x03,
  kSend = 0x04,
  kRecv = 0x05,
  kPeerAbsent = 0x06,
  kPing = 0x07,
  kPong = 0x08,
};
[[nodiscard]] const char* relay_frame_type_name(RelayFrameType t);

// Why a frame was refused. Each value is a counter index (kCount of them).
enum class RelayMalformed : uint8_t {
  kOk,                // no error
  kUnknownType,       // type not 0x01..0x08
  kReserved,          // reserved byte not 0
  kBadLength,         // fixed-size type (hello, auth, auth ok, absent, ping, pong) with another length
  kTooShort,          // Send / Recv body shorter than its 32-byte key
  kOversized,         // body longer than the reader's limit (before authentication: 65 bytes)
  kBadVersion,        // ServerHello / ClientAuth version != kRelayVersion (parser, endpoint)
  kNotAuthenticated,  // a first frame other than ClientAuth (server)
  kWrongDirection,    // a frame type the other side sends (e.g. Recv sent to the server)
  kAuthAgain,         // ClientAuth on an authenticated connection (server)
  kCount,
};
[[nodiscard]] const char* relay_malformed_name(RelayMalformed m);

// The header checks alone: kOk when a frame of this type and body length can be valid. The
// reader applies these and then its own length limit.
[[nodiscard]] RelayMalformed relay_check_header(uint8_t type, uint8_t reserved, size_t body_len);

using RelayChallenge = std::array<uint8_t, 32>;
using RelayProof = std::array<uint8_t, 32>;
using RelayPingToken = std::array<uint8_t, kRelayPingBody>;

// ---- encoding ----
// Each returns the whole frame (header included), or an empty vector when the body would be
// invalid for the type (longer than kRelayMaxBody, a fixed-size body of another size, a
// Send/Recv payload over kRelayMaxPayload): encode never produces what the reader refuses.

[[nodiscard]] std::vector<uint8_t> relay_encode(RelayFrameType t, std::span<const uint8_t> body);
[[nodiscard]] std::vector<uint8_t> relay_encode_server_hello(const crypto::PublicKey& server_public,
                                                             const RelayChallenge& challenge);
[[nodiscard]] std::vector<uint8_t> relay_encode_client_auth(const crypto::PublicKey& client_public,
                                                            const RelayProof& proof);
[[nodiscard]] std::vector<uint8_t> relay_encode_auth_ok(const RelayProof& proof_server);
[[nodiscard]] std::vector<uint8_t> relay_encode_send(const crypto::PublicKey& dst,
                                                     std::span<const uint8_t> payload);
[[nodiscard]] std::vector<uint8_t> relay_encode_recv(const crypto::PublicKey& src,
                                                     std::span<const uint8_t> payload);
[[nodiscard]] std::vector<uint8_t> relay_encode_peer_absent(const crypto::PublicKey& dst);
[[nodiscard]] std::vector<uint8_t> relay_encode_ping(const RelayPingToken& token);
[[nodiscard]] std::vector<uint8_t> relay_encode_pong(const RelayPingToken& token);
// Just the 4-byte header, for writers that take the body from elsewhere (the server and the
// client append frames to their send queues in parts). body_len must be <= kRelayMaxBody.
[[nodiscard]] std::array<uint8_t, kRelayHeaderSize> relay_header(RelayFrameType t, size_t body_len);

// ---- framing ----

struct RelayFrame {
  RelayFrameType type = RelayFrameType::kPing;
  // Points into the reader's buffer: valid until the next feed() (or the reader is destroyed,
  // moved or assigned); further next() calls do not move it.
  std::span<const uint8_t> body;
};

// Reassembles frames from a byte stream. Memory: one buffer holding at most one incomplete
// frame plus one chunk (kRelayMaxFrame + kRelayReadChunk bytes); trim() frees it when empty.
// Errors are sticky: after kMalformed the stream cannot be resynchronised (there are no frame
// markers), so the connection must be closed.
class RelayFrameReader {
 public:
  enum class Result : uint8_t { kFrame, kNeedMore, kMalformed };
  static constexpr size_t kCapacity = kRelayMaxFrame + kRelayReadChunk;

  // max_body: longest body accepted (at most kRelayMaxBody); longer ones are kOversized.
  explicit RelayFrameReader(size_t max_body = kRelayMaxBody) noexcept;
  // Changes the limit for frames whose header has not been read yet (the server raises it
  // from kRelayHelloBody once the client is authenticated).
  void set_max_body(size_t max_body) noexcept;

  // Appends stream bytes. Returns how many were taken: all of them as long as the caller
  // drains next() until kNeedMore between feeds of at most kRelayReadChunk bytes; fewer only
  // when the buffer is full (the caller must not drop the rest: feed it after draining).
  // Takes nothing after an error.
  size_t feed(std::span<const uint8_t> data);
  // The next complete frame, kNeedMore when none is complete yet, or kMalformed (see error()).
  [[nodiscard]] Result next(RelayFrame& out);

  RelayMalformed error() const { return error_; }
  // Bytes of a frame not complete yet (0 between frames): a close now is a close mid-frame.
  size_t buffered() const { return buf_.size() - pos_; }
  // Frees the buffer if nothing is buffered and it holds more than a chunk.
  void trim();
  size_t memory() const { return buf_.capacity(); }

 private:
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;  // start of the unread bytes in buf_
  size_t max_body_;
  RelayMalformed error_ = RelayMalformed::kOk;
};

// ---- bodies ----
// Each returns nullopt when the body is not exactly what its type allows (and, for the hello
// and auth, when the version is not kRelayVersion). Spans point into the given body.

struct RelayServerHello {
  crypto::PublicKey server_public{};
  RelayChallenge challenge{};
};
struct RelayClientAuth {
  crypto::PublicKey client_public{};
  RelayProof proof{};
};
struct RelaySend {
  crypto::PublicKey dst{};
  std::span<const uint8_t> payload;
};
struct RelayRecv {
  crypto::PublicKey src{};
  std::span<const uint8_t> payload;
};

[[nodiscard]] std::optional<RelayServerHello> parse_server_hello(std::span<const uint8_t> body);
[[nodiscard]] std::optional<RelayClientAuth> parse_client_auth(std::span<const uint8_t> body);
[[nodiscard]] std::optional<RelayProof> parse_auth_ok(std::span<const uint8_t> body);
[[nodiscard]] std::optional<RelaySend> parse_send(std::span<const uint8_t> body);
[[nodiscard]] std::optional<RelayRecv> parse_recv(std::span<const uint8_t> body);
[[nodiscard]] std::optional<crypto::PublicKey> parse_peer_absent(std::span<const uint8_t> body);
// Ping and Pong bodies alike.
[[nodiscard]] std::optional<RelayPingToken> parse_ping(std::span<const uint8_t> body);

// ---- authentication ----
// All return false when the X25519 result is all zeros (a low-order public key): no proof
// exists then and none verifies. Verification compares in constant time.

// K = BLAKE2s-256(X25519(my_private, their_public)); the caller wipes it (crypto::Key does).
[[nodiscard]] bool relay_auth_key(const crypto::Key& my_private, const crypto::PublicKey& their_public,
                                  crypto::Key& k);
// The two MACs under K (no DH): building blocks of the functions below.
void relay_client_mac(const crypto::Key& k, const crypto::PublicKey& server_public,
                      const RelayChallenge& challenge, const crypto::PublicKey& client_public,
                      RelayProof& out);
void relay_server_mac(const crypto::Key& k, const RelayChallenge& challenge,
                      const crypto::PublicKey& client_public, RelayProof& out);

// Client: the ClientAuth proof for this connection's challenge.
[[nodiscard]] bool relay_client_proof(const crypto::Key& client_private,
                                      const crypto::PublicKey& server_public,
                                      const RelayChallenge& challenge,
                                      const crypto::PublicKey& client_public, RelayProof& out);
// Client: checks the AuthOk proof.
[[nodiscard]] bool relay_verify_server(const crypto::Key& client_private,
                                       const crypto::PublicKey& server_public,
                                       const RelayChallenge& challenge,
                                       const crypto::PublicKey& client_public,
                                       const RelayProof& proof_server);
// Server: checks a ClientAuth proof.
[[nodiscard]] bool relay_verify_client(const crypto::Key& server_private,
                                       const crypto::PublicKey& server_public,
                                       const RelayChallenge& challenge,
                                       const crypto::PublicKey& client_public,
                                       const RelayProof& proof);
// Server: the AuthOk proof.
[[nodiscard]] bool relay_server_proof(const crypto::Key& server_private,
                                      const RelayChallenge& challenge,
                                      const crypto::PublicKey& client_public, RelayProof& out);
// Server, one X25519 for both steps: true when `proof` verifies, with the AuthOk proof in
// proof_server (left untouched otherwise).
[[nodiscard]] bool relay_server_accept(const crypto::Key& server_private,
                                       const crypto::PublicKey& server_public,
                                       const RelayChallenge& challenge,
                                       const crypto::PublicKey& client_public,
                                       const RelayProof& proof, RelayProof& proof_server);

}  // namespace meshwg::control
