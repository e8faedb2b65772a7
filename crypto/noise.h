// Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake as WireGuard uses it (whitepaper §5.4.2-5.4.5):
//   <- s
//   ...
//   -> e, es, s, ss          (initiation, 148 bytes, with a TAI64N timestamp payload)
//   <- e, ee, se, psk        (response, 92 bytes, empty payload)
// Sans-I/O: functions take bytes and return results; the caller owns indices, time and sockets.
// MAC1/MAC2 are not handled here (see cookie.h); functions leave the mac fields untouched.
#pragma once

#include <cstdint>

#include "crypto/primitives.h"
#include "crypto/tai64n.h"
#include "dataplane/messages.h"

namespace meshwg::crypto {

// The local static identity. public_key is derived from private_key.
struct LocalStatic {
  Key private_key;
  PublicKey public_key{};
  bool has_key = false;

  // Sets (and clamps) the private key; an all-zero key clears the identity.
  void set(std::span<const uint8_t, 32> priv);
};

// The keys a completed handshake yields (whitepaper §5.4.5).
struct SessionKeys {
  Key send;
  Key recv;
  uint32_t local_index = 0;
  uint32_t remote_index = 0;
  bool initiator = false;
};

// What decrypt_initiation learns from an initiation before the peer is known: the remote
// static key (to look the peer up) and the Noise state needed to finish consuming it.
struct InitiationPartial {
  PublicKey remote_static{};
  PublicKey remote_ephemeral{};
  uint32_t remote_index = 0;
  Key chaining_key;
  std::array<uint8_t, 32> hash{};
};

// Per-peer handshake state. Not thread-safe: the owner serialises access.
class Handshake {
 public:
  enum class State : uint8_t {
    kZeroed,
    kCreatedInitiation,
    kConsumedInitiation,
    kCreatedResponse,
    kConsumedResponse,
  };

  // Sets the remote static key and PSK and precomputes DH(local static, remote static).
  // Returns false when that DH is zero (a low-order remote key): the peer must never
  // initiate or answer handshakes (netns.sh test 19). Also call after the local key changes.
  [[nodiscard]] bool set_keys(const LocalStatic& local, const PublicKey& remote_static,
                              std::span<const uint8_t, 32> psk);
  void set_psk(std::span<const uint8_t, 32> psk);

  // Builds an initiation into msg (all fields but the macs). ephemeral_private lets tests
  // inject a fixed ephemeral key (nullptr = random). now is the timestamp payload.
  [[nodiscard]] bool create_initiation(dataplane::MessageInitiation& msg, const LocalStatic& local,
                                       uint32_t local_index, const Tai64n& now,
                                       const Key* ephemeral_private = nullptr);

  // Finishes consuming an initiation that decrypt_initiation attributed to this peer:
  // decrypts the timestamp, rejects it unless strictly later than the last one accepted
  // (replay), and stores the state so create_response can follow. On false nothing changes.
  [[nodiscard]] bool consume_initiation(const dataplane::MessageInitiation& msg,
                                        const InitiationPartial& partial, Tai64n* timestamp_out = nullptr);

  [[nodiscard]] bool create_response(dataplane::MessageResponse& msg, uint32_t local_index,
                                     const Key* ephemeral_private = nullptr);

  // Consumes a response to the initiation this handshake created. On false nothing changes.
  [[nodiscard]] bool consume_response(const dataplane::MessageResponse& msg, const LocalStatic& local);

  // Derives the transport keys after create_response (responder) or consume_response
  // (initiator), then wipes the handshake state (back to kZeroed).
  [[nodiscard]] bool derive_session(SessionKeys& out);

  // Wipes ephemeral and chaining state (keeps the static keys, the PSK and the latest timestamp).
  void clear();

  State state() const { return state_; }
  uint32_t local_index() const { return local_index_; }
  uint32_t remote_index() const { return remote_index_; }
  const PublicKey& remote_static() const { return remote_static_; }
  const Tai64n& latest_timestamp() const { return latest_timestamp_; }
  bool usable() const { return usable_; }  // false after set_keys found a low-order key

 private:
  State state_ = State::kZeroed;
  bool usable_ = false;
  PublicKey remote_static_{};
  Key precomputed_static_static_;
  Key psk_;
  Key ephemeral_private_;
  PublicKey remote_ephemeral_{};
  Key chaining_key_;
  std::array<uint8_t, 32> hash_{};
  uint32_t local_index_ = 0;
  uint32_t remote_index_ = 0;
  Tai64n latest_timestamp_{};
};

// First half of consuming an initiation (mac1 already checked by the caller): decrypts the
// initiator's static key with the local identity. Returns false for anything that fails.
[[nodiscard]] bool decrypt_initiation(const dataplane::MessageInitiation& msg,
                                      const LocalStatic& local, InitiationPartial& out);

}  // namespace meshwg::crypto
