// Cryptographic primitives used by WireGuard (whitepaper §5.4): X25519 (RFC 7748),
// ChaCha20-Poly1305 (RFC 8439), XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha),
// BLAKE2s (RFC 7693), HMAC-BLAKE2s (RFC 2104) and the WireGuard KDF (HKDF, RFC 5869).
// Thin wrappers over libsodium and libb2; no exceptions, sizes in the signatures.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace meshwg::crypto {

inline constexpr size_t kKeySize = 32;
inline constexpr size_t kHashSize = 32;
inline constexpr size_t kTagSize = 16;
inline constexpr size_t kMacSize = 16;
inline constexpr size_t kXNonceSize = 24;

using ByteSpan = std::span<const uint8_t>;
using MutByteSpan = std::span<uint8_t>;

// Overwrites memory in a way the optimiser cannot elide (sodium_memzero).
void wipe(void* p, size_t n) noexcept;

// A fixed-size secret that wipes itself when destroyed or moved from.
template <size_t N>
struct Secret {
  std::array<uint8_t, N> b{};
  Secret() = default;
  explicit Secret(std::span<const uint8_t, N> s) noexcept { std::copy(s.begin(), s.end(), b.begin()); }
  Secret(const Secret&) = default;
  Secret& operator=(const Secret&) = default;
  ~Secret() { wipe(b.data(), N); }
  uint8_t* data() noexcept { return b.data(); }
  const uint8_t* data() const noexcept { return b.data(); }
  static constexpr size_t size() noexcept { return N; }
  std::span<uint8_t, N> span() noexcept { return b; }
  std::span<const uint8_t, N> span() const noexcept { return b; }
  void clear() noexcept { wipe(b.data(), N); }
  [[nodiscard]] bool is_zero() const noexcept;
};

using Key = Secret<kKeySize>;          // symmetric keys, private keys, chaining keys
using PublicKey = std::array<uint8_t, kKeySize>;

// Constant-time comparison.
[[nodiscard]] bool equal_ct(ByteSpan a, ByteSpan b) noexcept;
[[nodiscard]] bool is_zero_ct(ByteSpan a) noexcept;

// Must be called once before any other function (sodium_init). Returns false on failure.
[[nodiscard]] bool init() noexcept;

void random_bytes(MutByteSpan out) noexcept;

// ---- X25519 (RFC 7748) ----
// Generates a clamped private key.
void x25519_generate(std::span<uint8_t, 32> priv) noexcept;
void x25519_clamp(std::span<uint8_t, 32> priv) noexcept;
// pub = priv * basepoint. Returns false if priv yields an all-zero point.
[[nodiscard]] bool x25519_public(std::span<uint8_t, 32> pub, std::span<const uint8_t, 32> priv) noexcept;
// out = priv * pub. Returns false when the result is all zeros (low-order point): the
// handshake must be aborted then (whitepaper §5.4.2 note, kernel noise.c).
[[nodiscard]] bool x25519(std::span<uint8_t, 32> out, std::span<const uint8_t, 32> priv,
                          std::span<const uint8_t, 32> pub) noexcept;

// ---- ChaCha20-Poly1305, IETF (RFC 8439), WireGuard nonce = 4 zero bytes || LE64(counter) ----
// dst must hold src.size() + 16. dst may equal src (in place).
void aead_seal(uint8_t* dst, ByteSpan src, uint64_t counter, ByteSpan ad,
               std::span<const uint8_t, 32> key) noexcept;
// src includes the 16-byte tag; dst must hold src.size() - 16 (may be null when that is 0).
// Returns false on failure. The tag is verified before anything is decrypted, and on failure
// libsodium zero-fills dst: it never holds unauthenticated plaintext, but with dst == src
// (in place) the ciphertext is gone after a failed open.
[[nodiscard]] bool aead_open(uint8_t* dst, ByteSpan src, uint64_t counter, ByteSpan ad,
                             std::span<const uint8_t, 32> key) noexcept;

// ---- XChaCha20-Poly1305 (cookie replies) ----
void xaead_seal(uint8_t* dst, ByteSpan src, std::span<const uint8_t, 24> nonce, ByteSpan ad,
                std::span<const uint8_t, 32> key) noexcept;
// Same contract as aead_open (dst zero-filled on failure).
[[nodiscard]] bool xaead_open(uint8_t* dst, ByteSpan src, std::span<const uint8_t, 24> nonce,
                              ByteSpan ad, std::span<const uint8_t, 32> key) noexcept;

// ---- BLAKE2s (RFC 7693) ----
// Unkeyed or keyed BLAKE2s with outlen 1..32 and key 0..32 bytes.
void blake2s(MutByteSpan out, ByteSpan in, ByteSpan key = {}) noexcept;

// Incremental BLAKE2s-256 for HASH(a || b || ...).
class Blake2s {
 public:
  explicit Blake2s(size_t outlen = 32, ByteSpan key = {}) noexcept;
  ~Blake2s();
  Blake2s(const Blake2s&) = delete;
  Blake2s& operator=(const Blake2s&) = delete;
  Blake2s& update(ByteSpan in) noexcept;
  void final(MutByteSpan out) noexcept;

 private:
  alignas(64) uint8_t state_[256];
  size_t outlen_;
};

// HMAC-BLAKE2s (64-byte block) with a 32-byte output.
void hmac_blake2s(std::span<uint8_t, 32> out, ByteSpan key, ByteSpan in) noexcept;

// WireGuard KDF_n(key, input) (whitepaper §5.4, HKDF with HMAC-BLAKE2s). Outputs that are
// not needed may be null. The handshake's key is always a 32-byte chaining key; any length
// is accepted (as HMAC does) so the published KDF vectors with short keys apply directly.
void kdf(ByteSpan key, ByteSpan input, uint8_t* t1, uint8_t* t2 = nullptr,
         uint8_t* t3 = nullptr) noexcept;

}  // namespace meshwg::crypto
