// Tests for crypto/noise: byte-for-byte reproduction of wireguard_handshake.json (with and
// without PSK: messages, the observable trace values, transport keys and transport messages)
// and of a third-party initiation KAT; random-key round trips; replay, wrong-key, bit-flip,
// low-order-key and state-machine failures, each of which must leave the handshake unchanged.
#include "tests/vectors.h"
#include "crypto/noise.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "crypto/cookie.h"

namespace meshwg::crypto {
namespace {

using dataplane::MessageInitiation;
using dataplane::MessageResponse;
using Bytes = std::vector<uint8_t>;
using nlohmann::json;

const bool kSodiumReady = init();
const Instant kNow = Instant{} + std::chrono::hours(1000);

json load(const char* name) { return testing::load_vectors(name); }

Bytes hex(const std::string& s) { return testing::hex_bytes(s); }

std::array<uint8_t, 32> arr32(const std::string& s) { return testing::hex_array32(s); }

Key key32(const std::string& s) { return Key(arr32(s)); }

Bytes bytes_of(ByteSpan s) { return Bytes(s.begin(), s.end()); }
Bytes bytes_of(const Key& k) { return Bytes(k.b.begin(), k.b.end()); }
template <class M>
Bytes wire(const M& m) {
  return Bytes(reinterpret_cast<const uint8_t*>(&m), reinterpret_cast<const uint8_t*>(&m) + sizeof(m));
}
template <class M>
std::span<uint8_t> wire_span(M& m) {
  return {reinterpret_cast<uint8_t*>(&m), sizeof(m)};
}

Tai64n tai(const std::string& s) {
  Tai64n t;
  const Bytes b = hex(s);
  EXPECT_EQ(b.size(), 12u);
  std::copy_n(b.begin(), std::min<size_t>(12, b.size()), t.b.begin());
  return t;
}

uint32_t index_of(const json& j) { return static_cast<uint32_t>(std::stoul(j.get<std::string>(), nullptr, 16)); }

// Timestamps a whole number of seconds after a fixed instant (2024-01-01), so "newer" and
// "older" are exact and independent of the clock.
Tai64n at(int seconds) {
  return tai64n_from(std::chrono::system_clock::time_point{} + std::chrono::seconds(1704067200) +
                     std::chrono::seconds(seconds));
}

// Two identities with a completed configuration, ready to shake hands.
struct Pair {
  LocalStatic si, sr;
  Handshake hi, hr;
  Bytes psk;

  explicit Pair(bool with_psk = true) {
    std::array<uint8_t, 32> a, b;
    x25519_generate(a);
    x25519_generate(b);
    si.set(a);
    sr.set(b);
    psk.assign(32, 0);
    if (with_psk) random_bytes(psk);
    const auto p = std::span<const uint8_t, 32>(psk.data(), 32);
    EXPECT_TRUE(hi.set_keys(si, sr.public_key, p));
    EXPECT_TRUE(hr.set_keys(sr, si.public_key, p));
  }
};

// Runs a complete handshake and checks that both sides derive mirrored keys.
void full_handshake(Pair& p, const Tai64n& ts, SessionKeys& ki, SessionKeys& kr) {
  MessageInitiation init{};
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 11, ts));
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(init, p.sr, part));
  EXPECT_EQ(part.remote_static, p.si.public_key);
  ASSERT_TRUE(p.hr.consume_initiation(init, part));
  MessageResponse resp{};
  ASSERT_TRUE(p.hr.create_response(resp, 22));
  ASSERT_TRUE(p.hi.consume_response(resp, p.si));
  ASSERT_TRUE(p.hi.derive_session(ki));
  ASSERT_TRUE(p.hr.derive_session(kr));
}

