// Tests for crypto/primitives: BLAKE2s (RFC 7693 and the BLAKE2 KAT), HMAC-BLAKE2s and the
// WireGuard KDF (wireguard-go and kernel vectors), ChaCha20-Poly1305 (kernel selftest, with
// the WireGuard nonce), XChaCha20-Poly1305 (draft A.3.1, kernel, wireguard-go) and X25519
// (RFC 7748 §5.2/§6.1, kernel selftest incl. low-order points). Vectors: tests/vectors/*.json.
#include "tests/vectors.h"
#include "crypto/primitives.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace meshwg::crypto {
namespace {

using Bytes = std::vector<uint8_t>;
using nlohmann::json;

const bool kSodiumReady = init();

json load(const char* name) { return testing::load_vectors(name); }

Bytes hex(const std::string& s) { return testing::hex_bytes(s); }

std::array<uint8_t, 32> arr32(const std::string& s) { return testing::hex_array32(s); }

Bytes hash(ByteSpan in, ByteSpan key = {}, size_t outlen = 32) {
  Bytes out(outlen);
  blake2s(out, in, key);
  return out;
}

Bytes counting(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i);
  return b;
}

TEST(Init, SodiumReady) { ASSERT_TRUE(kSodiumReady); }

// ---- BLAKE2s ----

TEST(Blake2s, Rfc7693Abc) {
  const json v = load("blake2s.json")["rfc7693_abc"];
  EXPECT_EQ(hash(hex(v["in"])), hex(v["out"]));
}

// RFC 7693 Appendix E: hashes of many output lengths and key lengths folded into one digest.
TEST(Blake2s, Rfc7693SelfTestGrandHash) {
  const json v = load("blake2s.json")["rfc7693_selftest"];
  auto seq = [](size_t len, uint32_t seed) {
    Bytes out(len);
    uint32_t a = 0xDEAD4BAD * seed, b = 1;
    for (size_t i = 0; i < len; ++i) {
      const uint32_t t = a + b;
      a = b;
      b = t;
      out[i] = static_cast<uint8_t>(t >> 24);
    }
    return out;
  };
  Blake2s grand(32);
  for (size_t outlen : {16, 20, 28, 32}) {
    for (size_t inlen : {0, 3, 64, 65, 255, 1024}) {
      const Bytes in = seq(inlen, static_cast<uint32_t>(inlen));
      grand.update(hash(in, {}, outlen));
      const Bytes key = seq(outlen, static_cast<uint32_t>(outlen));
      grand.update(hash(in, key, outlen));
    }
  }
  Bytes out(32);
  grand.final(out);
  EXPECT_EQ(out, hex(v["grand_hash"]));
}

TEST(Blake2s, KatUnkeyedAll) {
  const json v = load("blake2s_kat_full.json");
  ASSERT_EQ(v["unkeyed"].size(), 256u);
  for (const auto& e : v["unkeyed"]) {
    const Bytes in = hex(e["in"]);
    const Bytes expect = hex(e["out"]);
    EXPECT_EQ(hash(in), expect) << "len " << in.size();
    Bytes inc(32);
    Blake2s(32).update(in).final(inc);
    EXPECT_EQ(inc, expect) << "incremental, len " << in.size();
  }
}

TEST(Blake2s, KatKeyedAll) {
  const json v = load("blake2s_kat_full.json");
  const Bytes key = hex(v["keyed_key"]);
  ASSERT_EQ(v["keyed"].size(), 256u);
  for (const auto& e : v["keyed"]) {
    const Bytes in = hex(e["in"]);
    const Bytes expect = hex(e["out"]);
    EXPECT_EQ(hash(in, key), expect) << "len " << in.size();
    Bytes inc(32);
    Blake2s(32, key).update(in).final(inc);
    EXPECT_EQ(inc, expect) << "incremental, len " << in.size();
  }
}

