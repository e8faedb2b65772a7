// Sealed end-to-end channel between two mesh peers (DESIGN.md "Exchange", rule 1): candidate
// lists and control messages (control/peer_message.h) are sealed with a key only the two
// peers can compute, so the relay that carries them reads and forges none of it.
//
// Key: K = BLAKE2s-256(key = X25519(my_private, their_public),
//                      msg = "meshwg sealed v1" || lower public key || higher public key)
// (keyed BLAKE2s, RFC 7693 §2.5; the two public keys in byte-wise order so both sides derive
// the same K; a low-order peer key makes X25519 all zeros and gives no channel).
//
// Box (all integers big-endian):
//   version u8 (= 1) | counter u64 | nonce[24] (random) | XChaCha20-Poly1305-IETF ciphertext+tag
// (draft-irtf-cfrg-xchacha, libsodium) with associated data
//   version || counter || sender public key || recipient public key || transport u8
// so a box cannot be reflected to its sender (the two keys swap), redirected to a third peer
// (another K), or moved between the relay stream and the check socket (transport byte).
//
// Replay: the sender's counter is max(last sent + 1, wall-clock ns since the Unix epoch), so it
// increases strictly and keeps increasing across a sender restart without any coordination
// (the restarted sender starts from its clock, which is past every counter it used before).
// The receiver accepts a box only when its counter is above the highest it has accepted, and
// only after the box authenticated. No bound is put on how far ahead of the receiver's clock a
// counter may be: peers' clocks differ, and nothing needs it, because the counter is compared
// only with earlier counters of the same sender, never with the receiver's time.
// Assumptions this rests on, and their costs:
//  - Order. Boxes of one transport arrive in the order they were sealed: the relay is one
//    ordered TCP stream. A box overtaken by a later one is rejected as a replay, not buffered.
//    On the check socket (UDP) a reordered box is therefore lost, which connectivity checks
//    tolerate like any other loss.
//  - Sender clock. If the sender's clock steps back and the sender restarts, its boxes are
//    rejected (kReplay) until its clock passes the last counter the receiver accepted.
//  - Receiver memory. The highest accepted counter lives in memory; a receiver that restarts
//    would accept a recorded older box once more. highest_received() / set_highest_received()
//    let a caller keep it across restarts; the messages are built to tolerate a stale replay
//    (candidate generations, ids echoed in answers).
//
// Sans-I/O: bytes in, bytes out; the clock is injected. Not thread-safe: one owner (the
// control thread). crypto::init() is called by create().
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "crypto/primitives.h"

namespace meshwg::control {

inline constexpr uint8_t kSealedVersion = 1;
inline constexpr size_t kSealedHeaderSize = 1 + 8 + crypto::kXNonceSize;        // 33
inline constexpr size_t kSealedOverhead = kSealedHeaderSize + crypto::kTagSize;  // 49
// Largest plaintext: a full candidate list is about 1.4 KiB; the bound keeps a peer from
// making us allocate more than this per box.
inline constexpr size_t kSealedMaxPlaintext = 16 * 1024;
inline constexpr size_t kSealedMaxBox = kSealedOverhead + kSealedMaxPlaintext;
// The 16 label bytes (no terminator) that start the key derivation's message.
inline constexpr char kSealedLabel[] = "meshwg sealed v1";

// Which way the boxes travel. Each transport needs its own channel (its own counters); the
// byte is authenticated, so a box sealed for one transport does not open on the other.
enum class SealedTransport : uint8_t {
  kRelay = 0,        // the relay's TCP stream (candidates, switch agreement, bye)
  kCheckSocket = 1,  // the control plane's UDP check socket (pings and pongs)
};

// Why open() rejected a box. Every value is a distinct lie the checks catch.
enum class SealedError : uint8_t {
  kOk,
  kTooShort,    // shorter than the 49-byte overhead
  kTooLong,     // plaintext would be longer than kSealedMaxPlaintext
  kBadVersion,  // version byte is not 1
  kAuthFailed,  // tag does not verify: tampered, other key (another peer), reflected, wrong
                // transport, or not a box at all
  kReplay,      // authentic, but the counter is not above the highest accepted: a replay, an
                // older box after a newer one, or a sender whose clock went back
  kCount,
};
[[nodiscard]] const char* sealed_error_name(SealedError e);

// Wall-clock nanoseconds since the Unix epoch; injectable for tests.
using SealedClock = std::function<uint64_t()>;
[[nodiscard]] uint64_t sealed_system_clock_ns();

// K for the pair (exposed for tests). nullopt when X25519 gives all zeros (low-order key).
[[nodiscard]] std::optional<crypto::Key> sealed_derive_key(const crypto::Key& my_private,
                                                           const crypto::PublicKey& my_public,
                                                           const crypto::PublicKey& their_public);

class SealedChannel {
 public:
  // nullopt when libsodium cannot start, my_public is not my_private's public key, their key
  // is our own (the channel would open its own reflected boxes), or X25519 with their key
  // fails (low-order point). clock: nullptr = sealed_system_clock_ns.
  [[nodiscard]] static std::optional<SealedChannel> create(
      const crypto::Key& my_private, const crypto::PublicKey& my_public,
      const crypto::PublicKey& their_public,
      SealedTransport transport = SealedTransport::kRelay, SealedClock clock = nullptr);