class HandshakeVector : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(kSodiumReady);
    v_ = load("wireguard_handshake.json");
    ASSERT_TRUE(v_.contains("inputs"));
  }

  // Reproduces one variant (with_psk / no_psk) of the vector from the injected inputs.
  void run(const json& variant, const Bytes& psk_bytes) {
    const json& in = v_["inputs"];
    const json& tr = variant["trace"];
    const auto psk = std::span<const uint8_t, 32>(psk_bytes.data(), 32);
    LocalStatic si, sr;
    si.set(arr32(in["initiator_static_private"]));
    sr.set(arr32(in["responder_static_private"]));
    ASSERT_TRUE(si.has_key && sr.has_key);
    EXPECT_EQ(si.public_key, arr32(in["initiator_static_public"]));
    EXPECT_EQ(sr.public_key, arr32(in["responder_static_public"]));
    const uint32_t idx_i = index_of(in["initiator_sender_index"]);
    const uint32_t idx_r = index_of(in["responder_sender_index"]);
    const Tai64n ts = tai(in["timestamp_tai64n"]);

    Handshake hi, hr;
    ASSERT_TRUE(hi.set_keys(si, sr.public_key, psk));
    ASSERT_TRUE(hr.set_keys(sr, si.public_key, psk));
    ASSERT_TRUE(hi.usable() && hr.usable());

    // ---- initiation ----
    MessageInitiation init;
    std::memset(&init, 0xEE, sizeof(init));
    const Key ei = key32(in["initiator_ephemeral_private"]);
    ASSERT_TRUE(hi.create_initiation(init, si, idx_i, ts, &ei));
    EXPECT_EQ(hi.state(), Handshake::State::kCreatedInitiation);
    EXPECT_EQ(hi.local_index(), idx_i);
    // The macs belong to the cookie layer: create_initiation must not touch them.
    EXPECT_EQ(bytes_of({init.macs.mac1, 32}), Bytes(32, 0xEE));
    EXPECT_EQ(bytes_of(init.ephemeral), hex(tr["E_i_pub"]));
    EXPECT_EQ(bytes_of(init.encrypted_static), hex(tr["encrypted_static"]));
    EXPECT_EQ(bytes_of(init.encrypted_timestamp), hex(tr["encrypted_timestamp"]));
    CookieGenerator gi;
    gi.init(sr.public_key);
    gi.add_macs(wire_span(init), kNow);
    EXPECT_EQ(wire(init), hex(variant["handshake_initiation"]));

    // ---- responder consumes it ----
    InitiationPartial part;
    ASSERT_TRUE(decrypt_initiation(init, sr, part));
    EXPECT_EQ(part.remote_static, si.public_key);
    EXPECT_EQ(bytes_of(part.remote_ephemeral), hex(tr["E_i_pub"]));
    EXPECT_EQ(part.remote_index, idx_i);
    EXPECT_EQ(bytes_of(part.chaining_key), hex(tr["C3"]));
    EXPECT_EQ(bytes_of(part.hash), hex(tr["H3_after_mix_encrypted_static"]));
    Tai64n got;
    ASSERT_TRUE(hr.consume_initiation(init, part, &got));
    EXPECT_EQ(got, ts);
    EXPECT_EQ(hr.latest_timestamp(), ts);
    EXPECT_EQ(hr.remote_index(), idx_i);
    EXPECT_EQ(hr.state(), Handshake::State::kConsumedInitiation);

    // ---- response ----
    MessageResponse resp;
    std::memset(&resp, 0xEE, sizeof(resp));
    const Key er = key32(in["responder_ephemeral_private"]);
    ASSERT_TRUE(hr.create_response(resp, idx_r, &er));
    EXPECT_EQ(hr.state(), Handshake::State::kCreatedResponse);
    EXPECT_EQ(hr.local_index(), idx_r);
    EXPECT_EQ(bytes_of(resp.ephemeral), hex(tr["E_r_pub"]));
    EXPECT_EQ(bytes_of(resp.encrypted_nothing), hex(tr["encrypted_nothing"]));
    CookieGenerator gr;
    gr.init(si.public_key);
    gr.add_macs(wire_span(resp), kNow);
    EXPECT_EQ(wire(resp), hex(variant["handshake_response"]));

    ASSERT_TRUE(hi.consume_response(resp, si));
    EXPECT_EQ(hi.state(), Handshake::State::kConsumedResponse);
    EXPECT_EQ(hi.remote_index(), idx_r);

    // ---- transport keys ----
    SessionKeys ki, kr;
    ASSERT_TRUE(hi.derive_session(ki));
    ASSERT_TRUE(hr.derive_session(kr));
    EXPECT_EQ(hi.state(), Handshake::State::kZeroed);
    EXPECT_EQ(hr.state(), Handshake::State::kZeroed);
    EXPECT_TRUE(ki.initiator);
    EXPECT_FALSE(kr.initiator);
    EXPECT_EQ(ki.local_index, idx_i);
    EXPECT_EQ(ki.remote_index, idx_r);
    EXPECT_EQ(kr.local_index, idx_r);
    EXPECT_EQ(kr.remote_index, idx_i);
    EXPECT_EQ(bytes_of(ki.send), hex(tr["T_send_initiator"]));
    EXPECT_EQ(bytes_of(ki.recv), hex(tr["T_recv_initiator"]));
    EXPECT_EQ(bytes_of(kr.send), hex(tr["T_recv_initiator"]));
    EXPECT_EQ(bytes_of(kr.recv), hex(tr["T_send_initiator"]));

    if (variant.contains("transport")) check_transport(variant["transport"], ki, kr);
  }

  // Transport messages: header (type 4, receiver, LE64 counter) || AEAD(padded packet).
  static Bytes transport(const SessionKeys& k, uint64_t counter, const Bytes& plain) {
    Bytes msg(16 + plain.size() + kTagSize);
    dataplane::store_le32(msg.data(), 4);
    dataplane::store_le32(msg.data() + 4, k.remote_index);
    dataplane::store_le64(msg.data() + 8, counter);
    aead_seal(msg.data() + 16, plain, counter, {}, k.send.span());
    return msg;
  }

  static void check_transport(const json& t, const SessionKeys& ki, const SessionKeys& kr) {
    const Bytes keepalive = hex(t["initiator_keepalive_counter0"]);
    EXPECT_EQ(transport(ki, 0, {}), keepalive);
    EXPECT_TRUE(aead_open(nullptr, ByteSpan(keepalive).subspan(16), 0, {}, kr.recv.span()));

    const Bytes data_i = hex(t["initiator_data_counter1"]["padded_plaintext"]);
    const Bytes msg_i = hex(t["initiator_data_counter1"]["message"]);
    EXPECT_EQ(transport(ki, 1, data_i), msg_i);
    Bytes back(data_i.size());
    EXPECT_TRUE(aead_open(back.data(), ByteSpan(msg_i).subspan(16), 1, {}, kr.recv.span()));
    EXPECT_EQ(back, data_i);

    const Bytes data_r = hex(t["responder_data_counter0"]["padded_plaintext"]);
    const Bytes msg_r = hex(t["responder_data_counter0"]["message"]);
    EXPECT_EQ(transport(kr, 0, data_r), msg_r);
    back.resize(data_r.size());
    EXPECT_TRUE(aead_open(back.data(), ByteSpan(msg_r).subspan(16), 0, {}, ki.recv.span()));
    EXPECT_EQ(back, data_r);
  }

  json v_;
};

