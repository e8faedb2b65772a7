// A fresh X25519 key pair (a WireGuard static key) for the relay and sealed-channel tests: one
// copy instead of one per test file.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "crypto/primitives.h"
#include "tests/vectors.h"

namespace meshwg::testing {

struct TestKeys {
  crypto::Key priv;
  crypto::PublicKey pub{};
  TestKeys() {
    EXPECT_TRUE(crypto::init());
    crypto::x25519_generate(priv.span());
    EXPECT_TRUE(crypto::x25519_public(pub, priv.span()));
  }
};

// The low-order public keys of the kernel's WireGuard selftests (tests/vectors/x25519.json):
// X25519 with any of them gives the all-zero point.
inline std::vector<crypto::PublicKey> low_order_public_keys() {
  std::vector<crypto::PublicKey> out;
  const auto v = load_vectors("x25519.json");  // named: the loop below must not outlive it
  for (const auto& k : v["wireguard_low_order_public_keys"]["keys"])
    out.push_back(hex_array32(k["hex"].get<std::string>()));
  EXPECT_EQ(out.size(), 7u);
  return out;
}

}  // namespace meshwg::testing
