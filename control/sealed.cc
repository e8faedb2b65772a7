// The sealed peer-to-peer box (see sealed.h for the key derivation, the box format and the
// replay rule): keyed BLAKE2s over X25519 for the key, libsodium's XChaCha20-Poly1305-IETF
// through crypto/primitives for the box.
#include "control/sealed.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

namespace meshwg::control {

namespace {

void put_be64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (56 - 8 * i));
}

uint64_t get_be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

constexpr size_t kLabelSize = sizeof(kSealedLabel) - 1;  // without the terminator
static_assert(kLabelSize == 16);

}  // namespace

const char* sealed_error_name(SealedError e) {
  switch (e) {
    case SealedError::kOk: return "ok";
    case SealedError::kTooShort: return "too short";
    case SealedError::kTooLong: return "too long";
    case SealedError::kBadVersion: return "bad version";
    case SealedError::kAuthFailed: return "authentication failed";
    case SealedError::kReplay: return "replay";
    case SealedError::kCount: break;
  }
  return "unknown error";
}

uint64_t sealed_system_clock_ns() {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  return ns > 0 ? uint64_t(ns) : 0;  // a clock before 1970 counts from the last counter
}

std::optional<crypto::Key> sealed_derive_key(const crypto::Key& my_private,
                                             const crypto::PublicKey& my_public,
                                             const crypto::PublicKey& their_public) {
  crypto::Key dh;
  if (!crypto::x25519(dh.span(), my_private.span(), their_public)) return std::nullopt;
  // Byte-wise order (std::array's < is lexicographic on uint8_t): both sides hash the same
  // message whichever of them computes it.
  const bool mine_lower = my_public < their_public;
  const crypto::PublicKey& lo = mine_lower ? my_public : their_public;
  const crypto::PublicKey& hi = mine_lower ? their_public : my_public;
  std::array<uint8_t, kLabelSize + 2 * crypto::kKeySize> msg;
  std::memcpy(msg.data(), kSealedLabel, kLabelSize);
  std::copy(lo.begin(), lo.end(), msg.begin() + kLabelSize);
  std::copy(hi.begin(), hi.end(), msg.begin() + kLabelSize + crypto::kKeySize);
  crypto::Key k;
  crypto::blake2s(k.span(), msg, dh.span());
  return k;
}

std::optional<SealedChannel> SealedChannel::create(const crypto::Key& my_private,
                                                   const crypto::PublicKey& my_public,
                                                   const crypto::PublicKey& their_public,
                                                   SealedTransport transport,
                                                   SealedClock clock) {
  if (!crypto::init()) return std::nullopt;
  // A caller passing mismatched keys would derive a K the peer cannot: fail here, not later
  // with every box rejected.
  crypto::PublicKey derived{};
  if (!crypto::x25519_public(derived, my_private.span()) ||
      !crypto::equal_ct(derived, my_public))
    return std::nullopt;
  if (my_public == their_public) return std::nullopt;
  if (transport != SealedTransport::kRelay && transport != SealedTransport::kCheckSocket)
    return std::nullopt;
  auto k = sealed_derive_key(my_private, my_public, their_public);
  if (!k) return std::nullopt;
  SealedChannel c;
  c.key_ = *k;
  c.my_public_ = my_public;
  c.their_public_ = their_public;
  c.transport_ = transport;
  c.clock_ = clock ? std::move(clock) : SealedClock(sealed_system_clock_ns);
  c.live_ = true;
  return c;
}

SealedChannel::SealedChannel(SealedChannel&& o) noexcept { *this = std::move(o); }

SealedChannel& SealedChannel::operator=(SealedChannel&& o) noexcept {
  if (this == &o) return *this;
  key_ = o.key_;
  o.key_.clear();
  my_public_ = o.my_public_;
  their_public_ = o.their_public_;
  transport_ = o.transport_;
  clock_ = std::move(o.clock_);
  live_ = std::exchange(o.live_, false);
  last_sent_ = o.last_sent_;
  highest_received_ = o.highest_received_;
  sealed_ = o.sealed_;
  opened_ = o.opened_;
  seal_failures_ = o.seal_failures_;
  rejected_ = o.rejected_;
  return *this;
}

SealedChannel::Ad SealedChannel::make_ad(uint64_t counter, bool outgoing) const {
  Ad ad;
  uint8_t* p = ad.data();
  *p++ = kSealedVersion;
  put_be64(p, counter);
  p += 8;
  const crypto::PublicKey& sender = outgoing ? my_public_ : their_public_;
  const crypto::PublicKey& recipient = outgoing ? their_public_ : my_public_;
  p = std::copy(sender.begin(), sender.end(), p);
  p = std::copy(recipient.begin(), recipient.end(), p);
  *p = uint8_t(transport_);
  return ad;
}

std::vector<uint8_t> SealedChannel::seal(std::span<const uint8_t> plaintext) {
  if (!live_ || plaintext.size() > kSealedMaxPlaintext || last_sent_ == UINT64_MAX) {
    ++seal_failures_;
    return {};
  }
  const uint64_t counter = std::max(last_sent_ + 1, clock_());
  last_sent_ = counter;

  std::vector<uint8_t> box(kSealedOverhead + plaintext.size());
  box[0] = kSealedVersion;
  put_be64(&box[1], counter);
  const std::span<uint8_t, crypto::kXNonceSize> nonce(&box[9], crypto::kXNonceSize);
  // Random, not derived from the counter: a nonce never repeats under K even if a bug or a
  // clock reused a counter (2^-96 per pair of boxes).
  crypto::random_bytes(nonce);
  const Ad ad = make_ad(counter, true);
  crypto::xaead_seal(&box[kSealedHeaderSize], plaintext, nonce, ad, key_.span());
  ++sealed_;
  return box;
}

std::optional<std::vector<uint8_t>> SealedChannel::open(std::span<const uint8_t> box,
                                                        SealedError* why) {
  const auto reject = [&](SealedError e) -> std::optional<std::vector<uint8_t>> {
    ++rejected_[size_t(e)];
    if (why) *why = e;
    return std::nullopt;
  };
  // Sizes first: they bound the allocation below before anything else is read.
  if (box.size() < kSealedOverhead) return reject(SealedError::kTooShort);
  if (box.size() > kSealedMaxBox) return reject(SealedError::kTooLong);
  if (box[0] != kSealedVersion) return reject(SealedError::kBadVersion);
  if (!live_) return reject(SealedError::kAuthFailed);
  const uint64_t counter = get_be64(&box[1]);
  const std::span<const uint8_t, crypto::kXNonceSize> nonce(&box[9], crypto::kXNonceSize);
  const Ad ad = make_ad(counter, false);
  // Authenticate before the counter check, so kReplay counts genuine boxes of the peer only
  // and a forged box with a low counter is counted as what it is.
  std::vector<uint8_t> plain(box.size() - kSealedOverhead);
  if (!crypto::xaead_open(plain.data(), box.subspan(kSealedHeaderSize), nonce, ad, key_.span()))
    return reject(SealedError::kAuthFailed);
  if (counter <= highest_received_) return reject(SealedError::kReplay);
  highest_received_ = counter;
  ++opened_;
  if (why) *why = SealedError::kOk;
  return plain;
}

uint64_t SealedChannel::rejected_total() const {
  uint64_t n = 0;
  for (uint64_t r : rejected_) n += r;
  return n;
}

}  // namespace meshwg::control