TEST_F(HandshakeVector, WithPsk) { run(v_["with_psk"], hex(v_["inputs"]["preshared_key"])); }

TEST_F(HandshakeVector, NoPsk) {
  ASSERT_TRUE(v_.contains("no_psk"));
  run(v_["no_psk"], Bytes(32, 0));
}

TEST_F(HandshakeVector, NoPskAndPskDiffer) {
  // Guards the two runs above against testing the same thing twice.
  EXPECT_EQ(v_["with_psk"]["handshake_initiation"], v_["no_psk"]["handshake_initiation"]);
  EXPECT_NE(v_["with_psk"]["handshake_response"], v_["no_psk"]["handshake_response"]);
}

// A vector from an unrelated implementation: all-zero ephemeral key (clamped), a responder
// "public key" that is just 32 bytes of 0x02, index 0 and a made-up timestamp.
TEST_F(HandshakeVector, ThirdPartyInitiationKat) {
  const json& k = v_["third_party_initiation_kat"];
  LocalStatic si;
  si.set(arr32(k["initiator_static_private"]));
  const PublicKey remote = arr32(k["responder_static_public"]);
  Handshake h;
  const Bytes zero_psk(32, 0);
  ASSERT_TRUE(h.set_keys(si, remote, std::span<const uint8_t, 32>(zero_psk.data(), 32)));
  const Key eph = key32(k["initiator_ephemeral_private"]);
  MessageInitiation init{};
  ASSERT_TRUE(h.create_initiation(init, si, index_of(k["sender_index"]), tai(k["timestamp_tai64n"]), &eph));
  CookieGenerator g;
  g.init(remote);
  g.add_macs(wire_span(init), kNow);
  EXPECT_EQ(wire(init), hex(k["handshake_initiation"]));
}