// Property: feeding the input in pieces (including empty pieces and pieces that end exactly
// on the 64-byte block boundary) gives the one-shot digest.
TEST(Blake2s, SplitInputEqualsWholeInput) {
  const Bytes key = counting(32);
  for (size_t len : {0, 1, 63, 64, 65, 127, 128, 129, 200, 300}) {
    const Bytes in = counting(len);
    for (ByteSpan k : {ByteSpan{}, ByteSpan(key)}) {
      const Bytes whole = hash(in, k);
      for (size_t a = 0; a <= len; a += (len > 70 ? 7 : 1)) {
        for (size_t b = a; b <= len; b += 13) {
          Bytes out(32);
          Blake2s h(32, k);
          ByteSpan s(in);
          h.update(s.first(a)).update(s.subspan(a, b - a)).update({}).update(s.subspan(b));
          h.final(out);
          ASSERT_EQ(out, whole) << "len " << len << " split " << a << "," << b;
        }
      }
    }
  }
}

// ---- HMAC-BLAKE2s and the KDF ----

TEST(HmacBlake2s, KernelSelftest) {
  const json v = load("hmac_blake2s_kdf.json")["kernel_blake2s_hmac_testvecs"];
  const Bytes fib = hex(v["fib_key"]);
  const Bytes buf = counting(256);
  std::array<uint8_t, 32> out;
  hmac_blake2s(out, fib, buf);
  EXPECT_EQ(Bytes(out.begin(), out.end()), hex(v["vectors"][0]["out"]));
  hmac_blake2s(out, buf, fib);  // key longer than the block: hashed first
  EXPECT_EQ(Bytes(out.begin(), out.end()), hex(v["vectors"][1]["out"]));
}

TEST(HmacBlake2s, GeneratedBoundaryCases) {
  const json v = load("hmac_blake2s_kdf.json")["generated_boundary_hmac"]["vectors"];
  ASSERT_EQ(v.size(), 28u);
  for (const auto& e : v) {
    const Bytes key = hex(e["key"]);
    const Bytes msg = hex(e["msg"]);
    std::array<uint8_t, 32> out;
    hmac_blake2s(out, key, msg);
    EXPECT_EQ(Bytes(out.begin(), out.end()), hex(e["hmac"]))
        << "key " << key.size() << " msg " << msg.size();
  }
}

TEST(Kdf, WireguardGoVectors) {
  const json v = load("hmac_blake2s_kdf.json")["wireguard_go_kdf_test"]["vectors"];
  ASSERT_EQ(v.size(), 3u);
  for (const auto& e : v) {
    const Bytes key = hex(e["key"]);
    const Bytes in = hex(e["input"]);
    const Bytes t0 = hex(e["t0"]), t1 = hex(e["t1"]), t2 = hex(e["t2"]);
    Bytes a(32), b(32), c(32);
    kdf(key, in, a.data(), b.data(), c.data());
    EXPECT_EQ(a, t0);
    EXPECT_EQ(b, t1);
    EXPECT_EQ(c, t2);
    // KDF1 and KDF2 are prefixes of KDF3, and unwanted outputs may be null.
    Bytes x(32), y(32);
    kdf(key, in, x.data());
    EXPECT_EQ(x, t0);
    kdf(key, in, nullptr, y.data());
    EXPECT_EQ(y, t1);
    kdf(key, in, nullptr, nullptr, x.data());
    EXPECT_EQ(x, t2);
  }
}

TEST(Kdf, NoiseConstants) {
  const json v = load("hmac_blake2s_kdf.json")["noise_wireguard_constants"];
  const std::string construction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
  const std::string identifier = "WireGuard v1 zx2c4 Jason@zx2c4.com";
  const Bytes c0 = hash({reinterpret_cast<const uint8_t*>(construction.data()), construction.size()});
  EXPECT_EQ(c0, hex(v["C0=BLAKE2s('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s')"]));
  Bytes h0(32);
  Blake2s(32)
      .update(c0)
      .update({reinterpret_cast<const uint8_t*>(identifier.data()), identifier.size()})
      .final(h0);
  EXPECT_EQ(h0, hex(v["H0=BLAKE2s(C0||'WireGuard v1 zx2c4 Jason@zx2c4.com')"]));
}

// ---- ChaCha20-Poly1305 with the WireGuard nonce ----

