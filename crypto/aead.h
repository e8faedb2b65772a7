// Transport-data ChaCha20-Poly1305 (RFC 8439 with WireGuard's nonce, whitepaper §5.4.6) on the
// packet path, through whichever library is faster for the message size: libsodium for small
// messages, OpenSSL libcrypto's EVP (AVX2/AVX-512 code) from a measured crossover up. The
// handshake keeps crypto/primitives (libsodium).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "crypto/primitives.h"

namespace meshwg::crypto {

// dst must hold src.size() + 16; dst may equal src (in place). No associated data.
void transport_seal(uint8_t* dst, ByteSpan src, uint64_t counter,
                    std::span<const uint8_t, 32> key) noexcept;

// src includes the tag; dst must hold src.size() - 16 and may equal src. Returns false if
// the tag does not verify. On false dst holds garbage (OpenSSL decrypts before it checks the
// tag): the caller must drop the buffer, never deliver it.
[[nodiscard]] bool transport_open(uint8_t* dst, ByteSpan src, uint64_t counter,
                                  std::span<const uint8_t, 32> key) noexcept;

// Times both libraries at a few sizes and sets the crossover: messages of at least the returned
// size use OpenSSL. Takes a few milliseconds; call once at start-up. SIZE_MAX = never OpenSSL.
size_t calibrate_transport_aead() noexcept;
void set_transport_openssl_min(size_t bytes) noexcept;  // for tests and benchmarks
size_t transport_openssl_min() noexcept;

}  // namespace meshwg::crypto
