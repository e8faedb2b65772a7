// The control messages two mesh peers exchange inside sealed boxes (control/sealed.h):
// candidate lists, connectivity-check pings and pongs, the three-step agreement to switch the
// WireGuard endpoints to a direct path, bye, and hello. A strict binary codec, sans-I/O.
//
// Wire format (integers big-endian; every message is exactly as long as its fields, nothing
// may follow):
//   type u8, then
//   1 Candidates      generation u32 | count u8 (<= 64) | count x candidate
//                       candidate = kind u8 (0..5) | flags u8 (bit 0: for_wireguard; the
//                       others zero) | endpoint
//   2 Ping            id u64 | sent_ns u64
//   3 Pong            id u64 | sent_ns u64 (echoed from the ping)
//   4 SwitchProposal  id u64 | mine endpoint | yours endpoint | at_ms u32 (<= 60000)
//   5 SwitchAck       id u64 | accept u8 (0 or 1)
//   6 SwitchConfirm   id u64 | ok u8 (0 or 1)
//   7 Bye             (nothing)
//   8 Hello           (nothing): the sender (re)joined the relay; answer with Candidates
//   endpoint = family u8 (4 or 6) | address (4 or 16 bytes, not all zero) | port u16 (not 0)
// The IPv6 scope id is not carried: it names an interface of the sender, which means nothing
// to the receiver. The local address an Endpoint may carry is not carried either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "dataplane/ip.h"

namespace meshwg::control {

inline constexpr size_t kPeerMaxCandidates = 64;
// A switch further out than this is not an agreement but a guess about the future.
inline constexpr uint32_t kPeerMaxSwitchDelayMs = 60000;
// The largest encoding: a Candidates message with 64 IPv6 candidates (1350 bytes); it fits a
// sealed box (kSealedMaxPlaintext) with room to spare.
inline constexpr size_t kPeerMaxMessageSize = 1 + 4 + 1 + kPeerMaxCandidates * (2 + 1 + 16 + 2);

enum class PeerMessageType : uint8_t {
  kCandidates = 1,
  kPing = 2,
  kPong = 3,
  kSwitchProposal = 4,
  kSwitchAck = 5,
  kSwitchConfirm = 6,
  kBye = 7,
  kHello = 8,
};

// Where a candidate comes from. Values are on the wire; the first five match mesh.h's
// CandidateKind, kRelay is the relay fallback.
enum class PeerCandidateKind : uint8_t {
  kLocal = 0,
  kWgStun = 1,
  kStun = 2,
  kUpnp = 3,
  kNatPmp = 4,
  kRelay = 5,
};
// "local", "wg-stun", "stun", "upnp", "nat-pmp", "relay".
[[nodiscard]] const char* peer_candidate_kind_name(PeerCandidateKind k);

struct PeerCandidate {
  PeerCandidateKind kind = PeerCandidateKind::kLocal;
  dataplane::Endpoint address;
  // true: a data-plane candidate (the WireGuard socket's address); false: the check socket's.
  bool for_wireguard = true;
  // Kind, flag, and address+port (Endpoint::same_remote).
  bool operator==(const PeerCandidate& o) const;
};

// The sender's current candidates, replacing every earlier list with a lower generation.
struct PeerCandidates {
  uint32_t generation = 0;
  std::vector<PeerCandidate> candidates;  // at most kPeerMaxCandidates
  bool operator==(const PeerCandidates&) const = default;
};

// Connectivity check on the check socket; sent_ns is the sender's clock, only it reads it.
struct PeerPing {
  uint64_t id = 0;
  uint64_t sent_ns = 0;
  bool operator==(const PeerPing&) const = default;
};
struct PeerPong {
  uint64_t id = 0;       // the ping's id
  uint64_t sent_ns = 0;  // the ping's sent_ns, echoed
  bool operator==(const PeerPong&) const = default;
};

// "Let us both point our WireGuard peers at these endpoints in at_ms milliseconds."
// mine: the proposer's data-plane endpoint, yours: the receiver's, as the proposer sees them.
struct PeerSwitchProposal {
  uint64_t id = 0;
  dataplane::Endpoint mine;
  dataplane::Endpoint yours;
  uint32_t at_ms = 0;  // at most kPeerMaxSwitchDelayMs
  bool operator==(const PeerSwitchProposal& o) const;
};
struct PeerSwitchAck {
  uint64_t id = 0;
  bool accept = false;
  bool operator==(const PeerSwitchAck&) const = default;
};
// After the switch: whether a handshake completed on the new path.
struct PeerSwitchConfirm {
  uint64_t id = 0;
  bool ok = false;
  bool operator==(const PeerSwitchConfirm&) const = default;
};
// The sender leaves the mesh (shutdown): forget its candidates, fall back to the relay.
struct PeerBye {
  bool operator==(const PeerBye&) const = default;
};
// The sender just connected to the relay (started, or came back): it wants our list. Sent
// with its own list, so a peer that restarted learns ours without both sides answering
// every list forever.
struct PeerHello {
  bool operator==(const PeerHello&) const = default;
};

using PeerMessage = std::variant<PeerCandidates, PeerPing, PeerPong, PeerSwitchProposal,
                                 PeerSwitchAck, PeerSwitchConfirm, PeerBye, PeerHello>;
[[nodiscard]] PeerMessageType peer_message_type(const PeerMessage& m);
[[nodiscard]] const char* peer_message_type_name(PeerMessageType t);

// Why a message was rejected. Every value is a distinct lie the checks catch.
enum class PeerMessageError : uint8_t {
  kOk,
  kEmpty,              // no type byte
  kUnknownType,        // type 0 or above 8
  kTruncated,          // ends inside a field
  kTrailingBytes,      // bytes after the last field
  kTooManyCandidates,  // count above 64
  kBadKind,            // candidate kind above 5
  kBadFlags,           // candidate flag bits other than bit 0
  kBadFamily,          // endpoint family not 4 or 6
  kBadAddress,         // endpoint address all zeros (unspecified)
  kBadPort,            // endpoint port 0
  kBadBool,            // accept / ok not 0 or 1
  kBadDelay,           // at_ms above kPeerMaxSwitchDelayMs
  kCount,
};
[[nodiscard]] const char* peer_message_error_name(PeerMessageError e);

// Encodes m, or returns empty when it breaks a rule the decoder checks (too many candidates,
// an endpoint not IPv4/IPv6 or with a zero address or port, a kind out of range, at_ms too
// large). Output is at most kPeerMaxMessageSize bytes.
[[nodiscard]] std::vector<uint8_t> peer_message_encode(const PeerMessage& m);

// Decodes one message strictly. nullopt with `error` set on any failure; error = kOk on
// success. Decoded endpoints have no scope id and no local address.
[[nodiscard]] std::optional<PeerMessage> peer_message_decode(std::span<const uint8_t> in,
                                                             PeerMessageError& error);

}  // namespace meshwg::control
