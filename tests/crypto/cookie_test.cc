// Tests for crypto/cookie: mac1 of the messages in wireguard_handshake.json, the vector's
// cookie reply consumed by the initiator (and the mac2 it then produces), wireguard-go's
// cookie_test.go flow (add_macs, check, create_reply, consume_reply, mac2 per source, bit
// flips), cookie and secret expiry after 120 s on a moved clock.
#include "tests/vectors.h"
#include "crypto/cookie.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace meshwg::crypto {
namespace {

using dataplane::MessageCookieReply;
using Bytes = std::vector<uint8_t>;
using Result = CookieChecker::Result;
using nlohmann::json;
using namespace std::chrono_literals;

const bool kSodiumReady = init();
const Instant kT0 = Instant{} + std::chrono::hours(1000);

json load(const char* name) { return testing::load_vectors(name); }

Bytes hex(const std::string& s) { return testing::hex_bytes(s); }

PublicKey pub32(const std::string& s) { return testing::hex_array32(s); }

PublicKey random_public() {
  std::array<uint8_t, 32> priv;
  PublicKey pub;
  x25519_generate(priv);
  EXPECT_TRUE(x25519_public(pub, priv));
  return pub;
}

MessageCookieReply reply_from(const Bytes& b) {
  MessageCookieReply r;
  EXPECT_EQ(b.size(), sizeof(r));
  std::memcpy(&r, b.data(), std::min(b.size(), sizeof(r)));
  return r;
}

Bytes mac2_of(const Bytes& msg) { return Bytes(msg.end() - 16, msg.end()); }

class CookieVector : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(kSodiumReady);
    v_ = load("wireguard_handshake.json");
    ASSERT_TRUE(v_.contains("inputs"));
  }
  json v_;
};

// The responder's checker accepts the vector's initiation (mac1 keyed by its public key) and
// the initiator's checker the response; add_macs reproduces both mac fields exactly.
TEST_F(CookieVector, Mac1OfHandshakeMessages) {
  const PublicKey pub_i = pub32(v_["inputs"]["initiator_static_public"]);
  const PublicKey pub_r = pub32(v_["inputs"]["responder_static_public"]);
  const Bytes src = {192, 0, 2, 10, 0xca, 0x6c};
  for (const char* variant : {"with_psk", "no_psk"}) {
    const Bytes init = hex(v_[variant]["handshake_initiation"]);
    const Bytes resp = hex(v_[variant]["handshake_response"]);
    ASSERT_EQ(init.size(), dataplane::kInitiationSize);
    ASSERT_EQ(resp.size(), dataplane::kResponseSize);

    CookieChecker at_responder, at_initiator;
    at_responder.init(pub_r);
    at_initiator.init(pub_i);
    EXPECT_EQ(at_responder.check(init, src, false, kT0), Result::kValidMac1) << variant;
    EXPECT_EQ(at_initiator.check(resp, src, false, kT0), Result::kValidMac1) << variant;
    // Keyed by the wrong public key, mac1 does not verify.
    EXPECT_EQ(at_initiator.check(init, src, false, kT0), Result::kInvalidMac1) << variant;
    EXPECT_EQ(at_responder.check(resp, src, false, kT0), Result::kInvalidMac1) << variant;

    Bytes redo = init;
    std::fill(redo.end() - 32, redo.end(), 0xEE);
    CookieGenerator g;
    g.init(pub_r);
    g.add_macs(redo, kT0);
    EXPECT_EQ(redo, init) << variant;
  }
}

// The vector's cookie reply answers the initiation above: the initiator decrypts it (AD =
// the initiation's mac1) and its next mac2 is the vector's MAC(cookie, msg[0:132]).
TEST_F(CookieVector, ConsumeVectorCookieReply) {
  const json& c = v_["with_psk"]["cookie_reply"];
  const PublicKey pub_r = pub32(v_["inputs"]["responder_static_public"]);
  Bytes init = hex(v_["with_psk"]["handshake_initiation"]);
  const MessageCookieReply reply = reply_from(hex(c["cookie_reply_message"]));

  CookieGenerator g;
  g.init(pub_r);
  EXPECT_FALSE(g.consume_reply(reply, kT0));  // nothing sent yet: nothing to answer
  g.add_macs(init, kT0);
  ASSERT_TRUE(g.consume_reply(reply, kT0));
  g.add_macs(init, kT0 + 1s);
  EXPECT_EQ(init, hex(c["initiation_with_mac2"]));

  // A reply for another mac1 (here: the one we just sent) does not verify, and a tampered
  // reply neither.
  CookieGenerator g2;
  g2.init(pub_r);
  Bytes other = hex(v_["with_psk"]["handshake_initiation"]);
  other[8] ^= 1;  // another message, hence another mac1
  g2.add_macs(other, kT0);
  EXPECT_FALSE(g2.consume_reply(reply, kT0));
  g2.add_macs(init, kT0);
  MessageCookieReply bad = reply;
  bad.encrypted_cookie[0] ^= 1;
  EXPECT_FALSE(g2.consume_reply(bad, kT0));
  bad = reply;
  bad.nonce[23] ^= 1;
  EXPECT_FALSE(g2.consume_reply(bad, kT0));
  EXPECT_TRUE(g2.consume_reply(reply, kT0));
}