  // Move-only. A moved-from channel has a wiped key and is dead: seal() returns empty and
  // open() rejects (kAuthFailed). key_ wipes itself on destruction (crypto::Secret).
  SealedChannel(SealedChannel&& o) noexcept;
  SealedChannel& operator=(SealedChannel&& o) noexcept;
  SealedChannel(const SealedChannel&) = delete;
  SealedChannel& operator=(const SealedChannel&) = delete;
  ~SealedChannel() = default;

  // One box for the peer, kSealedOverhead bytes longer than plaintext. Empty when plaintext is
  // longer than kSealedMaxPlaintext or the counter reached UINT64_MAX (neither happens in
  // use; counted in seal_failures()).
  [[nodiscard]] std::vector<uint8_t> seal(std::span<const uint8_t> plaintext);

  // The plaintext of a box from the peer, or nullopt with the reason in *why (if given) and
  // counted in rejected(). Nothing changes on rejection; on success the counter becomes the
  // highest received. The plaintext is only produced after the tag verified.
  [[nodiscard]] std::optional<std::vector<uint8_t>> open(std::span<const uint8_t> box,
                                                         SealedError* why = nullptr);

  const crypto::PublicKey& my_public() const { return my_public_; }
  const crypto::PublicKey& their_public() const { return their_public_; }
  SealedTransport transport() const { return transport_; }

  uint64_t last_sent() const { return last_sent_; }
  uint64_t highest_received() const { return highest_received_; }
  // Restores a remembered high-water mark (see "Receiver memory" above); never lowers it.
  void set_highest_received(uint64_t counter) {
    if (counter > highest_received_) highest_received_ = counter;
  }

  uint64_t sealed() const { return sealed_; }
  uint64_t opened() const { return opened_; }
  uint64_t seal_failures() const { return seal_failures_; }
  uint64_t rejected(SealedError e) const {
    return e < SealedError::kCount ? rejected_[size_t(e)] : 0;
  }
  uint64_t rejected_total() const;

 private:
  SealedChannel() = default;
  // version || counter || sender || recipient || transport
  using Ad = std::array<uint8_t, 1 + 8 + 2 * crypto::kKeySize + 1>;
  Ad make_ad(uint64_t counter, bool outgoing) const;

  crypto::Key key_;
  crypto::PublicKey my_public_{};
  crypto::PublicKey their_public_{};
  SealedTransport transport_ = SealedTransport::kRelay;
  SealedClock clock_;
  bool live_ = false;  // false once moved from
  uint64_t last_sent_ = 0;
  uint64_t highest_received_ = 0;
  uint64_t sealed_ = 0;
  uint64_t opened_ = 0;
  uint64_t seal_failures_ = 0;
  std::array<uint64_t, size_t(SealedError::kCount)> rejected_{};
};

}  // namespace meshwg::control
