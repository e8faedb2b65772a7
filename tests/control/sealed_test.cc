// Tests for control/sealed.cc and control/peer_message.cc: the key against an independent
// computation (libsodium X25519 + libb2 keyed BLAKE2s), a box opened by hand with libsodium,
// round trips both ways, every tampered byte, replays, reordering, reflection, redirection,
// the transport byte, sender and receiver restarts, low-order keys, size bounds; then the peer
// message codec: hand-written encodings, round trips and one case per decode error.
// Expected values are computed here independently or written out by hand, never by the code.
#include "control/sealed.h"

#include <blake2.h>
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "control/peer_message.h"
#include "crypto/primitives.h"
#include "tests/control/test_keys.h"

namespace meshwg::control {
namespace {

using Bytes = std::vector<uint8_t>;
using dataplane::Endpoint;

using KeyPair = testing::TestKeys;
KeyPair make_pair() { return KeyPair(); }

// A clock the test moves by hand; shared so a channel can keep a copy.
struct FakeClock {
  std::shared_ptr<uint64_t> now = std::make_shared<uint64_t>(1'700'000'000'000'000'000ull);
  SealedClock fn() const {
    return [n = now] { return *n; };
  }
  void set(uint64_t t) const { *now = t; }
  void advance(uint64_t d) const { *now += d; }
};

SealedChannel channel(const KeyPair& me, const KeyPair& them, const FakeClock& clock,
                      SealedTransport t = SealedTransport::kRelay) {
  auto c = SealedChannel::create(me.priv, me.pub, them.pub, t, clock.fn());
  EXPECT_TRUE(c.has_value());
  if (!c) abort();  // the rest of the test cannot run
  return std::move(*c);
}

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

uint64_t be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

// K computed without meshwg's code: libsodium X25519, libb2 keyed BLAKE2s-256.
Bytes independent_key(const KeyPair& me, const crypto::PublicKey& their_pub) {
  uint8_t dh[32];
  EXPECT_EQ(crypto_scalarmult(dh, me.priv.data(), their_pub.data()), 0);
  Bytes msg = text("meshwg sealed v1");
  const bool mine_first = std::memcmp(me.pub.data(), their_pub.data(), 32) < 0;
  const auto& lo = mine_first ? me.pub : their_pub;
  const auto& hi = mine_first ? their_pub : me.pub;
  msg.insert(msg.end(), lo.begin(), lo.end());
  msg.insert(msg.end(), hi.begin(), hi.end());
  EXPECT_EQ(msg.size(), 80u);
  Bytes k(32);
  EXPECT_EQ(::blake2s(k.data(), msg.data(), dh, 32, msg.size(), 32), 0);
  return k;
}

// ---- key ----

TEST(SealedKey, BothSidesDeriveTheIndependentKey) {
  for (int i = 0; i < 16; ++i) {
    const KeyPair a = make_pair(), b = make_pair();
    const auto ka = sealed_derive_key(a.priv, a.pub, b.pub);
    const auto kb = sealed_derive_key(b.priv, b.pub, a.pub);
    ASSERT_TRUE(ka && kb);
    EXPECT_EQ(Bytes(ka->b.begin(), ka->b.end()), Bytes(kb->b.begin(), kb->b.end()));
    EXPECT_EQ(Bytes(ka->b.begin(), ka->b.end()), independent_key(a, b.pub));
    EXPECT_EQ(Bytes(kb->b.begin(), kb->b.end()), independent_key(b, a.pub));
  }
}

TEST(SealedKey, DiffersPerPair) {
  const KeyPair a = make_pair(), b = make_pair(), c = make_pair();
  const auto ab = sealed_derive_key(a.priv, a.pub, b.pub);
  const auto ac = sealed_derive_key(a.priv, a.pub, c.pub);
  ASSERT_TRUE(ab && ac);
  EXPECT_NE(ab->b, ac->b);
}

// Low-order points of Curve25519 (and their non-canonical forms): X25519 gives all zeros.
TEST(SealedChannel, LowOrderPeerKeyGivesNoChannel) {
  const KeyPair a = make_pair();
  const auto keys = testing::low_order_public_keys();
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_FALSE(sealed_derive_key(a.priv, a.pub, keys[i])) << "key " << i;
    EXPECT_FALSE(SealedChannel::create(a.priv, a.pub, keys[i])) << "key " << i;
  }
}

TEST(SealedChannel, CreateRejectsOwnKeyAndMismatchedPair) {
  const KeyPair a = make_pair(), b = make_pair();
  EXPECT_FALSE(SealedChannel::create(a.priv, a.pub, a.pub));  // would open its own boxes
  EXPECT_FALSE(SealedChannel::create(a.priv, b.pub, b.pub));  // my_public is not a's
  EXPECT_FALSE(SealedChannel::create(a.priv, b.pub, a.pub));
  EXPECT_FALSE(SealedChannel::create(a.priv, a.pub, b.pub, SealedTransport(7)));
  EXPECT_TRUE(SealedChannel::create(a.priv, a.pub, b.pub));
}

// ---- box ----

TEST(SealedChannel, BoxFormatOpensByHand) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  clock.set(0x0102030405060708ull);
  SealedChannel ab = channel(a, b, clock);
  const Bytes msg = text("candidates: 192.0.2.1:51820");
  const Bytes box = ab.seal(msg);
  ASSERT_EQ(box.size(), 1 + 8 + 24 + msg.size() + 16);
  EXPECT_EQ(box[0], 1);
  EXPECT_EQ(be64(&box[1]), 0x0102030405060708ull);  // the clock, big-endian
  EXPECT_EQ(ab.last_sent(), 0x0102030405060708ull);