// The checker's reply is sealed under HASH("cookie--" || its public key) with the answered
// message's mac1 as AD, and carries the sender's index: decrypt it with the vector's key.
TEST_F(CookieVector, CreateReplyUsesCookieKeyAndMac1) {
  const json& c = v_["with_psk"]["cookie_reply"];
  const PublicKey pub_r = pub32(v_["inputs"]["responder_static_public"]);
  const Bytes init = hex(v_["with_psk"]["handshake_initiation"]);
  const Bytes src = hex(c["cookie_mac_input_kernel_format"]);
  CookieChecker checker;
  checker.init(pub_r);
  MessageCookieReply reply;
  checker.create_reply(reply, init, 0x44332211, src, kT0);
  const auto* raw = reinterpret_cast<const uint8_t*>(&reply);
  EXPECT_EQ(dataplane::load_le32(raw), 3u);
  EXPECT_EQ(Bytes(raw + 4, raw + 8), (Bytes{0x11, 0x22, 0x33, 0x44}));

  const Bytes key = hex(c["cookie_encryption_key=HASH('cookie--'||responder_static_public)"]);
  const Bytes mac1(init.end() - 32, init.end() - 16);
  Bytes cookie(16);
  ASSERT_TRUE(xaead_open(cookie.data(), reply.encrypted_cookie,
                         std::span<const uint8_t, 24>(reply.nonce), mac1,
                         std::span<const uint8_t, 32>(key.data(), 32)));
  // With that cookie as mac2 key, the checker accepts the message from that source.
  Bytes with_mac2 = init;
  blake2s(std::span<uint8_t>(with_mac2).last(16), std::span<const uint8_t>(with_mac2).first(132),
          cookie);
  EXPECT_EQ(checker.check(with_mac2, src, true, kT0 + 1s), Result::kValidMac2);
}

// ---- wireguard-go device/cookie_test.go ----

TEST(Cookie, WireguardGoFlow) {
  ASSERT_TRUE(kSodiumReady);
  const PublicKey pub = random_public();
  CookieChecker checker;
  CookieGenerator generator;
  checker.init(pub);
  generator.init(pub);
  const Bytes src = {192, 168, 13, 37, 10, 10};
  const Bytes src_other1 = {192, 168, 13, 38, 10, 10};
  const Bytes src_other2 = {192, 168, 13, 37, 10, 11};

  for (size_t len : {size_t{128}, size_t{64}, size_t{32}, dataplane::kInitiationSize, dataplane::kResponseSize}) {
    Bytes msg(len);
    for (size_t i = 0; i < len; ++i) msg[i] = static_cast<uint8_t>(i * 7 + 1);
    Instant now = kT0;
    CookieGenerator gen;
    gen.init(pub);

    // Before any cookie: mac1 valid, mac2 zero and invalid.
    gen.add_macs(msg, now);
    EXPECT_EQ(checker.check(msg, src, false, now), Result::kValidMac1) << len;
    EXPECT_EQ(checker.check(msg, src, true, now), Result::kValidMac1) << len;
    EXPECT_EQ(mac2_of(msg), Bytes(16, 0)) << len;

    // Under load the checker answers with a cookie; the sender keeps it.
    MessageCookieReply reply;
    checker.create_reply(reply, msg, 1377, src, now);
    ASSERT_TRUE(gen.consume_reply(reply, now)) << len;
    EXPECT_FALSE(gen.consume_reply(reply, now)) << "a reply is used once, len " << len;

    now += 1s;
    gen.add_macs(msg, now);
    EXPECT_NE(mac2_of(msg), Bytes(16, 0)) << len;
    EXPECT_EQ(checker.check(msg, src, true, now), Result::kValidMac2) << len;
    // The cookie is bound to the source address and port.
    EXPECT_EQ(checker.check(msg, src_other1, true, now), Result::kValidMac1) << len;
    EXPECT_EQ(checker.check(msg, src_other2, true, now), Result::kValidMac1) << len;

    // One flipped bit breaks both macs.
    msg[5] ^= 0x20;
    EXPECT_EQ(checker.check(msg, src, true, now), Result::kInvalidMac1) << len;
    msg[5] ^= 0x20;
    EXPECT_EQ(checker.check(msg, src, true, now), Result::kValidMac2) << len;
    // A flip inside mac2 breaks only mac2; inside mac1, mac1.
    msg[len - 1] ^= 1;
    EXPECT_EQ(checker.check(msg, src, true, now), Result::kValidMac1) << len;
    msg[len - 1] ^= 1;
    msg[len - 17] ^= 1;
    EXPECT_EQ(checker.check(msg, src, true, now), Result::kInvalidMac1) << len;
  }
}

