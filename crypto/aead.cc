// Size-class dispatch between libsodium and OpenSSL EVP for transport messages (see aead.h).
// OpenSSL contexts are per thread (EVP contexts are not shareable across threads); setting the
// key on every call costs ~20 ns for ChaCha20, far less than a per-keypair context cache would
// save, and keeps keypairs free of library state.
#include "crypto/aead.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <vector>

namespace meshwg::crypto {

namespace {

// Until calibrated: OpenSSL from 1 KiB, the crossover measured on the development machine.
std::atomic<size_t> g_openssl_min{1024};

void make_nonce(uint8_t nonce[12], uint64_t counter) {
  std::memset(nonce, 0, 4);
  for (int i = 0; i < 8; ++i) nonce[4 + i] = uint8_t(counter >> (8 * i));
}

struct EvpContexts {
  EVP_CIPHER_CTX* enc = nullptr;
  EVP_CIPHER_CTX* dec = nullptr;
  bool ok = false;
  EvpContexts() {
    enc = EVP_CIPHER_CTX_new();
    dec = EVP_CIPHER_CTX_new();
    ok = enc && dec &&
         EVP_EncryptInit_ex(enc, EVP_chacha20_poly1305(), nullptr, nullptr, nullptr) == 1 &&
         EVP_DecryptInit_ex(dec, EVP_chacha20_poly1305(), nullptr, nullptr, nullptr) == 1;
  }
  ~EvpContexts() {
    EVP_CIPHER_CTX_free(enc);  // also wipes the key schedule
    EVP_CIPHER_CTX_free(dec);
  }
};

EvpContexts& contexts() {
  thread_local EvpContexts c;
  return c;
}

bool openssl_seal(uint8_t* dst, ByteSpan src, const uint8_t nonce[12], const uint8_t* key) {
  EvpContexts& c = contexts();
  if (!c.ok || src.size() > size_t(INT_MAX)) return false;
  int len = 0, fin = 0;
  return EVP_EncryptInit_ex(c.enc, nullptr, nullptr, key, nonce) == 1 &&
         EVP_EncryptUpdate(c.enc, dst, &len, src.data(), int(src.size())) == 1 &&
         EVP_EncryptFinal_ex(c.enc, dst + len, &fin) == 1 &&
         EVP_CIPHER_CTX_ctrl(c.enc, EVP_CTRL_AEAD_GET_TAG, int(kTagSize), dst + src.size()) == 1;
}

// Returns 1 verified, 0 tag mismatch, -1 library unavailable.
int openssl_open(uint8_t* dst, ByteSpan src, const uint8_t nonce[12], const uint8_t* key) {
  EvpContexts& c = contexts();
  if (!c.ok || src.size() > size_t(INT_MAX)) return -1;
  const size_t n = src.size() - kTagSize;
  uint8_t tag[kTagSize];
  std::memcpy(tag, src.data() + n, kTagSize);  // in place, dst overwrites nothing past n
  int len = 0, fin = 0;
  if (EVP_DecryptInit_ex(c.dec, nullptr, nullptr, key, nonce) != 1 ||
      EVP_DecryptUpdate(c.dec, dst, &len, src.data(), int(n)) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.dec, EVP_CTRL_AEAD_SET_TAG, int(kTagSize), tag) != 1)
    return -1;
  return EVP_DecryptFinal_ex(c.dec, dst + len, &fin) == 1 ? 1 : 0;
}

}  // namespace

void transport_seal(uint8_t* dst, ByteSpan src, uint64_t counter,
                    std::span<const uint8_t, 32> key) noexcept {
  if (src.size() >= g_openssl_min.load(std::memory_order_relaxed)) {
    uint8_t nonce[12];
    make_nonce(nonce, counter);
    if (openssl_seal(dst, src, nonce, key.data())) return;
  }
  aead_seal(dst, src, counter, {}, key);
}

bool transport_open(uint8_t* dst, ByteSpan src, uint64_t counter,
                    std::span<const uint8_t, 32> key) noexcept {
  if (src.size() < kTagSize) return false;
  if (src.size() - kTagSize >= g_openssl_min.load(std::memory_order_relaxed)) {
    uint8_t nonce[12];
    make_nonce(nonce, counter);
    const int r = openssl_open(dst, src, nonce, key.data());
    if (r >= 0) return r == 1;
  }
  return aead_open(dst, src, counter, {}, key);
}

void set_transport_openssl_min(size_t bytes) noexcept { g_openssl_min = bytes; }
size_t transport_openssl_min() noexcept { return g_openssl_min; }

size_t calibrate_transport_aead() noexcept {
  // Median-free but robust enough: best of three short runs per library and size, so a
  // preempted run on a busy machine does not decide the outcome.
  static constexpr size_t kSizes[] = {128, 256, 512, 768, 1024, 1420, 4096};
  std::vector<uint8_t> buf(4096 + kTagSize, 0x42);
  Key key;
  random_bytes(key.span());
  uint8_t nonce[12] = {};
  auto best_ns = [&](auto&& fn) {
    double best = 1e18;
    for (int round = 0; round < 3; ++round) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 64; ++i) fn();
      const auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count());
    }
    return best;
  };
  size_t chosen = SIZE_MAX;
  for (size_t n : kSizes) {
    const ByteSpan in(buf.data(), n);
    bool ok = true;
    const double ossl = best_ns([&] { ok = openssl_seal(buf.data(), in, nonce, key.data()) && ok; });
    const double sod = best_ns([&] { aead_seal(buf.data(), in, 0, {}, key.span()); });
    if (!ok) break;  // OpenSSL without ChaCha20-Poly1305: libsodium for everything
    if (ossl < sod) {
      chosen = n;
      break;
    }
  }
  g_openssl_min = chosen;
  return chosen;
}

}  // namespace meshwg::crypto