// The kernel stores 8-byte nonces used as a little-endian counter: exactly WireGuard's
// nonce (4 zero bytes || LE64). 12-byte nonces with another prefix cannot be expressed.
bool wireguard_counter(const json& e, uint64_t& counter) {
  const Bytes n = hex(e["ietf_nonce"]);
  if (n.size() != 12 || n[0] || n[1] || n[2] || n[3]) return false;
  counter = 0;
  for (int i = 0; i < 8; ++i) counter |= uint64_t{n[4 + i]} << (8 * i);
  return true;
}

TEST(Aead, KernelEncryptVectors) {
  const json v = load("aead_chacha20poly1305.json")["kernel_selftest"]["enc"];
  size_t used = 0;
  for (const auto& e : v) {
    uint64_t counter;
    if (!wireguard_counter(e, counter)) continue;
    ++used;
    const Bytes key = hex(e["key"]), ad = hex(e["aad"]), in = hex(e["input"]);
    const Bytes expect = hex(e["output"]);
    const auto k = std::span<const uint8_t, 32>(key.data(), 32);
    Bytes out(in.size() + kTagSize);
    aead_seal(out.data(), in, counter, ad, k);
    EXPECT_EQ(out, expect) << "vector " << used;
    // In place, as the data path does it.
    Bytes inplace = in;
    inplace.resize(in.size() + kTagSize);
    aead_seal(inplace.data(), ByteSpan(inplace).first(in.size()), counter, ad, k);
    EXPECT_EQ(inplace, expect) << "in place, vector " << used;
    Bytes back(in.size());
    EXPECT_TRUE(aead_open(back.data(), expect, counter, ad, k)) << "vector " << used;
    EXPECT_EQ(back, in);
  }
  EXPECT_EQ(used, 69u);  // every 8-byte-nonce vector of the kernel table
}

TEST(Aead, KernelDecryptVectors) {
  const json v = load("aead_chacha20poly1305.json")["kernel_selftest"]["dec"];
  size_t used = 0, failures = 0;
  for (const auto& e : v) {
    uint64_t counter;
    if (!wireguard_counter(e, counter)) continue;
    ++used;
    const Bytes key = hex(e["key"]), ad = hex(e["aad"]), in = hex(e["input"]);
    const auto k = std::span<const uint8_t, 32>(key.data(), 32);
    Bytes out(in.size() - kTagSize);
    const bool ok = aead_open(out.data(), in, counter, ad, k);
    if (e["expect_failure"].get<bool>()) {
      ++failures;
      EXPECT_FALSE(ok);
    } else {
      EXPECT_TRUE(ok);
      EXPECT_EQ(out, hex(e["output"]));
    }
  }
  EXPECT_EQ(used, 13u);
  EXPECT_EQ(failures, 1u);
}

// A forged message must fail and release no plaintext: libsodium authenticates before it
// decrypts and zero-fills the output on failure, so the output never holds plaintext.
TEST(Aead, TamperingFailsAndReleasesNothing) {
  std::array<uint8_t, 32> key;
  random_bytes(key);
  const Bytes ad = {1, 2, 3};
  const Bytes msg = counting(100);
  Bytes sealed(msg.size() + kTagSize);
  aead_seal(sealed.data(), msg, 7, ad, key);

  for (size_t pos : {size_t{0}, size_t{50}, msg.size(), sealed.size() - 1}) {
    Bytes bad = sealed;
    bad[pos] ^= 0x01;
    Bytes out(msg.size(), 0xAA);
    EXPECT_FALSE(aead_open(out.data(), bad, 7, ad, key)) << "flip at " << pos;
    EXPECT_TRUE(is_zero_ct(out)) << "output after failed open, flip at " << pos;
  }
  Bytes out(msg.size(), 0xAA);
  EXPECT_FALSE(aead_open(out.data(), sealed, 8, ad, key));  // wrong counter
  EXPECT_FALSE(aead_open(out.data(), sealed, 7, Bytes{1, 2}, key));  // wrong AD
  key[0] ^= 1;
  EXPECT_FALSE(aead_open(out.data(), sealed, 7, ad, key));  // wrong key
  EXPECT_TRUE(is_zero_ct(out));
  key[0] ^= 1;
  EXPECT_FALSE(aead_open(out.data(), ByteSpan(sealed).first(kTagSize - 1), 7, ad, key));
  EXPECT_TRUE(aead_open(out.data(), sealed, 7, ad, key));
  EXPECT_EQ(out, msg);

  // Empty plaintext (keepalives, the handshake's encrypted_nothing): only a tag.
  std::array<uint8_t, kTagSize> tag;
  aead_seal(tag.data(), {}, 0, {}, key);
  EXPECT_TRUE(aead_open(nullptr, tag, 0, {}, key));
  tag[3] ^= 0x80;
  EXPECT_FALSE(aead_open(nullptr, tag, 0, {}, key));
}