  // AD = version || counter || sender || recipient || transport (0 = relay)
  Bytes ad(box.begin(), box.begin() + 9);
  ad.insert(ad.end(), a.pub.begin(), a.pub.end());
  ad.insert(ad.end(), b.pub.begin(), b.pub.end());
  ad.push_back(0);
  const Bytes k = independent_key(b, a.pub);
  Bytes plain(box.size() - 49);
  unsigned long long plain_len = 0;
  ASSERT_EQ(crypto_aead_xchacha20poly1305_ietf_decrypt(
                plain.data(), &plain_len, nullptr, &box[33], box.size() - 33, ad.data(),
                ad.size(), &box[9], k.data()),
            0);
  EXPECT_EQ(plain_len, msg.size());
  EXPECT_EQ(plain, msg);

  // And a box sealed by hand opens in the channel.
  SealedChannel ba = channel(b, a, clock);
  const auto opened = ba.open(box);
  ASSERT_TRUE(opened);
  EXPECT_EQ(*opened, msg);
}

TEST(SealedChannel, RoundTripBothWays) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  for (int i = 0; i < 5; ++i) {
    const Bytes m1 = text("from a " + std::to_string(i));
    const Bytes m2 = text("from b " + std::to_string(i));
    const auto o1 = ba.open(ab.seal(m1));
    ASSERT_TRUE(o1);
    EXPECT_EQ(*o1, m1);
    const auto o2 = ab.open(ba.seal(m2));
    ASSERT_TRUE(o2);
    EXPECT_EQ(*o2, m2);
    clock.advance(1000);
  }
  EXPECT_EQ(ab.sealed(), 5u);
  EXPECT_EQ(ab.opened(), 5u);
  EXPECT_EQ(ba.rejected_total(), 0u);
}

