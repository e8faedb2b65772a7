// libFuzzer target for control/stun.cc's decoder (RFC 8489 Binding): raw datagrams, and the
// same datagram with its trailing FINGERPRINT recomputed so mutations get past the CRC.
// Invariants: no crash or UB; a failure names one specific error (with a bounded, duplicate-
// free list of unknown comprehension-required types); what decodes is sane (printable text,
// codes 300..699, offsets inside the datagram) and survives re-encoding: the encoders'
// output for the same transaction decodes to the same address, code, reason and software.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "control/stun.h"
#include "fuzz_check.h"

using namespace meshwg;
using namespace meshwg::control;

namespace {

bool printable(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

void check_failure(const StunDecodeFailure& f, size_t size) {
  CHECK(f.error != StunError::kOk && f.error < StunError::kCount);
  CHECK(std::string(stun_error_name(f.error)) != "unknown error");
  // The header passed exactly when the failure is about attributes.
  const bool header_error = f.error == StunError::kTooShort || f.error == StunError::kNotStun ||
                            f.error == StunError::kBadCookie || f.error == StunError::kBadLength ||
                            f.error == StunError::kLengthMismatch ||
                            f.error == StunError::kNotBinding;
  CHECK(f.cls.has_value() == !header_error);
  if (f.cls) CHECK(size >= kStunHeaderSize);
  if (f.error != StunError::kUnknownRequired) {
    CHECK(f.unknown_required.empty());
    return;
  }
  CHECK(!f.unknown_required.empty() && f.unknown_required.size() <= kStunMaxUnknownReported);
  for (size_t i = 0; i < f.unknown_required.size(); ++i) {
    CHECK(f.unknown_required[i] < 0x8000);
    for (size_t j = 0; j < i; ++j) CHECK(f.unknown_required[i] != f.unknown_required[j]);
  }
  // A server must be able to answer it.
  const auto reply = stun_encode_binding_error(f.txid, 420, "Unknown Attribute",
                                               f.unknown_required, {.software = "meshwg"});
  CHECK(!reply.empty());
  StunDecodeFailure rf;
  const auto r = stun_decode(reply, rf);
  CHECK(r && r->error && r->error->code == 420 && r->unknown_attributes == f.unknown_required);
}

void check_reencode(const StunMessage& m) {
  const std::string software = m.software.value_or("").substr(0, kStunMaxTextEncode);
  const StunEncodeOptions opt{.software = software};
  std::vector<uint8_t> out;
  switch (m.cls) {
    case StunClass::kRequest:
    case StunClass::kIndication:
      out = stun_encode_binding_request(m.txid, opt);
      break;
    case StunClass::kSuccess:
      if (!m.mapped_address()) return;
      out = stun_encode_binding_success(m.txid, *m.mapped_address(), opt);
      break;
    case StunClass::kError: {
      const std::string reason = m.error->reason.substr(0, kStunMaxTextEncode);
      out = stun_encode_binding_error(m.txid, m.error->code, reason, m.unknown_attributes, opt);
      break;
    }
  }
  CHECK(!out.empty());
  StunDecodeFailure f;
  const auto r = stun_decode(out, f);
  CHECK(r.has_value());
  CHECK(r->txid == m.txid);
  CHECK(r->fingerprint);
  CHECK(r->software.value_or("") == software);
  if (m.cls == StunClass::kSuccess) {
    CHECK(r->cls == StunClass::kSuccess && r->xor_mapped);
    // The encoder reports a v4-mapped IPv6 address as IPv4; the port always survives.
    CHECK(r->xor_mapped->port() == m.mapped_address()->port());
    if (r->xor_mapped->ip().family == m.mapped_address()->ip().family)
      CHECK(r->xor_mapped->ip() == m.mapped_address()->ip());
  } else if (m.cls == StunClass::kError) {
    CHECK(r->cls == StunClass::kError && r->error);
    CHECK(r->error->code == m.error->code);
    CHECK(r->error->reason == m.error->reason.substr(0, kStunMaxTextEncode));
    if (m.error->code == 420) CHECK(r->unknown_attributes == m.unknown_attributes);
  } else {
    CHECK(r->cls == StunClass::kRequest);
  }
}

void check_one(const std::vector<uint8_t>& d) {
  StunDecodeFailure fail;
  const auto m = stun_decode(d, fail);
  if (!m) {
    check_failure(fail, d.size());
    return;
  }
  CHECK(fail.error == StunError::kOk);
  CHECK(d.size() >= kStunHeaderSize && d.size() % 4 == 0);
  if (m->software) CHECK(printable(*m->software) && m->software->size() <= kStunMaxTextDecode);
  if (m->error) {
    CHECK(m->error->code >= 300 && m->error->code <= 699);
    CHECK(printable(m->error->reason) && m->error->reason.size() <= kStunMaxTextDecode);
  }
  if (m->cls == StunClass::kError) CHECK(m->error.has_value());
  CHECK(m->unknown_attributes.size() <= kStunMaxUnknownReported);
  if (m->xor_mapped) CHECK(m->xor_mapped->valid());
  if (m->mapped) CHECK(m->mapped->valid());
  if (m->integrity_offset) {
    CHECK(*m->integrity_offset >= kStunHeaderSize);
    CHECK(*m->integrity_offset + 24 <= d.size());
    static const uint8_t kKey[] = {'f', 'u', 'z', 'z'};
    (void)stun_check_integrity(d, *m, kKey);  // must not crash; the answer is unknowable
  }
  check_reencode(*m);
}

// When the datagram ends in a FINGERPRINT attribute, a copy with the right CRC.
bool fix_fingerprint(std::vector<uint8_t>& d) {
  const size_t n = d.size();
  if (n < kStunHeaderSize + 8 || d[n - 8] != 0x80 || d[n - 7] != 0x28 || d[n - 6] != 0 ||
      d[n - 5] != 4)
    return false;
  const uint32_t crc =
      stun_crc32(std::span<const uint8_t>(d).first(n - 8)) ^ kStunFingerprintXor;
  d[n - 4] = uint8_t(crc >> 24);
  d[n - 3] = uint8_t(crc >> 16);
  d[n - 2] = uint8_t(crc >> 8);
  d[n - 1] = uint8_t(crc);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // UDP datagrams the client reads are at most 2048 bytes
  std::vector<uint8_t> d(data, data + size);
  check_one(d);
  if (fix_fingerprint(d)) check_one(d);
  return 0;
}
