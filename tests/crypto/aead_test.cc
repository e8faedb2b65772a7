// The transport AEAD dispatch must be indistinguishable from the reference seal/open
// (crypto::aead_seal, itself checked against RFC 8439 vectors) whichever library serves a size.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <random>
#include <vector>

#include "crypto/aead.h"

namespace meshwg::crypto {
namespace {

class TransportAead : public ::testing::TestWithParam<size_t> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(init());
    saved_ = transport_openssl_min();
    set_transport_openssl_min(GetParam());
  }
  void TearDown() override { set_transport_openssl_min(saved_); }
  size_t saved_ = 0;
};

TEST_P(TransportAead, MatchesReferenceAndRoundTrips) {
  std::mt19937 rng(1234);
  Key key;
  random_bytes(key.span());
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 1500; n += (n < 40 ? 1 : 37)) sizes.push_back(n);
  sizes.push_back(4096);
  sizes.push_back(65535);
  for (size_t n : sizes) {
    std::vector<uint8_t> plain(n);
    for (auto& b : plain) b = uint8_t(rng());
    const uint64_t counter = (uint64_t(rng()) << 32) | rng();
    std::vector<uint8_t> ref(n + kTagSize), got(n + kTagSize);
    aead_seal(ref.data(), plain, counter, {}, key.span());
    transport_seal(got.data(), plain, counter, key.span());
    ASSERT_EQ(got, ref) << "size " << n;
    // In place, as the data plane does.
    std::vector<uint8_t> inplace(plain);
    inplace.resize(n + kTagSize);
    transport_seal(inplace.data(), {inplace.data(), n}, counter, key.span());
    ASSERT_EQ(inplace, ref) << "in place, size " << n;
    ASSERT_TRUE(transport_open(inplace.data(), inplace, counter, key.span()));
    ASSERT_TRUE(std::equal(plain.begin(), plain.end(), inplace.begin())) << "size " << n;
    // Any flipped bit, a wrong counter or a wrong key fails.
    std::vector<uint8_t> bad(ref);
    bad[rng() % bad.size()] ^= uint8_t(1u << (rng() % 8));
    std::vector<uint8_t> out(n + 1);
    EXPECT_FALSE(transport_open(out.data(), bad, counter, key.span())) << "size " << n;
    EXPECT_FALSE(transport_open(out.data(), ref, counter + 1, key.span())) << "size " << n;
    Key other;
    random_bytes(other.span());
    EXPECT_FALSE(transport_open(out.data(), ref, counter, other.span())) << "size " << n;
  }
}

TEST_P(TransportAead, ShortInputRejected) {
  Key key;
  uint8_t buf[15] = {};
  EXPECT_FALSE(transport_open(buf, {buf, sizeof(buf)}, 0, key.span()));
}

// 0: OpenSSL for every size; 1024: split by size; SIZE_MAX: libsodium only.
INSTANTIATE_TEST_SUITE_P(Backends, TransportAead, ::testing::Values(size_t{0}, size_t{1024}, SIZE_MAX));

TEST(TransportAeadCalibration, PicksAThreshold) {
  ASSERT_TRUE(init());
  const size_t t = calibrate_transport_aead();
  EXPECT_EQ(t, transport_openssl_min());
  const std::vector<size_t> allowed = {128, 256, 512, 768, 1024, 1420, 4096, SIZE_MAX};
  EXPECT_NE(std::find(allowed.begin(), allowed.end(), t), allowed.end()) << t;
  set_transport_openssl_min(1024);
}

}  // namespace
}  // namespace meshwg::crypto