TEST(SealedChannel, EmptyAndMaximumPlaintext) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  const Bytes empty_box = ab.seal({});
  ASSERT_EQ(empty_box.size(), kSealedOverhead);
  const auto e = ba.open(empty_box);
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->empty());

  Bytes big(kSealedMaxPlaintext);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i * 7);
  const auto o = ba.open(ab.seal(big));
  ASSERT_TRUE(o);
  EXPECT_EQ(*o, big);

  big.push_back(0);
  EXPECT_TRUE(ab.seal(big).empty());
  EXPECT_EQ(ab.seal_failures(), 1u);

  // A box longer than the largest is rejected before anything is allocated or decrypted.
  Bytes too_long(kSealedMaxBox + 1, 0);
  too_long[0] = 1;
  SealedError why = SealedError::kOk;
  EXPECT_FALSE(ba.open(too_long, &why));
  EXPECT_EQ(why, SealedError::kTooLong);
  for (size_t n = 0; n < kSealedOverhead; ++n) {
    EXPECT_FALSE(ba.open(Bytes(empty_box.begin(), empty_box.begin() + n), &why));
    EXPECT_EQ(why, SealedError::kTooShort);
  }
  EXPECT_EQ(ba.rejected(SealedError::kTooShort), kSealedOverhead);
  EXPECT_EQ(ba.rejected(SealedError::kTooLong), 1u);
}

TEST(SealedChannel, EveryTamperedByteFails) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  const Bytes box = ab.seal(text("switch to 198.51.100.7:41641 in 500 ms"));
  for (size_t i = 0; i < box.size(); ++i) {
    for (uint8_t flip : {0x01, 0x80, 0xff}) {
      Bytes bad = box;
      bad[i] ^= flip;
      SealedError why = SealedError::kOk;
      EXPECT_FALSE(ba.open(bad, &why)) << "byte " << i;
      // version / counter / nonce / ciphertext / tag
      EXPECT_EQ(why, i == 0 ? SealedError::kBadVersion : SealedError::kAuthFailed) << i;
    }
  }
  // Truncated or extended boxes fail too.
  EXPECT_FALSE(ba.open(Bytes(box.begin(), box.end() - 1)));
  Bytes longer = box;
  longer.push_back(0);
  EXPECT_FALSE(ba.open(longer));
  // Rejections changed nothing: the genuine box still opens.
  EXPECT_EQ(ba.highest_received(), 0u);
  EXPECT_TRUE(ba.open(box));
  EXPECT_EQ(ba.rejected(SealedError::kBadVersion), 3u);
  EXPECT_EQ(ba.rejected(SealedError::kAuthFailed), 3 * (box.size() - 1) + 2);
}

TEST(SealedChannel, ReplayAndOlderBoxFail) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  const Bytes b1 = ab.seal(text("one"));
  clock.advance(1);
  const Bytes b2 = ab.seal(text("two"));
  SealedError why = SealedError::kOk;
  ASSERT_TRUE(ba.open(b1));
  EXPECT_FALSE(ba.open(b1, &why));  // replay
  EXPECT_EQ(why, SealedError::kReplay);
  ASSERT_TRUE(ba.open(b2));
  EXPECT_FALSE(ba.open(b2, &why));
  EXPECT_EQ(why, SealedError::kReplay);

  // Older after newer: rejected, not buffered.
  const Bytes b3 = ab.seal(text("three"));
  const Bytes b4 = ab.seal(text("four"));
  ASSERT_TRUE(ba.open(b4));
  EXPECT_FALSE(ba.open(b3, &why));
  EXPECT_EQ(why, SealedError::kReplay);
  EXPECT_EQ(ba.rejected(SealedError::kReplay), 3u);
}

TEST(SealedChannel, CounterStrictlyIncreasesWhateverTheClock) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  clock.set(5000);
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  std::vector<uint64_t> counters;
  for (uint64_t t : {5000ull, 5000ull, 4000ull, 0ull, 9000ull, 9000ull}) {
    clock.set(t);
    const Bytes box = ab.seal(text("x"));
    counters.push_back(be64(&box[1]));
    EXPECT_TRUE(ba.open(box));
  }
  EXPECT_EQ(counters, (std::vector<uint64_t>{5000, 5001, 5002, 5003, 9000, 9001}));
}

