// Micro-benchmarks for crypto/: ChaCha20-Poly1305 seal through crypto::aead_seal (libsodium)
// side by side with OpenSSL EVP at WireGuard-relevant sizes (keepalive-ish, small, MTU, GSO
// maximum), a full Noise_IKpsk2 handshake round trip (whitepaper §5.4.2-5.4.5), and one X25519.
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <chrono>
#include <cstdlib>
#include <vector>

#include "crypto/noise.h"
#include "crypto/primitives.h"

namespace {

using namespace meshwg::crypto;

const bool kSodiumReady = init();

// libsodium must be initialised before use; a benchmark without it would measure nothing.
bool ready(benchmark::State& state) {
  if (!kSodiumReady) state.SkipWithError("crypto::init() failed");
  return kSodiumReady;
}

void aead_sizes(benchmark::internal::Benchmark* b) {
  for (int n : {64, 512, 1420, 65535}) b->Arg(n);
}

void BM_AeadSealSodium(benchmark::State& state) {
  if (!ready(state)) return;
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> in(n, 0x5a), out(n + kTagSize);
  Key key;
  random_bytes(key.span());
  uint64_t counter = 0;
  for (auto _ : state) {
    aead_seal(out.data(), in, counter++, {}, key.span());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(BM_AeadSealSodium)->Apply(aead_sizes);

// Same operation through OpenSSL's EVP interface; the key schedule is set up once and only
// the nonce changes per packet, as a data path would use it.
void BM_AeadSealOpenSSL(benchmark::State& state) {
  if (!ready(state)) return;
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> in(n, 0x5a), out(n + kTagSize);
  Key key;
  random_bytes(key.span());
  uint8_t nonce[12] = {};
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr ||
      EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), nullptr, key.data(), nonce) != 1) {
    state.SkipWithError("EVP chacha20-poly1305 unavailable");
    EVP_CIPHER_CTX_free(ctx);
    return;
  }
  uint64_t counter = 0;
  for (auto _ : state) {
    for (int i = 0; i < 8; ++i) nonce[4 + i] = static_cast<uint8_t>(counter >> (8 * i));
    ++counter;
    int len = 0, fin = 0;
    const bool ok = EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) == 1 &&
                    EVP_EncryptUpdate(ctx, out.data(), &len, in.data(), static_cast<int>(n)) == 1 &&
                    EVP_EncryptFinal_ex(ctx, out.data() + len, &fin) == 1 &&
                    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, kTagSize, out.data() + n) == 1;
    if (!ok) {
      state.SkipWithError("EVP encryption failed");
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  EVP_CIPHER_CTX_free(ctx);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(BM_AeadSealOpenSSL)->Apply(aead_sizes);

// initiation -> decrypt + consume -> response -> consume -> both derive: 6 X25519 on each
// side plus the precomputed static-static one. Reported as handshakes per second.
void BM_HandshakeRoundTrip(benchmark::State& state) {
  if (!ready(state)) return;
  LocalStatic si, sr;
  std::array<uint8_t, 32> a, b, psk;
  x25519_generate(a);
  x25519_generate(b);
  random_bytes(psk);
  si.set(a);
  sr.set(b);
  Handshake hi, hr;
  if (!hi.set_keys(si, sr.public_key, psk) || !hr.set_keys(sr, si.public_key, psk)) {
    state.SkipWithError("set_keys failed");
    return;
  }
  // Each initiation needs a newer timestamp than the last one the responder accepted.
  auto t = std::chrono::system_clock::time_point{} + std::chrono::seconds(1704067200);
  meshwg::dataplane::MessageInitiation init{};
  meshwg::dataplane::MessageResponse resp{};
  InitiationPartial part;
  SessionKeys ki, kr;
  for (auto _ : state) {
    t += std::chrono::seconds(1);
    const bool ok = hi.create_initiation(init, si, 1, tai64n_from(t)) &&
                    decrypt_initiation(init, sr, part) && hr.consume_initiation(init, part) &&
                    hr.create_response(resp, 2) && hi.consume_response(resp, si) &&
                    hi.derive_session(ki) && hr.derive_session(kr);
    if (!ok) {
      state.SkipWithError("handshake failed");
      break;
    }
    benchmark::DoNotOptimize(ki.send.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_HandshakeRoundTrip);

void BM_X25519(benchmark::State& state) {
  if (!ready(state)) return;
  std::array<uint8_t, 32> priv, peer_priv, pub, out;
  x25519_generate(priv);
  x25519_generate(peer_priv);
  if (!x25519_public(pub, peer_priv)) {
    state.SkipWithError("x25519_public failed");
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(x25519(out, priv, pub));
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_X25519);

}  // namespace

BENCHMARK_MAIN();
