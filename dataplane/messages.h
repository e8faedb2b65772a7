// WireGuard wire messages and protocol constants (whitepaper §5.4 and §6; names follow the
// kernel's messages.h). Every integer on the wire is little-endian. The structs are packed
// byte layouts; parse with the size checks below, never by casting unchecked input.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace meshwg::dataplane {

using namespace std::chrono_literals;

// ---- timers (whitepaper §6.1) ----
inline constexpr auto kRekeyAfterTime = 120s;
inline constexpr auto kRejectAfterTime = 180s;
inline constexpr auto kRekeyAttemptTime = 90s;
inline constexpr auto kRekeyTimeout = 5s;
inline constexpr auto kRekeyTimeoutJitterMax = 334ms;
inline constexpr auto kKeepaliveTimeout = 10s;
inline constexpr auto kCookieRefreshTime = 120s;
inline constexpr auto kUnderLoadAfterTime = 1s;
inline constexpr int kMaxTimerHandshakes = 90 / 5;

// ---- message counts ----
inline constexpr uint64_t kRekeyAfterMessages = uint64_t{1} << 60;
inline constexpr uint64_t kReplayWindowBits = 8192;
// The last counter a sender may use: leaves room for the receiver's window (kernel value).
inline constexpr uint64_t kRejectAfterMessages = UINT64_MAX - (kReplayWindowBits - 64) - 1;

// ---- limits ----
inline constexpr size_t kMaxStagedPackets = 128;
inline constexpr size_t kMaxQueuedHandshakes = 4096;
inline constexpr size_t kMaxPeers = size_t{1} << 20;

// ---- message types and sizes ----
enum class MessageType : uint32_t {
  kInitiation = 1,
  kResponse = 2,
  kCookieReply = 3,
  kTransport = 4,
};

inline constexpr size_t kInitiationSize = 148;
inline constexpr size_t kResponseSize = 92;
inline constexpr size_t kCookieReplySize = 64;
inline constexpr size_t kTransportHeaderSize = 16;
inline constexpr size_t kTagSize = 16;
inline constexpr size_t kKeepaliveSize = kTransportHeaderSize + kTagSize;
inline constexpr size_t kPaddingMultiple = 16;
// Outer overhead of one transport message: header + tag (UDP/IP headers come on top).
inline constexpr size_t kTransportOverhead = kTransportHeaderSize + kTagSize;

#pragma pack(push, 1)
struct MessageMacs {
  uint8_t mac1[16];
  uint8_t mac2[16];
};

struct MessageInitiation {
  uint32_t type;  // 1
  uint32_t sender;
  uint8_t ephemeral[32];
  uint8_t encrypted_static[32 + 16];
  uint8_t encrypted_timestamp[12 + 16];
  MessageMacs macs;
};

struct MessageResponse {
  uint32_t type;  // 2
  uint32_t sender;
  uint32_t receiver;
  uint8_t ephemeral[32];
  uint8_t encrypted_nothing[16];
  MessageMacs macs;
};

struct MessageCookieReply {
  uint32_t type;  // 3
  uint32_t receiver;
  uint8_t nonce[24];
  uint8_t encrypted_cookie[16 + 16];
};

struct MessageTransportHeader {
  uint32_t type;  // 4
  uint32_t receiver;
  uint64_t counter;
};
#pragma pack(pop)

static_assert(sizeof(MessageInitiation) == kInitiationSize);
static_assert(sizeof(MessageResponse) == kResponseSize);
static_assert(sizeof(MessageCookieReply) == kCookieReplySize);
static_assert(sizeof(MessageTransportHeader) == kTransportHeaderSize);

// Little-endian helpers (x86 and ARM are LE, but keep the wire format explicit).
inline uint32_t load_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t load_le64(const uint8_t* p) {
  return uint64_t(load_le32(p)) | uint64_t(load_le32(p + 4)) << 32;
}
inline void store_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void store_le64(uint8_t* p, uint64_t v) {
  store_le32(p, uint32_t(v));
  store_le32(p + 4, uint32_t(v >> 32));
}

// Classifies a datagram by its type word and exact length. Returns 0 when the datagram is not
// a well-formed WireGuard message (wrong type, reserved bytes set, or wrong size): the caller
// drops it and counts the reason.
inline uint32_t classify(const uint8_t* data, size_t len) {
  if (len < 4) return 0;
  const uint32_t type = load_le32(data);  // reserved bytes must be zero: compare the whole word
  switch (type) {
    case 1: return len == kInitiationSize ? 1 : 0;
    case 2: return len == kResponseSize ? 2 : 0;
    case 3: return len == kCookieReplySize ? 3 : 0;
    case 4: return len >= kKeepaliveSize ? 4 : 0;
    default: return 0;
  }
}

// Padded plaintext length: round up to 16 but never past the MTU in effect (netns.sh test 4).
inline size_t padded_length(size_t len, size_t mtu) {
  size_t padded = (len + kPaddingMultiple - 1) & ~(kPaddingMultiple - 1);
  if (mtu != 0 && padded > mtu) padded = len > mtu ? len : mtu;
  return padded;
}

}  // namespace meshwg::dataplane
