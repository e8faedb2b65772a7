// MAC1/MAC2 and cookie replies (whitepaper §5.4.4 mac fields, §5.4.7 cookie reply):
//   mac1 = MAC(HASH("mac1----" || Spub_receiver), msg[0 .. len-32])
//   mac2 = MAC(cookie, msg[0 .. len-16]),  cookie = MAC(Rm, source address bytes)
//   reply = XAEAD(HASH("cookie--" || Spub_receiver), nonce24, cookie, AD = mac1 answered)
// MAC is keyed BLAKE2s with a 16-byte output; Rm is random and rotated every 120 s.
#include "crypto/cookie.h"

#include <cstddef>
#include <cstring>

namespace meshwg::crypto {

namespace {
constexpr char kLabelMac1[] = "mac1----";
constexpr char kLabelCookie[] = "cookie--";
constexpr size_t kLabelSize = 8;
// mac1 and mac2 are the last 32 bytes of every message that carries them.
constexpr size_t kMacsSize = 2 * kMacSize;

void label_key(Key& out, const char* label, const PublicKey& pub) {
  Blake2s(kHashSize)
      .update({reinterpret_cast<const uint8_t*>(label), kLabelSize})
      .update(pub)
      .final(out.span());
}

void mac(uint8_t out[kMacSize], ByteSpan key, ByteSpan data) {
  blake2s({out, kMacSize}, data, key);
}

bool expired(Instant birth, Instant now) {
  return now - birth >= dataplane::kCookieRefreshTime;
}
}  // namespace

// ---- CookieChecker ----

void CookieChecker::init(const PublicKey& local_public) {
  label_key(mac1_key_, kLabelMac1, local_public);
  label_key(cookie_key_, kLabelCookie, local_public);
}

void CookieChecker::cookie_for(uint8_t out[16], std::span<const uint8_t> src, Instant now) {
  // A cookie is only as good as the secret behind it: rotating Rm bounds how long an
  // attacker who once received a cookie for a spoofed address can keep using it.
  if (!secret_set_ || expired(secret_birth_, now)) {
    random_bytes(secret_.span());
    secret_birth_ = now;
    secret_set_ = true;
  }
  mac(out, secret_.span(), src);
}

CookieChecker::Result CookieChecker::check(std::span<const uint8_t> msg,
                                           std::span<const uint8_t> src, bool check_mac2,
                                           Instant now) {
  if (msg.size() < kMacsSize) return Result::kInvalidMac1;
  const size_t mac1_at = msg.size() - kMacsSize;
  const size_t mac2_at = msg.size() - kMacSize;

  uint8_t expect[kMacSize];
  mac(expect, mac1_key_.span(), msg.first(mac1_at));
  if (!equal_ct({expect, kMacSize}, msg.subspan(mac1_at, kMacSize))) return Result::kInvalidMac1;
  if (!check_mac2) return Result::kValidMac1;

  Secret<kMacSize> cookie;
  cookie_for(cookie.data(), src, now);
  mac(expect, cookie.span(), msg.first(mac2_at));
  return equal_ct({expect, kMacSize}, msg.subspan(mac2_at, kMacSize)) ? Result::kValidMac2
                                                                      : Result::kValidMac1;
}

void CookieChecker::create_reply(dataplane::MessageCookieReply& out, std::span<const uint8_t> msg,
                                 uint32_t sender_index, std::span<const uint8_t> src, Instant now) {
  // Callers answer only messages whose mac1 verified, so msg is at least kMacsSize long;
  // a shorter one has no mac1 to bind the reply to, and nothing sensible can be sent.
  if (msg.size() < kMacsSize) return;
  auto* bytes = reinterpret_cast<uint8_t*>(&out);
  dataplane::store_le32(bytes + offsetof(dataplane::MessageCookieReply, type),
                        static_cast<uint32_t>(dataplane::MessageType::kCookieReply));
  dataplane::store_le32(bytes + offsetof(dataplane::MessageCookieReply, receiver), sender_index);
  random_bytes(out.nonce);

  Secret<kMacSize> cookie;
  cookie_for(cookie.data(), src, now);
  // AD = the mac1 being answered: the reply is useless to anyone but the sender of that
  // message, and an attacker cannot replay it for another one.
  xaead_seal(out.encrypted_cookie, cookie.span(), std::span<const uint8_t, kXNonceSize>(out.nonce),
             msg.subspan(msg.size() - kMacsSize, kMacSize), cookie_key_.span());
}

// ---- CookieGenerator ----

void CookieGenerator::init(const PublicKey& remote_public) {
  label_key(mac1_key_, kLabelMac1, remote_public);
  label_key(cookie_key_, kLabelCookie, remote_public);
  cookie_.clear();
  have_cookie_ = false;
  have_last_mac1_ = false;
}

void CookieGenerator::add_macs(std::span<uint8_t> msg, Instant now) {
  if (msg.size() < kMacsSize) return;
  uint8_t* mac1 = msg.data() + msg.size() - kMacsSize;
  uint8_t* mac2 = mac1 + kMacSize;

  mac(mac1, mac1_key_.span(), msg.first(msg.size() - kMacsSize));
  // Kept for consume_reply: the cookie reply is sealed with this mac1 as AD.
  std::memcpy(last_mac1_, mac1, kMacSize);
  have_last_mac1_ = true;

  if (have_cookie_ && !expired(cookie_birth_, now)) {
    mac(mac2, cookie_.span(), msg.first(msg.size() - kMacSize));
  } else {
    std::memset(mac2, 0, kMacSize);
  }
}

bool CookieGenerator::consume_reply(const dataplane::MessageCookieReply& reply, Instant now) {
  if (!have_last_mac1_) return false;
  Secret<kMacSize> cookie;
  if (!xaead_open(cookie.data(), reply.encrypted_cookie,
                  std::span<const uint8_t, kXNonceSize>(reply.nonce), {last_mac1_, kMacSize},
                  cookie_key_.span())) {
    return false;
  }
  cookie_ = cookie;
  cookie_birth_ = now;
  have_cookie_ = true;
  // At most one reply per message sent (as the kernel does): a duplicate of this reply
  // cannot restart the cookie's 120 s lifetime.
  have_last_mac1_ = false;
  return true;
}

}  // namespace meshwg::crypto