// ---- properties with random keys ----

TEST(Handshake, RandomKeysRoundTrip) {
  ASSERT_TRUE(kSodiumReady);
  for (bool with_psk : {true, false}) {
    for (int i = 0; i < 5; ++i) {
      Pair p(with_psk);
      SessionKeys ki, kr;
      full_handshake(p, at(0), ki, kr);
      EXPECT_EQ(bytes_of(ki.send), bytes_of(kr.recv));
      EXPECT_EQ(bytes_of(ki.recv), bytes_of(kr.send));
      EXPECT_NE(bytes_of(ki.send), bytes_of(ki.recv));
      EXPECT_EQ(ki.local_index, 11u);
      EXPECT_EQ(ki.remote_index, 22u);
      EXPECT_EQ(kr.local_index, 22u);
      EXPECT_EQ(kr.remote_index, 11u);
      // Both directions carry data.
      const Bytes msg = {1, 2, 3, 4, 5};
      Bytes sealed(msg.size() + kTagSize), back(msg.size());
      aead_seal(sealed.data(), msg, 0, {}, ki.send.span());
      EXPECT_TRUE(aead_open(back.data(), sealed, 0, {}, kr.recv.span()));
      EXPECT_EQ(back, msg);
      aead_seal(sealed.data(), msg, 0, {}, kr.send.span());
      EXPECT_TRUE(aead_open(back.data(), sealed, 0, {}, ki.recv.span()));
      EXPECT_EQ(back, msg);
    }
  }
}

TEST(Handshake, FreshKeysEveryHandshake) {
  Pair p;
  const Tai64n t0 = at(0);
  SessionKeys a_i, a_r, b_i, b_r;
  full_handshake(p, t0, a_i, a_r);
  full_handshake(p, at(1), b_i, b_r);  // needs a newer timestamp: see the replay test
  EXPECT_EQ(bytes_of(b_i.send), bytes_of(b_r.recv));
  EXPECT_NE(bytes_of(a_i.send), bytes_of(b_i.send));
}

TEST(Handshake, MismatchedPskFails) {
  Pair p;
  Bytes other(32);
  random_bytes(other);
  p.hr.set_psk(std::span<const uint8_t, 32>(other.data(), 32));
  MessageInitiation init{};
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 1, at(0)));
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(init, p.sr, part));  // the PSK only enters the response
  ASSERT_TRUE(p.hr.consume_initiation(init, part));
  MessageResponse resp{};
  ASSERT_TRUE(p.hr.create_response(resp, 2));
  EXPECT_FALSE(p.hi.consume_response(resp, p.si));
  EXPECT_EQ(p.hi.state(), Handshake::State::kCreatedInitiation);
}

// ---- replay ----

