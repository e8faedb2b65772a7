// libFuzzer target for control/sealed.cc and control/peer_message.cc. The first input byte
// picks a mode (modulo 4), the rest is the data:
//   0  arbitrary bytes into SealedChannel::open: always rejected (nobody without K can make a
//      box that opens), with the reason the sizes and the version byte call for;
//   1  arbitrary bytes into peer_message_decode: a failure names one error; a success encodes
//      back to exactly the input (the encoding is canonical) and decodes to the same message;
//   2  the data as a plaintext: sealed by one peer it opens at the other to the same bytes,
//      the same box again is a replay, and a copy with one byte changed is rejected;
//   3  the data as a peer message: what decodes also survives seal → open → decode.
// Channels are made once (X25519 is too slow to repeat per input) with fixed keys; a counter
// clock keeps the sender's counters increasing across inputs, so outcomes do not depend on
// which inputs ran before.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "control/peer_message.h"
#include "control/sealed.h"
#include "crypto/primitives.h"
#include "fuzz_check.h"

using namespace meshwg;
using namespace meshwg::control;

namespace {

struct Peers {
  std::optional<SealedChannel> ab;  // a's channel to b (sends)
  std::optional<SealedChannel> ba;  // b's channel to a (receives)
};

// A clock that ticks by one per reading: counters stay strictly increasing with no time.
uint64_t g_ticks = 1'700'000'000'000'000'000ull;
uint64_t tick_clock() { return ++g_ticks; }

Peers& peers() {
  static Peers p = [] {
    CHECK(crypto::init());
    crypto::Key pa, pb;
    for (size_t i = 0; i < 32; ++i) {
      pa.b[i] = uint8_t(i + 1);
      pb.b[i] = uint8_t(0xa0 + i);
    }
    crypto::x25519_clamp(pa.span());
    crypto::x25519_clamp(pb.span());
    crypto::PublicKey a{}, b{};
    CHECK(crypto::x25519_public(a, pa.span()));
    CHECK(crypto::x25519_public(b, pb.span()));
    Peers q;
    q.ab = SealedChannel::create(pa, a, b, SealedTransport::kRelay, tick_clock);
    q.ba = SealedChannel::create(pb, b, a, SealedTransport::kRelay, tick_clock);
    CHECK(q.ab && q.ba);
    return q;
  }();
  return p;
}

void fuzz_open(std::span<const uint8_t> d) {
  SealedChannel& ba = *peers().ba;
  const uint64_t highest = ba.highest_received();
  SealedError why = SealedError::kOk;
  CHECK(!ba.open(d, &why));
  SealedError expected = SealedError::kAuthFailed;
  if (d.size() < kSealedOverhead)
    expected = SealedError::kTooShort;
  else if (d.size() > kSealedMaxBox)
    expected = SealedError::kTooLong;
  else if (d[0] != kSealedVersion)
    expected = SealedError::kBadVersion;
  CHECK(why == expected);
  CHECK(ba.highest_received() == highest);
}

void check_decoded(std::span<const uint8_t> d, const PeerMessage& m) {
  const std::vector<uint8_t> enc = peer_message_encode(m);
  CHECK(!enc.empty() && enc.size() <= kPeerMaxMessageSize);
  CHECK(std::vector<uint8_t>(d.begin(), d.end()) == enc);
  PeerMessageError err = PeerMessageError::kCount;
  const auto again = peer_message_decode(enc, err);
  CHECK(again && err == PeerMessageError::kOk && *again == m);
  if (const auto* c = std::get_if<PeerCandidates>(&m)) {
    CHECK(c->candidates.size() <= kPeerMaxCandidates);
    for (const PeerCandidate& pc : c->candidates)
      CHECK(pc.address.valid() && pc.address.port() != 0);
  }
  if (const auto* s = std::get_if<PeerSwitchProposal>(&m)) CHECK(s->at_ms <= kPeerMaxSwitchDelayMs);
}

std::optional<PeerMessage> fuzz_decode(std::span<const uint8_t> d) {
  PeerMessageError err = PeerMessageError::kCount;
  auto m = peer_message_decode(d, err);
  if (!m) {
    CHECK(err != PeerMessageError::kOk && err < PeerMessageError::kCount);
    CHECK(std::string(peer_message_error_name(err)) != "unknown error");
    return std::nullopt;
  }
  CHECK(err == PeerMessageError::kOk);
  check_decoded(d, *m);
  return m;
}

void fuzz_round_trip(std::span<const uint8_t> d) {
  if (d.size() > kSealedMaxPlaintext) d = d.first(kSealedMaxPlaintext);
  Peers& p = peers();
  const std::vector<uint8_t> box = p.ab->seal(d);
  CHECK(box.size() == d.size() + kSealedOverhead);
  // One changed byte, somewhere the input chooses, before the genuine box raises the counter.
  if (!d.empty()) {
    std::vector<uint8_t> bad = box;
    bad[(size_t(d[0]) * 131 + d.size()) % bad.size()] ^= uint8_t(d[d.size() / 2] | 1);
    SealedError why = SealedError::kOk;
    CHECK(!p.ba->open(bad, &why));
    CHECK(why == SealedError::kAuthFailed || why == SealedError::kBadVersion);
  }
  SealedError why = SealedError::kCount;
  const auto opened = p.ba->open(box, &why);
  CHECK(opened && why == SealedError::kOk);
  CHECK(opened->size() == d.size() && std::equal(d.begin(), d.end(), opened->begin()));
  CHECK(!p.ba->open(box, &why) && why == SealedError::kReplay);
}

void fuzz_sealed_message(std::span<const uint8_t> d) {
  const auto m = fuzz_decode(d);
  if (!m) return;
  Peers& p = peers();
  const auto opened = p.ba->open(p.ab->seal(peer_message_encode(*m)));
  CHECK(opened);
  PeerMessageError err = PeerMessageError::kCount;
  const auto back = peer_message_decode(*opened, err);
  CHECK(back && *back == *m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > kSealedMaxBox + 64) return 0;
  const std::span<const uint8_t> d(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0: fuzz_open(d); break;
    case 1: (void)fuzz_decode(d); break;
    case 2: fuzz_round_trip(d); break;
    case 3: fuzz_sealed_message(d); break;
  }
  return 0;
}
