// MAC1/MAC2 and cookie replies (whitepaper §5.4.4 and §5.4.7): mac1 proves knowledge of the
// responder's public key; under load a responder demands mac2, keyed by a cookie it sends
// sealed with XChaCha20-Poly1305, derived from a secret rotated every two minutes and the
// sender's IP address and port.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>

#include "crypto/primitives.h"
#include "dataplane/messages.h"

namespace meshwg::crypto {

using Instant = std::chrono::steady_clock::time_point;

// Responder side, one per device (keyed by the local public key).
class CookieChecker {
 public:
  enum class Result { kInvalidMac1, kValidMac1, kValidMac2 };

  void init(const PublicKey& local_public);  // mac1 key = HASH("mac1----" || pub), etc.
  // msg is a whole initiation or response. src is Endpoint::key_bytes (address || port).
  // Checks mac1 always, and mac2 when check_mac2 is set.
  Result check(std::span<const uint8_t> msg, std::span<const uint8_t> src, bool check_mac2,
               Instant now);
  // Builds a cookie reply to msg (whose mac1 was valid), addressed to sender_index.
  void create_reply(dataplane::MessageCookieReply& out, std::span<const uint8_t> msg,
                    uint32_t sender_index, std::span<const uint8_t> src, Instant now);

 private:
  void cookie_for(uint8_t out[16], std::span<const uint8_t> src, Instant now);
  Key mac1_key_;
  Key cookie_key_;
  Key secret_;
  Instant secret_birth_{};
  bool secret_set_ = false;
};

// Initiator side, one per peer (keyed by the remote public key).
class CookieGenerator {
 public:
  void init(const PublicKey& remote_public);
  // Fills mac1 and (if a cookie younger than 120 s is held) mac2 of an initiation or
  // response in place; otherwise mac2 is zero.
  void add_macs(std::span<uint8_t> msg, Instant now);
  // Decrypts a cookie reply (AD = the last mac1 sent). Returns false if it does not verify
  // or no message was sent that it could answer.
  [[nodiscard]] bool consume_reply(const dataplane::MessageCookieReply& reply, Instant now);

 private:
  Key mac1_key_;
  Key cookie_key_;
  Secret<16> cookie_;
  Instant cookie_birth_{};
  bool have_cookie_ = false;
  uint8_t last_mac1_[16] = {};
  bool have_last_mac1_ = false;
};

}  // namespace meshwg::crypto