// ---- XChaCha20-Poly1305 ----

void check_xaead(const Bytes& key, const Bytes& nonce, const Bytes& ad, const Bytes& pt,
                 const Bytes& sealed, const char* what) {
  ASSERT_EQ(key.size(), 32u);
  ASSERT_EQ(nonce.size(), 24u);
  const auto k = std::span<const uint8_t, 32>(key.data(), 32);
  const auto n = std::span<const uint8_t, 24>(nonce.data(), 24);
  Bytes out(pt.size() + kTagSize);
  xaead_seal(out.data(), pt, n, ad, k);
  EXPECT_EQ(out, sealed) << what;
  Bytes back(pt.size());
  EXPECT_TRUE(xaead_open(back.data(), sealed, n, ad, k)) << what;
  EXPECT_EQ(back, pt) << what;
  Bytes bad = sealed;
  bad.back() ^= 0x40;
  EXPECT_FALSE(xaead_open(back.data(), bad, n, ad, k)) << what;
}

TEST(Xaead, DraftA31) {
  const json v = load("aead_chacha20poly1305.json")["xchacha_draft_A_3_1_aead"];
  Bytes sealed = hex(v["ciphertext"]);
  const Bytes tag = hex(v["tag"]);
  sealed.insert(sealed.end(), tag.begin(), tag.end());
  check_xaead(hex(v["key"]), hex(v["nonce24"]), hex(v["aad"]), hex(v["plaintext"]), sealed,
              "draft A.3.1");
}

TEST(Xaead, KernelVectors) {
  const json v = load("aead_chacha20poly1305.json")["kernel_selftest"];
  for (const auto& e : v["xchacha_enc"])
    check_xaead(hex(e["key"]), hex(e["nonce24"]), hex(e["aad"]), hex(e["input"]),
                hex(e["output"]), "kernel enc");
  for (const auto& e : v["xchacha_dec"]) {
    ASSERT_FALSE(e["expect_failure"].get<bool>());
    check_xaead(hex(e["key"]), hex(e["nonce24"]), hex(e["aad"]), hex(e["output"]),
                hex(e["input"]), "kernel dec");
  }
}

TEST(Xaead, WireguardGoHistoricalVectors) {
  const json v = load("aead_chacha20poly1305.json")["wireguard_go_historical_xchacha"]["vectors"];
  ASSERT_EQ(v.size(), 3u);
  for (const auto& e : v)
    check_xaead(hex(e["key"]), hex(e["nonce24"]), {}, hex(e["plaintext"]),
                hex(e["ciphertext_and_tag"]), "wireguard-go");
}

// ---- X25519 ----

TEST(X25519, Rfc7748Section5_2) {
  const json v = load("x25519.json")["rfc7748_5_2"];
  for (const auto& e : v["vectors"]) {
    std::array<uint8_t, 32> out;
    ASSERT_TRUE(x25519(out, arr32(e["scalar"]), arr32(e["u"])));
    EXPECT_EQ(out, arr32(e["output"]));
  }
}