TEST(Handshake, ReplayedInitiationRejected) {
  Pair p;
  const Tai64n t0 = at(0);
  MessageInitiation first{};
  ASSERT_TRUE(p.hi.create_initiation(first, p.si, 1, t0));
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(first, p.sr, part));
  ASSERT_TRUE(p.hr.consume_initiation(first, part));

  // The same bytes again: decrypts, but the timestamp is not newer.
  InitiationPartial again;
  ASSERT_TRUE(decrypt_initiation(first, p.sr, again));
  EXPECT_FALSE(p.hr.consume_initiation(first, again));

  // A new initiation with the same (whitened) timestamp, and one with an older one.
  MessageInitiation same{}, older{};
  Handshake hi2;
  ASSERT_TRUE(hi2.set_keys(p.si, p.sr.public_key, std::span<const uint8_t, 32>(p.psk.data(), 32)));
  ASSERT_TRUE(hi2.create_initiation(same, p.si, 2, t0));
  ASSERT_TRUE(decrypt_initiation(same, p.sr, again));
  EXPECT_FALSE(p.hr.consume_initiation(same, again));
  ASSERT_TRUE(hi2.create_initiation(older, p.si, 3, at(-5)));
  ASSERT_TRUE(decrypt_initiation(older, p.sr, again));
  EXPECT_FALSE(p.hr.consume_initiation(older, again));
  EXPECT_EQ(p.hr.latest_timestamp(), t0);

  // The rejected ones changed nothing: the first handshake still completes.
  EXPECT_EQ(p.hr.remote_index(), 1u);
  MessageResponse resp{};
  ASSERT_TRUE(p.hr.create_response(resp, 9));
  ASSERT_TRUE(p.hi.consume_response(resp, p.si));
  SessionKeys ki, kr;
  ASSERT_TRUE(p.hi.derive_session(ki));
  ASSERT_TRUE(p.hr.derive_session(kr));
  EXPECT_EQ(bytes_of(ki.send), bytes_of(kr.recv));

  // The timestamp survives derive_session: replaying the first initiation still fails.
  ASSERT_TRUE(decrypt_initiation(first, p.sr, again));
  EXPECT_FALSE(p.hr.consume_initiation(first, again));
  // And a newer one is accepted.
  MessageInitiation newer{};
  ASSERT_TRUE(hi2.create_initiation(newer, p.si, 4, at(1)));
  ASSERT_TRUE(decrypt_initiation(newer, p.sr, again));
  EXPECT_TRUE(p.hr.consume_initiation(newer, again));
}

// The replay guard belongs to the remote identity: re-running set_keys for the same remote
// (as after a local key change) keeps it; a different remote key starts from zero.
TEST(Handshake, TimestampGuardFollowsRemoteKey) {
  Pair p;
  const auto psk = std::span<const uint8_t, 32>(p.psk.data(), 32);
  MessageInitiation init{};
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 1, at(100)));
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(init, p.sr, part));
  ASSERT_TRUE(p.hr.consume_initiation(init, part));

  ASSERT_TRUE(p.hr.set_keys(p.sr, p.si.public_key, psk));
  EXPECT_EQ(p.hr.latest_timestamp(), at(100));
  MessageInitiation older{};
  ASSERT_TRUE(p.hi.create_initiation(older, p.si, 2, at(50)));
  ASSERT_TRUE(decrypt_initiation(older, p.sr, part));
  EXPECT_FALSE(p.hr.consume_initiation(older, part));

  // The same Handshake object now configured for another initiator.
  LocalStatic other;
  std::array<uint8_t, 32> k;
  x25519_generate(k);
  other.set(k);
  Handshake ho;
  ASSERT_TRUE(ho.set_keys(other, p.sr.public_key, psk));
  ASSERT_TRUE(p.hr.set_keys(p.sr, other.public_key, psk));
  EXPECT_EQ(p.hr.latest_timestamp(), Tai64n{});
  EXPECT_EQ(p.hr.state(), Handshake::State::kZeroed);
  ASSERT_TRUE(ho.create_initiation(older, other, 3, at(50)));
  ASSERT_TRUE(decrypt_initiation(older, p.sr, part));
  EXPECT_TRUE(p.hr.consume_initiation(older, part));
}