TEST(SealedChannel, BoxForAnotherPeerFails) {
  const KeyPair a = make_pair(), b = make_pair(), c = make_pair();
  const FakeClock clock;
  SealedChannel ac = channel(a, c, clock), ba = channel(b, a, clock), ca = channel(c, a, clock);
  const Bytes box = ac.seal(text("for c only"));
  SealedError why = SealedError::kOk;
  EXPECT_FALSE(ba.open(box, &why));
  EXPECT_EQ(why, SealedError::kAuthFailed);
  EXPECT_TRUE(ca.open(box));
}

TEST(SealedChannel, ReflectedBoxFails) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  const Bytes box = ab.seal(text("to b"));
  SealedError why = SealedError::kOk;
  EXPECT_FALSE(ab.open(box, &why));  // the relay sends it back to a
  EXPECT_EQ(why, SealedError::kAuthFailed);
  const Bytes reply = ba.seal(text("to a"));
  EXPECT_FALSE(ba.open(reply, &why));
  EXPECT_EQ(why, SealedError::kAuthFailed);
  EXPECT_TRUE(ba.open(box));
  EXPECT_TRUE(ab.open(reply));
}

TEST(SealedChannel, TransportsDoNotMix) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab_relay = channel(a, b, clock, SealedTransport::kRelay);
  SealedChannel ab_check = channel(a, b, clock, SealedTransport::kCheckSocket);
  SealedChannel ba_relay = channel(b, a, clock, SealedTransport::kRelay);
  SealedChannel ba_check = channel(b, a, clock, SealedTransport::kCheckSocket);
  const Bytes r = ab_relay.seal(text("candidates"));
  const Bytes c = ab_check.seal(text("ping"));
  SealedError why = SealedError::kOk;
  EXPECT_FALSE(ba_check.open(r, &why));
  EXPECT_EQ(why, SealedError::kAuthFailed);
  EXPECT_FALSE(ba_relay.open(c, &why));
  EXPECT_EQ(why, SealedError::kAuthFailed);
  EXPECT_TRUE(ba_relay.open(r));
  EXPECT_TRUE(ba_check.open(c));
}

TEST(SealedChannel, SenderRestartIsAccepted) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ba = channel(b, a, clock);
  {
    SealedChannel ab = channel(a, b, clock);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(ba.open(ab.seal(text("before"))));
  }
  clock.advance(2'000'000'000);  // restarted two seconds later, same keys, no coordination
  SealedChannel ab2 = channel(a, b, clock);
  const auto o = ba.open(ab2.seal(text("after restart")));
  ASSERT_TRUE(o);
  EXPECT_EQ(*o, text("after restart"));
}

TEST(SealedChannel, SenderRestartWithClockBehindIsRejectedUntilItCatchesUp) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ba = channel(b, a, clock);
  SealedChannel ab = channel(a, b, clock);
  ASSERT_TRUE(ba.open(ab.seal(text("before"))));
  const uint64_t last = ab.last_sent();
  clock.set(last - 1000);  // the clock stepped back, then the sender restarted
  SealedChannel ab2 = channel(a, b, clock);
  SealedError why = SealedError::kOk;
  EXPECT_FALSE(ba.open(ab2.seal(text("too early")), &why));
  EXPECT_EQ(why, SealedError::kReplay);
  clock.set(last + 1);
  EXPECT_TRUE(ba.open(ab2.seal(text("caught up"))));
}

TEST(SealedChannel, NoBoundOnHowFarAheadTheSenderClockIs) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock sender_clock, receiver_clock;
  sender_clock.set(receiver_clock.fn()() + 3600ull * 1'000'000'000ull * 24 * 365);  // a year
  SealedChannel ab = channel(a, b, sender_clock), ba = channel(b, a, receiver_clock);
  EXPECT_TRUE(ba.open(ab.seal(text("from the future"))));
}

TEST(SealedChannel, CounterExhaustion) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  clock.set(UINT64_MAX);
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  const Bytes last = ab.seal(text("last"));
  ASSERT_FALSE(last.empty());
  EXPECT_EQ(be64(&last[1]), UINT64_MAX);
  EXPECT_TRUE(ab.seal(text("none")).empty());
  EXPECT_EQ(ab.seal_failures(), 1u);
  EXPECT_TRUE(ba.open(last));
}