TEST(Cookie, TooShortMessagesAreInvalid) {
  const PublicKey pub = random_public();
  CookieChecker checker;
  checker.init(pub);
  CookieGenerator gen;
  gen.init(pub);
  Bytes tiny(31, 0x42);
  gen.add_macs(tiny, kT0);  // nothing to fill: must not write out of bounds
  EXPECT_EQ(tiny, Bytes(31, 0x42));
  EXPECT_EQ(checker.check(tiny, Bytes{1, 2}, true, kT0), Result::kInvalidMac1);
  EXPECT_EQ(checker.check({}, Bytes{1, 2}, false, kT0), Result::kInvalidMac1);
}

// The sender uses a cookie for 120 s, then sends zero mac2 until it gets a new one.
TEST(Cookie, GeneratorCookieExpiresAfter120s) {
  const PublicKey pub = random_public();
  CookieChecker checker;
  checker.init(pub);
  CookieGenerator gen;
  gen.init(pub);
  const Bytes src = {10, 0, 0, 1, 0, 80};
  Bytes msg(dataplane::kInitiationSize, 0x33);
  gen.add_macs(msg, kT0);
  MessageCookieReply reply;
  checker.create_reply(reply, msg, 1, src, kT0);
  ASSERT_TRUE(gen.consume_reply(reply, kT0));

  gen.add_macs(msg, kT0 + 119s);
  EXPECT_NE(mac2_of(msg), Bytes(16, 0));
  gen.add_macs(msg, kT0 + 120s);
  EXPECT_EQ(mac2_of(msg), Bytes(16, 0));
  gen.add_macs(msg, kT0 + 500s);
  EXPECT_EQ(mac2_of(msg), Bytes(16, 0));
}

// The checker rotates its secret after 120 s: a cookie handed out before no longer verifies.
TEST(Cookie, CheckerSecretRotatesAfter120s) {
  const PublicKey pub = random_public();
  CookieChecker checker;
  checker.init(pub);
  const Bytes src = {10, 0, 0, 1, 0, 80};
  Bytes msg(dataplane::kInitiationSize, 0x44);
  CookieGenerator gen;
  gen.init(pub);
  gen.add_macs(msg, kT0);
  MessageCookieReply reply;
  checker.create_reply(reply, msg, 1, src, kT0);
  ASSERT_TRUE(gen.consume_reply(reply, kT0));

  gen.add_macs(msg, kT0 + 100s);
  EXPECT_EQ(checker.check(msg, src, true, kT0 + 100s), Result::kValidMac2);
  // Same message, same cookie, but the checker's secret has been replaced since.
  EXPECT_EQ(checker.check(msg, src, true, kT0 + 121s), Result::kValidMac1);

  // A new round trip works again with the new secret.
  checker.create_reply(reply, msg, 1, src, kT0 + 122s);
  ASSERT_TRUE(gen.consume_reply(reply, kT0 + 122s));
  gen.add_macs(msg, kT0 + 123s);
  EXPECT_EQ(checker.check(msg, src, true, kT0 + 123s), Result::kValidMac2);
}

// Each reply has a fresh random nonce, so two replies to the same message differ.
TEST(Cookie, RepliesUseFreshNonces) {
  const PublicKey pub = random_public();
  CookieChecker checker;
  checker.init(pub);
  const Bytes msg(dataplane::kResponseSize, 0x55);
  const Bytes src = {10, 0, 0, 1, 0, 80};
  MessageCookieReply a, b;
  checker.create_reply(a, msg, 7, src, kT0);
  checker.create_reply(b, msg, 7, src, kT0);
  EXPECT_NE(std::memcmp(a.nonce, b.nonce, sizeof(a.nonce)), 0);
  EXPECT_NE(std::memcmp(a.encrypted_cookie, b.encrypted_cookie, sizeof(a.encrypted_cookie)), 0);
}

}  // namespace
}  // namespace meshwg::crypto
