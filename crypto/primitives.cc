// Wrappers over libsodium (X25519, AEADs, randomness, wiping) and libb2 (BLAKE2s), plus
// HMAC-BLAKE2s (RFC 2104 with a 64-byte block) and the WireGuard KDF (whitepaper §5.4).
#include "crypto/primitives.h"

#include <blake2.h>
#include <sodium.h>

#include <cstring>
#include <new>

namespace meshwg::crypto {

namespace {
constexpr size_t kBlake2sBlock = 64;

void make_nonce(uint8_t nonce[12], uint64_t counter) {
  std::memset(nonce, 0, 4);
  for (int i = 0; i < 8; ++i) nonce[4 + i] = static_cast<uint8_t>(counter >> (8 * i));
}
}  // namespace

void wipe(void* p, size_t n) noexcept { sodium_memzero(p, n); }

template <size_t N>
bool Secret<N>::is_zero() const noexcept {
  return is_zero_ct(std::span<const uint8_t>(b));
}
template struct Secret<32>;
template struct Secret<16>;

bool equal_ct(ByteSpan a, ByteSpan b) noexcept {
  if (a.size() != b.size()) return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool is_zero_ct(ByteSpan a) noexcept { return sodium_is_zero(a.data(), a.size()) == 1; }

bool init() noexcept { return sodium_init() >= 0; }

void random_bytes(MutByteSpan out) noexcept { randombytes_buf(out.data(), out.size()); }

void x25519_clamp(std::span<uint8_t, 32> priv) noexcept {
  priv[0] &= 248;
  priv[31] &= 127;
  priv[31] |= 64;
}

void x25519_generate(std::span<uint8_t, 32> priv) noexcept {
  random_bytes(priv);
  x25519_clamp(priv);
}

bool x25519_public(std::span<uint8_t, 32> pub, std::span<const uint8_t, 32> priv) noexcept {
  return crypto_scalarmult_curve25519_base(pub.data(), priv.data()) == 0;
}

bool x25519(std::span<uint8_t, 32> out, std::span<const uint8_t, 32> priv,
            std::span<const uint8_t, 32> pub) noexcept {
  // libsodium returns -1 when the shared point is all zeros (small-order input).
  if (crypto_scalarmult_curve25519(out.data(), priv.data(), pub.data()) != 0) {
    wipe(out.data(), out.size());
    return false;
  }
  return true;
}

void aead_seal(uint8_t* dst, ByteSpan src, uint64_t counter, ByteSpan ad,
               std::span<const uint8_t, 32> key) noexcept {
  uint8_t nonce[12];
  make_nonce(nonce, counter);
  unsigned long long maclen = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(dst, dst + src.size(), &maclen, src.data(),
                                                     src.size(), ad.data(), ad.size(), nullptr,
                                                     nonce, key.data());
}

bool aead_open(uint8_t* dst, ByteSpan src, uint64_t counter, ByteSpan ad,
               std::span<const uint8_t, 32> key) noexcept {
  if (src.size() < kTagSize) return false;
  uint8_t nonce[12];
  make_nonce(nonce, counter);
  const size_t n = src.size() - kTagSize;
  return crypto_aead_chacha20poly1305_ietf_decrypt_detached(dst, nullptr, src.data(), n,
                                                            src.data() + n, ad.data(), ad.size(),
                                                            nonce, key.data()) == 0;
}

void xaead_seal(uint8_t* dst, ByteSpan src, std::span<const uint8_t, 24> nonce, ByteSpan ad,
                std::span<const uint8_t, 32> key) noexcept {
  unsigned long long maclen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt_detached(dst, dst + src.size(), &maclen, src.data(),
                                                      src.size(), ad.data(), ad.size(), nullptr,
                                                      nonce.data(), key.data());
}

bool xaead_open(uint8_t* dst, ByteSpan src, std::span<const uint8_t, 24> nonce, ByteSpan ad,
                std::span<const uint8_t, 32> key) noexcept {
  if (src.size() < kTagSize) return false;
  const size_t n = src.size() - kTagSize;
  return crypto_aead_xchacha20poly1305_ietf_decrypt_detached(dst, nullptr, src.data(), n,
                                                             src.data() + n, ad.data(), ad.size(),
                                                             nonce.data(), key.data()) == 0;
}

void blake2s(MutByteSpan out, ByteSpan in, ByteSpan key) noexcept {
  ::blake2s(out.data(), in.data(), key.empty() ? nullptr : key.data(), out.size(), in.size(),
            key.size());
}

static_assert(sizeof(blake2s_state) <= 256 && alignof(blake2s_state) <= 64);

Blake2s::Blake2s(size_t outlen, ByteSpan key) noexcept : outlen_(outlen) {
  auto* s = new (state_) blake2s_state;
  if (key.empty())
    blake2s_init(s, outlen);
  else
    blake2s_init_key(s, outlen, key.data(), key.size());
}

Blake2s::~Blake2s() { wipe(state_, sizeof(state_)); }

Blake2s& Blake2s::update(ByteSpan in) noexcept {
  blake2s_update(reinterpret_cast<blake2s_state*>(state_), in.data(), in.size());
  return *this;
}

void Blake2s::final(MutByteSpan out) noexcept {
  blake2s_final(reinterpret_cast<blake2s_state*>(state_), out.data(), outlen_);
}

void hmac_blake2s(std::span<uint8_t, 32> out, ByteSpan key, ByteSpan in) noexcept {
  uint8_t k[kBlake2sBlock] = {};
  if (key.size() > kBlake2sBlock) {
    blake2s(std::span<uint8_t>(k, 32), key);
  } else if (!key.empty()) {
    std::memcpy(k, key.data(), key.size());
  }
  uint8_t pad[kBlake2sBlock];
  uint8_t inner[32];
  for (size_t i = 0; i < kBlake2sBlock; ++i) pad[i] = k[i] ^ 0x36;
  Blake2s(32).update(pad).update(in).final(inner);
  for (size_t i = 0; i < kBlake2sBlock; ++i) pad[i] = k[i] ^ 0x5c;
  Blake2s(32).update(pad).update(inner).final(out);
  wipe(k, sizeof(k));
  wipe(pad, sizeof(pad));
  wipe(inner, sizeof(inner));
}

void kdf(ByteSpan key, ByteSpan input, uint8_t* t1, uint8_t* t2,
         uint8_t* t3) noexcept {
  uint8_t prk[32];
  uint8_t t[33];
  hmac_blake2s(prk, key, input);
  // T1 = HMAC(prk, 0x01); T(i) = HMAC(prk, T(i-1) || i)
  t[0] = 1;
  hmac_blake2s(std::span<uint8_t, 32>(t, 32), prk, std::span<const uint8_t>(t, 1));
  if (t1) std::memcpy(t1, t, 32);
  if (t2 || t3) {
    t[32] = 2;
    uint8_t next[32];
    hmac_blake2s(next, prk, std::span<const uint8_t>(t, 33));
    std::memcpy(t, next, 32);
    if (t2) std::memcpy(t2, t, 32);
    if (t3) {
      t[32] = 3;
      hmac_blake2s(next, prk, std::span<const uint8_t>(t, 33));
      std::memcpy(t3, next, 32);
    }
    wipe(next, sizeof(next));
  }
  wipe(prk, sizeof(prk));
  wipe(t, sizeof(t));
}

}  // namespace meshwg::crypto
