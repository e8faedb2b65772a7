// Hash for tables keyed by WireGuard public keys that strangers choose (WG-STUN clients,
// relay clients): SipHash (libsodium crypto_shorthash) under a random per-table secret, so
// nobody can pick keys that pile into one bucket.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <sodium.h>

#include "crypto/primitives.h"

namespace meshwg::control {

struct PublicKeyHash {
  uint8_t secret[crypto_shorthash_KEYBYTES];

  // A hash with a fresh random secret; crypto::init() must have run.
  static PublicKeyHash random() {
    PublicKeyHash h;
    crypto::random_bytes(h.secret);
    return h;
  }
  size_t operator()(const crypto::PublicKey& k) const {
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash(out, k.data(), k.size(), secret);
    size_t h;
    static_assert(sizeof(h) <= sizeof(out));
    std::memcpy(&h, out, sizeof(h));
    return h;
  }
};

}  // namespace meshwg::control