TEST(SealedChannel, ReceiverRestartWithRememberedHighWaterMark) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock);
  const Bytes old_box = ab.seal(text("old"));
  uint64_t remembered = 0;
  {
    SealedChannel ba = channel(b, a, clock);
    ASSERT_TRUE(ba.open(old_box));
    remembered = ba.highest_received();
  }
  SealedChannel fresh = channel(b, a, clock);
  SealedChannel restored = channel(b, a, clock);
  restored.set_highest_received(remembered);
  restored.set_highest_received(1);  // never lowers
  EXPECT_EQ(restored.highest_received(), remembered);
  EXPECT_TRUE(fresh.open(old_box));  // the documented limit without a remembered mark
  EXPECT_FALSE(restored.open(old_box));
  EXPECT_TRUE(restored.open(ab.seal(text("new"))));
}

TEST(SealedChannel, PlaintextNeverAppearsInTheBox) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock);
  std::string s;
  for (int i = 0; i < 20; ++i) s += "endpoint 203.0.113." + std::to_string(i) + ":51820;";
  const Bytes plain = text(s);
  const Bytes box = ab.seal(plain);
  ASSERT_FALSE(box.empty());
  // No 6-byte window of the plaintext shows up anywhere in the box.
  for (size_t i = 0; i + 6 <= plain.size(); ++i)
    EXPECT_EQ(std::search(box.begin(), box.end(), plain.begin() + i, plain.begin() + i + 6),
              box.end())
        << "plaintext bytes at " << i;
  // Nor do the private keys.
  for (const crypto::Key* k : {&a.priv, &b.priv})
    EXPECT_EQ(std::search(box.begin(), box.end(), k->b.begin(), k->b.begin() + 8), box.end());
}

TEST(SealedChannel, RandomBoxesAreRejected) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ba = channel(b, a, clock);
  for (size_t n : {size_t{49}, size_t{50}, size_t{200}, size_t{1500}}) {
    Bytes junk(n);
    crypto::random_bytes(junk);
    junk[0] = 1;
    SealedError why = SealedError::kOk;
    EXPECT_FALSE(ba.open(junk, &why));
    EXPECT_EQ(why, SealedError::kAuthFailed);
  }
}

TEST(SealedChannel, MovedFromChannelIsDead) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  SealedChannel moved = std::move(ab);
  const Bytes box = moved.seal(text("hi"));
  EXPECT_TRUE(ba.open(box));
  EXPECT_TRUE(ab.seal(text("dead")).empty());  // NOLINT(bugprone-use-after-move): the point
  SealedError why = SealedError::kOk;
  EXPECT_FALSE(ab.open(ba.seal(text("x")), &why));
  EXPECT_EQ(why, SealedError::kAuthFailed);
  // Move assignment carries the counters.
  SealedChannel again = channel(a, b, clock);
  again = std::move(moved);
  EXPECT_EQ(again.sealed(), 1u);
  EXPECT_TRUE(ba.open(again.seal(text("still works"))));
}

TEST(SealedChannel, ErrorNames) {
  for (size_t i = 0; i < size_t(SealedError::kCount); ++i)
    EXPECT_STRNE(sealed_error_name(SealedError(i)), "unknown error") << i;
  EXPECT_STREQ(sealed_error_name(SealedError::kCount), "unknown error");
}

TEST(SealedChannel, SystemClockIsUnixNanoseconds) {
  const uint64_t t = sealed_system_clock_ns();
  EXPECT_GT(t, 1'600'000'000ull * 1'000'000'000ull);  // after September 2020
  EXPECT_LT(t, 4'000'000'000ull * 1'000'000'000ull);  // before 2096
}

// ---- peer messages ----

Endpoint ep(const char* s) {
  auto e = Endpoint::parse(s);
  EXPECT_TRUE(e.has_value()) << s;
  return e.value_or(Endpoint{});
}