TEST(X25519, Rfc7748Iterated) {
  const json v = load("x25519.json")["rfc7748_5_2"]["iterated"];
  std::array<uint8_t, 32> k{9}, u{9}, next;
  // 1,000,000 iterations take about a minute; run them only when asked.
  const bool slow = std::getenv("MESHWG_SLOW_TESTS") != nullptr;
  const int last = slow ? 1000000 : 1000;
  for (int i = 1; i <= last; ++i) {
    ASSERT_TRUE(x25519(next, k, u));
    u = k;
    k = next;
    if (i == 1) {
      EXPECT_EQ(k, arr32(v["after_1"]));
    } else if (i == 1000) {
      EXPECT_EQ(k, arr32(v["after_1000"]));
    } else if (i == 1000000) {
      EXPECT_EQ(k, arr32(v["after_1000000"]));
    }
  }
}

TEST(X25519, Rfc7748Section6_1) {
  const json v = load("x25519.json")["rfc7748_6_1"];
  std::array<uint8_t, 32> pub, shared;
  ASSERT_TRUE(x25519_public(pub, arr32(v["alice_private"])));
  EXPECT_EQ(pub, arr32(v["alice_public"]));
  ASSERT_TRUE(x25519_public(pub, arr32(v["bob_private"])));
  EXPECT_EQ(pub, arr32(v["bob_public"]));
  ASSERT_TRUE(x25519(shared, arr32(v["alice_private"]), arr32(v["bob_public"])));
  EXPECT_EQ(shared, arr32(v["shared"]));
  ASSERT_TRUE(x25519(shared, arr32(v["bob_private"]), arr32(v["alice_public"])));
  EXPECT_EQ(shared, arr32(v["shared"]));
}

// All 81 kernel vectors; the 16 whose result is all zeros must be reported as failures.
TEST(X25519, KernelSelftest) {
  const json v = load("x25519.json")["kernel_selftest"]["vectors"];
  ASSERT_EQ(v.size(), 81u);
  size_t invalid = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const auto& e = v[i];
    std::array<uint8_t, 32> out;
    out.fill(0x55);
    const bool ok = x25519(out, arr32(e["private"]), arr32(e["public"]));
    EXPECT_EQ(ok, e["valid"].get<bool>()) << "vector " << i;
    EXPECT_EQ(out, arr32(e["shared"])) << "vector " << i;
    if (!e["valid"].get<bool>()) {
      ++invalid;
      EXPECT_TRUE(is_zero_ct(out));
    }
  }
  EXPECT_EQ(invalid, 16u);
}

TEST(X25519, LowOrderPublicKeysGiveNoSecret) {
  const json v = load("x25519.json")["wireguard_low_order_public_keys"]["keys"];
  ASSERT_EQ(v.size(), 7u);
  for (int trial = 0; trial < 4; ++trial) {
    std::array<uint8_t, 32> priv, out;
    x25519_generate(priv);
    for (const auto& e : v) {
      EXPECT_FALSE(x25519(out, priv, arr32(e["hex"]))) << e["hex"];
      EXPECT_TRUE(is_zero_ct(out));
    }
  }
}

TEST(X25519, GeneratedKeysAgreeAndAreClamped) {
  std::array<uint8_t, 32> a, b, pa, pb, s1, s2;
  x25519_generate(a);
  x25519_generate(b);
  EXPECT_EQ(a[0] & 7, 0);
  EXPECT_EQ(a[31] & 0xC0, 0x40);
  ASSERT_TRUE(x25519_public(pa, a));
  ASSERT_TRUE(x25519_public(pb, b));
  ASSERT_TRUE(x25519(s1, a, pb));
  ASSERT_TRUE(x25519(s2, b, pa));
  EXPECT_EQ(s1, s2);
}

// ---- helpers ----

TEST(Helpers, ConstantTimeCompareAndZero) {
  const Bytes a = {1, 2, 3}, b = {1, 2, 4}, z = {0, 0, 0};
  EXPECT_TRUE(equal_ct(a, a));
  EXPECT_FALSE(equal_ct(a, b));
  EXPECT_FALSE(equal_ct(a, ByteSpan(a).first(2)));
  EXPECT_TRUE(is_zero_ct(z));
  EXPECT_FALSE(is_zero_ct(a));
  Key k;
  EXPECT_TRUE(k.is_zero());
  k.b[31] = 1;
  EXPECT_FALSE(k.is_zero());
  k.clear();
  EXPECT_TRUE(k.is_zero());
}

}  // namespace
}  // namespace meshwg::crypto