// ---- wrong keys ----

TEST(Handshake, WrongResponderKeyCannotDecrypt) {
  Pair p;
  MessageInitiation init{};
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 1, at(0)));
  LocalStatic other;
  std::array<uint8_t, 32> k;
  x25519_generate(k);
  other.set(k);
  InitiationPartial part;
  part.remote_index = 777;
  EXPECT_FALSE(decrypt_initiation(init, other, part));
  EXPECT_EQ(part.remote_index, 777u);  // untouched on failure
  LocalStatic none;
  EXPECT_FALSE(decrypt_initiation(init, none, part));
  EXPECT_TRUE(decrypt_initiation(init, p.sr, part));
}

TEST(Handshake, PartialForAnotherPeerRejected) {
  Pair p;
  Pair q;  // a second initiator talking to a different responder
  MessageInitiation init{};
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 1, at(0)));
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(init, p.sr, part));
  // q.hr is configured for q.si, not p.si: the static key does not match.
  EXPECT_FALSE(q.hr.consume_initiation(init, part));
  EXPECT_EQ(q.hr.state(), Handshake::State::kZeroed);
}

// ---- bit flips: every authenticated bit matters; the indices are covered by mac1 ----

TEST(Handshake, InitiationBitFlipsFail) {
  Pair p;
  CookieChecker checker;
  checker.init(p.sr.public_key);
  CookieGenerator gen;
  gen.init(p.sr.public_key);
  MessageInitiation init{};
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 0x01020304, at(0)));
  gen.add_macs(wire_span(init), kNow);
  const Bytes src = {192, 0, 2, 1, 0x12, 0x34};

  const size_t noise_end = offsetof(MessageInitiation, macs);
  for (size_t byte = 0; byte < noise_end; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      MessageInitiation bad = init;
      wire_span(bad)[byte] ^= static_cast<uint8_t>(1 << bit);
      EXPECT_EQ(checker.check(wire_span(bad), src, false, kNow), CookieChecker::Result::kInvalidMac1)
          << "byte " << byte;
      InitiationPartial part;
      const bool decrypted = decrypt_initiation(bad, p.sr, part);
      const bool consumed = decrypted && p.hr.consume_initiation(bad, part);
      const bool in_sender = byte >= offsetof(MessageInitiation, sender) &&
                             byte < offsetof(MessageInitiation, ephemeral);
      if (in_sender) {
        // Not part of the Noise transcript (only mac1 protects it): accepted with the
        // flipped index, which must then be the one reported.
        ASSERT_TRUE(consumed) << "byte " << byte << " bit " << bit;
        EXPECT_NE(p.hr.remote_index(), 0x01020304u);
        p.hr = Handshake();  // fresh responder state for the next flip
        ASSERT_TRUE(p.hr.set_keys(p.sr, p.si.public_key, std::span<const uint8_t, 32>(p.psk.data(), 32)));
      } else {
        EXPECT_FALSE(consumed) << "byte " << byte << " bit " << bit;
        EXPECT_EQ(p.hr.state(), Handshake::State::kZeroed);
        EXPECT_EQ(p.hr.latest_timestamp(), Tai64n{});
      }
    }
  }
  // The untouched message still works after all that.
  EXPECT_EQ(checker.check(wire_span(init), src, false, kNow), CookieChecker::Result::kValidMac1);
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(init, p.sr, part));
  EXPECT_TRUE(p.hr.consume_initiation(init, part));
}