// Hex with spaces between fields, for readability.
Bytes hex(std::string h) {
  std::erase(h, ' ');
  Bytes out;
  for (size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(uint8_t(std::stoul(h.substr(i, 2), nullptr, 16)));
  return out;
}

PeerMessage decode_ok(const Bytes& b) {
  PeerMessageError err = PeerMessageError::kCount;
  auto m = peer_message_decode(b, err);
  EXPECT_TRUE(m.has_value()) << peer_message_error_name(err);
  EXPECT_EQ(err, PeerMessageError::kOk);
  return m.value_or(PeerBye{});
}

PeerMessageError decode_error(const Bytes& b) {
  PeerMessageError err = PeerMessageError::kOk;
  EXPECT_FALSE(peer_message_decode(b, err).has_value());
  return err;
}

void expect_round_trip(const PeerMessage& m) {
  const Bytes enc = peer_message_encode(m);
  ASSERT_FALSE(enc.empty());
  EXPECT_LE(enc.size(), kPeerMaxMessageSize);
  EXPECT_EQ(enc[0], uint8_t(peer_message_type(m)));
  EXPECT_EQ(decode_ok(enc), m) << peer_message_type_name(peer_message_type(m));
}

PeerCandidates sample_candidates() {
  PeerCandidates c;
  c.generation = 0x01020304;
  c.candidates = {
      {PeerCandidateKind::kLocal, ep("192.168.1.10:51820"), true},
      {PeerCandidateKind::kStun, ep("[2001:db8::1]:3478"), false},
  };
  return c;
}

TEST(PeerMessage, HandWrittenEncodings) {
  EXPECT_EQ(peer_message_encode(sample_candidates()),
            hex("01 01020304 02"
                " 00 01 04 c0a8010a ca6c"
                " 02 00 06 20010db8000000000000000000000001 0d96"));
  EXPECT_EQ(peer_message_encode(PeerPing{0x0102030405060708, 0x1112131415161718}),
            hex("02 0102030405060708 1112131415161718"));
  EXPECT_EQ(peer_message_encode(PeerPong{1, 2}), hex("03 0000000000000001 0000000000000002"));
  EXPECT_EQ(peer_message_encode(
                PeerSwitchProposal{7, ep("198.51.100.7:41641"), ep("203.0.113.9:51820"), 500}),
            hex("04 0000000000000007 04 c6336407 a2a9 04 cb007109 ca6c 000001f4"));
  EXPECT_EQ(peer_message_encode(PeerSwitchAck{9, true}), hex("05 0000000000000009 01"));
  EXPECT_EQ(peer_message_encode(PeerSwitchConfirm{9, false}), hex("06 0000000000000009 00"));
  EXPECT_EQ(peer_message_encode(PeerBye{}), hex("07"));
  EXPECT_EQ(peer_message_encode(PeerHello{}), hex("08"));
}

TEST(PeerMessage, RoundTrips) {
  expect_round_trip(sample_candidates());
  expect_round_trip(PeerCandidates{});
  PeerCandidates full;
  full.generation = UINT32_MAX;
  for (size_t i = 0; i < kPeerMaxCandidates; ++i) {
    const std::string a = i % 2 ? "[fd00::" + std::to_string(i + 1) + "]:" + std::to_string(1000 + i)
                                : "10.0.0." + std::to_string(i + 1) + ":" + std::to_string(1000 + i);
    full.candidates.push_back({PeerCandidateKind(i % 6), ep(a.c_str()), i % 3 == 0});
  }
  expect_round_trip(full);
  expect_round_trip(PeerPing{UINT64_MAX, 0});
  expect_round_trip(PeerPong{0, UINT64_MAX});
  expect_round_trip(PeerSwitchProposal{1, ep("[2001:db8::5]:1"), ep("192.0.2.1:65535"), 0});
  expect_round_trip(PeerSwitchProposal{2, ep("192.0.2.1:9"), ep("192.0.2.2:9"),
                                       kPeerMaxSwitchDelayMs});
  expect_round_trip(PeerSwitchAck{3, false});
  expect_round_trip(PeerSwitchAck{4, true});
  expect_round_trip(PeerSwitchConfirm{5, true});
  expect_round_trip(PeerBye{});
  expect_round_trip(PeerHello{});
}

TEST(PeerMessage, LargestMessageFitsItsBound) {
  PeerCandidates full;
  for (size_t i = 0; i < kPeerMaxCandidates; ++i)
    full.candidates.push_back({PeerCandidateKind::kRelay, ep("[2001:db8::9]:9"), false});
  EXPECT_EQ(peer_message_encode(full).size(), kPeerMaxMessageSize);
  EXPECT_LE(kPeerMaxMessageSize, kSealedMaxPlaintext);
}

TEST(PeerMessage, ScopeAndLocalAddressAreNotCarried) {
  Endpoint scoped = ep("[fe80::1%3]:51820");
  scoped.local = *dataplane::IpAddress::parse("fe80::2");
  const PeerMessage m = PeerSwitchProposal{1, scoped, ep("192.0.2.1:1"), 10};
  const PeerMessage back = decode_ok(peer_message_encode(m));
  const auto& p = std::get<PeerSwitchProposal>(back);
  EXPECT_EQ(p.mine.str(), "[fe80::1]:51820");
  EXPECT_EQ(p.mine.addr.in6.sin6_scope_id, 0u);
  EXPECT_EQ(p.mine.local.family, 0);
}

TEST(PeerMessage, EncodeRefusesWhatDecodeRejects) {
  PeerCandidates many;
  for (size_t i = 0; i <= kPeerMaxCandidates; ++i)
    many.candidates.push_back({PeerCandidateKind::kLocal, ep("10.0.0.1:1"), true});
  EXPECT_TRUE(peer_message_encode(many).empty());
  PeerCandidates bad_kind = sample_candidates();
  bad_kind.candidates[0].kind = PeerCandidateKind(6);
  EXPECT_TRUE(peer_message_encode(bad_kind).empty());
  PeerCandidates unset = sample_candidates();
  unset.candidates[1].address = Endpoint{};
  EXPECT_TRUE(peer_message_encode(unset).empty());
  EXPECT_TRUE(peer_message_encode(PeerSwitchProposal{1, ep("10.0.0.1:0"), ep("10.0.0.2:1"), 0})
                  .empty());
  EXPECT_TRUE(peer_message_encode(PeerSwitchProposal{1, ep("0.0.0.0:5"), ep("10.0.0.2:1"), 0})
                  .empty());
  EXPECT_TRUE(peer_message_encode(PeerSwitchProposal{1, ep("10.0.0.1:5"), ep("[::]:1"), 0})
                  .empty());
  EXPECT_TRUE(peer_message_encode(PeerSwitchProposal{1, ep("10.0.0.1:5"), ep("10.0.0.2:1"),
                                                     kPeerMaxSwitchDelayMs + 1})
                  .empty());
}

TEST(PeerMessage, EveryDecodeError) {
  using E = PeerMessageError;
  EXPECT_EQ(decode_error({}), E::kEmpty);
  EXPECT_EQ(decode_error(hex("00")), E::kUnknownType);
  EXPECT_EQ(decode_error(hex("09")), E::kUnknownType);
  EXPECT_EQ(decode_error(hex("ff 0000")), E::kUnknownType);
  EXPECT_EQ(decode_error(hex("02 0102030405060708 11121314151617")), E::kTruncated);
  EXPECT_EQ(decode_error(hex("07 00")), E::kTrailingBytes);
  EXPECT_EQ(decode_error(hex("05 0000000000000009 01 00")), E::kTrailingBytes);
  EXPECT_EQ(decode_error(hex("01 00000000 41")), E::kTooManyCandidates);
  EXPECT_EQ(decode_error(hex("01 00000000 ff")), E::kTooManyCandidates);
  EXPECT_EQ(decode_error(hex("01 00000000 01 06 01 04 c0a8010a ca6c")), E::kBadKind);
  EXPECT_EQ(decode_error(hex("01 00000000 01 00 02 04 c0a8010a ca6c")), E::kBadFlags);
  EXPECT_EQ(decode_error(hex("01 00000000 01 00 81 04 c0a8010a ca6c")), E::kBadFlags);
  EXPECT_EQ(decode_error(hex("01 00000000 01 00 01 05 c0a8010a ca6c")), E::kBadFamily);
  EXPECT_EQ(decode_error(hex("01 00000000 01 00 01 00 c0a8010a ca6c")), E::kBadFamily);
  EXPECT_EQ(decode_error(hex("01 00000000 01 00 01 04 00000000 ca6c")), E::kBadAddress);
  EXPECT_EQ(decode_error(hex("01 00000000 01 00 01 06 00000000000000000000000000000000 ca6c")),
            E::kBadAddress);
  EXPECT_EQ(decode_error(hex("01 00000000 01 00 01 04 c0a8010a 0000")), E::kBadPort);
  EXPECT_EQ(decode_error(hex("05 0000000000000009 02")), E::kBadBool);
  EXPECT_EQ(decode_error(hex("06 0000000000000009 ff")), E::kBadBool);
  EXPECT_EQ(decode_error(hex("04 0000000000000007 04 c6336407 a2a9 04 cb007109 ca6c 0000ea61")),
            E::kBadDelay);  // 60001 ms
  EXPECT_EQ(decode_error(hex("04 0000000000000007 04 c6336407 a2a9 04 cb007109 ca6c ffffffff")),
            E::kBadDelay);
  // A count that promises more candidates than there are bytes.
  EXPECT_EQ(decode_error(hex("01 00000000 02 00 01 04 c0a8010a ca6c")), E::kTruncated);
}

TEST(PeerMessage, EveryPrefixIsTruncated) {
  for (const PeerMessage& m :
       {PeerMessage(sample_candidates()), PeerMessage(PeerPing{1, 2}), PeerMessage(PeerPong{3, 4}),
        PeerMessage(PeerSwitchProposal{5, ep("[2001:db8::1]:1"), ep("192.0.2.1:2"), 3}),
        PeerMessage(PeerSwitchAck{6, true}), PeerMessage(PeerSwitchConfirm{7, true})}) {
    const Bytes enc = peer_message_encode(m);
    ASSERT_FALSE(enc.empty());
    for (size_t n = 1; n < enc.size(); ++n)
      EXPECT_EQ(decode_error(Bytes(enc.begin(), enc.begin() + n)), PeerMessageError::kTruncated)
          << peer_message_type_name(peer_message_type(m)) << " prefix " << n;
  }
}

TEST(PeerMessage, Names) {
  for (size_t i = 0; i < size_t(PeerMessageError::kCount); ++i)
    EXPECT_STRNE(peer_message_error_name(PeerMessageError(i)), "unknown error") << i;
  for (uint8_t t = 1; t <= 7; ++t)
    EXPECT_STRNE(peer_message_type_name(PeerMessageType(t)), "unknown") << int(t);
  EXPECT_STREQ(peer_candidate_kind_name(PeerCandidateKind::kWgStun), "wg-stun");
  EXPECT_STREQ(peer_candidate_kind_name(PeerCandidateKind::kNatPmp), "nat-pmp");
  EXPECT_STREQ(peer_candidate_kind_name(PeerCandidateKind::kRelay), "relay");
  EXPECT_STREQ(peer_candidate_kind_name(PeerCandidateKind(6)), "unknown");
}

// The two together, as the mesh uses them: a candidate list through the relay.
TEST(PeerMessage, SealedCandidatesEndToEnd) {
  const KeyPair a = make_pair(), b = make_pair();
  const FakeClock clock;
  SealedChannel ab = channel(a, b, clock), ba = channel(b, a, clock);
  const PeerMessage m = sample_candidates();
  const auto opened = ba.open(ab.seal(peer_message_encode(m)));
  ASSERT_TRUE(opened);
  EXPECT_EQ(decode_ok(*opened), m);
}

}  // namespace
}  // namespace meshwg::control