TEST(Handshake, ResponseBitFlipsFail) {
  Pair p;
  MessageInitiation init{};
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 0x01020304, at(0)));
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(init, p.sr, part));
  ASSERT_TRUE(p.hr.consume_initiation(init, part));
  MessageResponse resp{};
  ASSERT_TRUE(p.hr.create_response(resp, 0x0a0b0c0d));
  CookieChecker checker;
  checker.init(p.si.public_key);
  CookieGenerator gen;
  gen.init(p.si.public_key);
  gen.add_macs(wire_span(resp), kNow);
  const Bytes src = {192, 0, 2, 2, 0x12, 0x34};

  const size_t noise_end = offsetof(MessageResponse, macs);
  for (size_t byte = 0; byte < noise_end; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      MessageResponse bad = resp;
      wire_span(bad)[byte] ^= static_cast<uint8_t>(1 << bit);
      EXPECT_EQ(checker.check(wire_span(bad), src, false, kNow), CookieChecker::Result::kInvalidMac1);
      const bool in_sender = byte >= offsetof(MessageResponse, sender) &&
                             byte < offsetof(MessageResponse, receiver);
      if (in_sender) {
        // Only mac1 covers the responder's index. Check on a copy so p.hi stays pending.
        Handshake copy = p.hi;
        ASSERT_TRUE(copy.consume_response(bad, p.si)) << "byte " << byte;
        EXPECT_NE(copy.remote_index(), 0x0a0b0c0du);
      } else {
        EXPECT_FALSE(p.hi.consume_response(bad, p.si)) << "byte " << byte << " bit " << bit;
        EXPECT_EQ(p.hi.state(), Handshake::State::kCreatedInitiation);
      }
    }
  }
  ASSERT_TRUE(p.hi.consume_response(resp, p.si));
  EXPECT_EQ(p.hi.remote_index(), 0x0a0b0c0du);
}

// ---- low-order keys (netns.sh: such peers must never handshake) ----

TEST(Handshake, LowOrderRemoteStaticRejected) {
  const json keys = load("x25519.json")["wireguard_low_order_public_keys"]["keys"];
  ASSERT_EQ(keys.size(), 7u);
  LocalStatic local;
  std::array<uint8_t, 32> k;
  x25519_generate(k);
  local.set(k);
  const Bytes psk(32, 0);
  for (const auto& e : keys) {
    Handshake h;
    EXPECT_FALSE(h.set_keys(local, arr32(e["hex"]), std::span<const uint8_t, 32>(psk.data(), 32)))
        << e["hex"];
    EXPECT_FALSE(h.usable());
    MessageInitiation init{};
    EXPECT_FALSE(h.create_initiation(init, local, 1, at(0)));
    EXPECT_EQ(h.state(), Handshake::State::kZeroed);
  }
}

TEST(Handshake, LowOrderEphemeralRejected) {
  const json keys = load("x25519.json")["wireguard_low_order_public_keys"]["keys"];
  for (const auto& e : keys) {
    const PublicKey bad_key = arr32(e["hex"]);
    // In an initiation: es = DH(S_r, E_i) is zero.
    Pair p;
    MessageInitiation init{};
    ASSERT_TRUE(p.hi.create_initiation(init, p.si, 1, at(0)));
    std::memcpy(init.ephemeral, bad_key.data(), 32);
    InitiationPartial part;
    EXPECT_FALSE(decrypt_initiation(init, p.sr, part)) << e["hex"];
    // In a response: ee and se are zero.
    InitiationPartial good;
    MessageInitiation init2{};
    ASSERT_TRUE(p.hi.create_initiation(init2, p.si, 1, at(0)));
    ASSERT_TRUE(decrypt_initiation(init2, p.sr, good));
    ASSERT_TRUE(p.hr.consume_initiation(init2, good));
    MessageResponse resp{};
    ASSERT_TRUE(p.hr.create_response(resp, 2));
    std::memcpy(resp.ephemeral, bad_key.data(), 32);
    EXPECT_FALSE(p.hi.consume_response(resp, p.si)) << e["hex"];
    EXPECT_EQ(p.hi.state(), Handshake::State::kCreatedInitiation);
  }
}

TEST(Handshake, NoLocalKeyIsUnusable) {
  LocalStatic none;
  EXPECT_FALSE(none.has_key);
  LocalStatic k;
  std::array<uint8_t, 32> priv;
  x25519_generate(priv);
  k.set(priv);
  ASSERT_TRUE(k.has_key);
  const std::array<uint8_t, 32> zero{};
  k.set(zero);  // an all-zero private key clears the identity
  EXPECT_FALSE(k.has_key);
  EXPECT_EQ(k.public_key, PublicKey{});

  PublicKey remote;
  x25519_generate(priv);
  ASSERT_TRUE(x25519_public(remote, priv));
  Handshake h;
  EXPECT_FALSE(h.set_keys(none, remote, zero));
  EXPECT_FALSE(h.usable());
  MessageInitiation init{};
  EXPECT_FALSE(h.create_initiation(init, none, 1, at(0)));
}

TEST(Handshake, LocalStaticClampsAndDerivesPublic) {
  std::array<uint8_t, 32> raw;
  random_bytes(raw);
  raw[0] |= 7;
  raw[31] |= 0x80;
  LocalStatic s;
  s.set(raw);
  ASSERT_TRUE(s.has_key);
  EXPECT_EQ(s.private_key.b[0] & 7, 0);
  EXPECT_EQ(s.private_key.b[31] & 0xC0, 0x40);
  PublicKey pub;
  ASSERT_TRUE(x25519_public(pub, raw));  // X25519 clamps too, so the public key agrees
  EXPECT_EQ(s.public_key, pub);
}

// ---- state machine ----

TEST(Handshake, OutOfOrderCallsFailWithoutChange) {
  Pair p;
  SessionKeys keys;
  MessageResponse resp{};
  EXPECT_FALSE(p.hr.create_response(resp, 1));  // nothing consumed
  EXPECT_FALSE(p.hi.consume_response(resp, p.si));  // nothing sent
  EXPECT_FALSE(p.hi.derive_session(keys));

  MessageInitiation init{};
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 5, at(0)));
  EXPECT_FALSE(p.hi.derive_session(keys));  // initiation sent, no response yet
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(init, p.sr, part));
  ASSERT_TRUE(p.hr.consume_initiation(init, part));
  EXPECT_FALSE(p.hr.derive_session(keys));  // response not yet created
  ASSERT_TRUE(p.hr.create_response(resp, 6));

  // A response addressed to another index is not ours.
  MessageResponse misaddressed = resp;
  dataplane::store_le32(wire_span(misaddressed).data() + offsetof(MessageResponse, receiver), 99);
  EXPECT_FALSE(p.hi.consume_response(misaddressed, p.si));

  ASSERT_TRUE(p.hi.consume_response(resp, p.si));
  EXPECT_FALSE(p.hi.consume_response(resp, p.si));  // only once
  ASSERT_TRUE(p.hi.derive_session(keys));
  EXPECT_FALSE(p.hi.derive_session(keys));  // the state was wiped
}

TEST(Handshake, ClearKeepsIdentityAndTimestamp) {
  Pair p;
  MessageInitiation init{};
  const Tai64n t0 = at(0);
  ASSERT_TRUE(p.hi.create_initiation(init, p.si, 5, t0));
  InitiationPartial part;
  ASSERT_TRUE(decrypt_initiation(init, p.sr, part));
  ASSERT_TRUE(p.hr.consume_initiation(init, part));
  p.hr.clear();
  p.hi.clear();
  EXPECT_EQ(p.hr.state(), Handshake::State::kZeroed);
  EXPECT_EQ(p.hr.latest_timestamp(), t0);
  EXPECT_TRUE(p.hr.usable());
  MessageResponse resp{};
  EXPECT_FALSE(p.hr.create_response(resp, 1));
  SessionKeys ki, kr;
  full_handshake(p, at(1), ki, kr);
  EXPECT_EQ(bytes_of(ki.send), bytes_of(kr.recv));
}

}  // namespace
}  // namespace meshwg::crypto
