// libFuzzer target for control/wgstun_server.cc's responder. The first byte picks a mode:
//   even: the rest is an outer datagram from the network (any type, any size);
//   odd:  the rest is an inner packet, sealed on an established session of a client made at
//         start-up, so mutations reach the IPv4/IPv6/UDP/ICMP/STUN parsing inside the tunnel.
// Invariants: no crash or UB; at most one datagram answers a datagram; the client table stays
// within its bound; an answer to an inner packet decrypts with the client's keys and is an IP
// packet from a reserved address to the inner source with valid checksums (UDP from port 3478
// carrying a STUN response whose mapped address is the client's outer endpoint, or an echo
// reply); an outer datagram is answered only by a handshake response or a cookie reply.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "control/stun.h"
#include "control/wgstun_server.h"
#include "crypto/aead.h"
#include "crypto/noise.h"
#include "fuzz_check.h"

using namespace meshwg;
using namespace meshwg::control;

namespace {

using Bytes = std::vector<uint8_t>;
using Instant = std::chrono::steady_clock::time_point;

struct Sink final : WgStunSink {
  std::vector<std::pair<Bytes, dataplane::Endpoint>> sent;
  bool send(std::span<const uint8_t> d, const dataplane::Endpoint& to) override {
    sent.emplace_back(Bytes(d.begin(), d.end()), to);
    return true;
  }
};

uint16_t naive_sum(const Bytes& d) {  // RFC 1071 one's-complement sum, not complemented
  uint32_t s = 0;
  for (size_t i = 0; i < d.size(); i += 2) s += uint32_t(d[i]) << 8 | (i + 1 < d.size() ? d[i + 1] : 0);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(s);
}

constexpr size_t kMaxClients = 4;
const Instant kNow = Instant{} + std::chrono::hours(1);  // fixed: sessions never age

struct World {
  Sink sink;
  std::unique_ptr<WgStunResponder> r;
  crypto::LocalStatic client;
  crypto::SessionKeys keys;
  uint64_t counter = 0;
  dataplane::Endpoint outer = *dataplane::Endpoint::parse("198.51.100.7:40123");

  World() {
    CHECK(crypto::init());
    uint8_t k[32];
    for (int i = 0; i < 32; ++i) k[i] = uint8_t(i + 1);
    WgStunOptions opt;
    opt.max_clients = kMaxClients;
    opt.load_initiations_per_second = 1u << 30;
    r = std::make_unique<WgStunResponder>(std::span<const uint8_t, 32>(k), sink, opt);
    for (int i = 0; i < 32; ++i) k[i] = uint8_t(100 + i);
    client.set(std::span<const uint8_t, 32>(k));
    crypto::Handshake hs;
    const crypto::Key no_psk;
    CHECK(hs.set_keys(client, r->public_key(), no_psk.span()));
    dataplane::MessageInitiation init{};
    CHECK(hs.create_initiation(init, client, 7, crypto::tai64n_now()));
    crypto::CookieGenerator cg;
    cg.init(r->public_key());
    cg.add_macs({reinterpret_cast<uint8_t*>(&init), sizeof(init)}, kNow);
    r->receive({reinterpret_cast<const uint8_t*>(&init), sizeof(init)}, outer, kNow);
    CHECK(sink.sent.size() == 1 && sink.sent[0].first.size() == dataplane::kResponseSize);
    dataplane::MessageResponse resp;
    std::memcpy(&resp, sink.sent[0].first.data(), sizeof(resp));
    CHECK(hs.consume_response(resp, client) && hs.derive_session(keys));
    sink.sent.clear();
  }

  Bytes seal(const uint8_t* p, size_t n) {
    const size_t padded = dataplane::padded_length(n, 0);
    Bytes out(16 + padded + 16, 0);
    dataplane::store_le32(out.data(), 4);
    dataplane::store_le32(out.data() + 4, keys.remote_index);
    dataplane::store_le64(out.data() + 8, counter);
    if (n) std::memcpy(out.data() + 16, p, n);
    crypto::transport_seal(out.data() + 16, {out.data() + 16, padded}, counter++, keys.send.span());
    return out;
  }
};

World& world() {
  static World w;
  return w;
}

void check_inner_reply(const Bytes& request, const Bytes& d) {
  World& w = world();
  CHECK(d.size() >= 32 && dataplane::load_le32(d.data()) == 4);
  CHECK(dataplane::load_le32(d.data() + 4) == w.keys.local_index);
  Bytes p(d.size() - 32);
  CHECK(crypto::transport_open(p.data(), {d.data() + 16, d.size() - 16},
                               dataplane::load_le64(d.data() + 8), w.keys.recv.span()));
  const bool v6 = p.size() >= 40 && p[0] >> 4 == 6;
  const size_t hl = v6 ? 40 : 20;
  CHECK(p.size() >= hl + 8);
  const size_t total = v6 ? 40 + (size_t(p[4]) << 8 | p[5]) : size_t(p[2]) << 8 | p[3];
  CHECK(total >= hl + 8 && total <= p.size());
  // Padding (whitepaper §5.4.6): to 16, but never past what the request itself took.
  auto round16 = [](size_t n) { return (n + 15) & ~size_t{15}; };
  CHECK(p.size() == round16(total) || p.size() == total || p.size() == round16(request.size()));
  CHECK(request.size() >= hl && (request[0] >> 4) == (v6 ? 6 : 4));
  const uint8_t proto = v6 ? p[6] : p[9];
  const Bytes src(p.begin() + (v6 ? 8 : 12), p.begin() + (v6 ? 24 : 16));
  const Bytes dst(p.begin() + (v6 ? 24 : 16), p.begin() + (v6 ? 40 : 20));
  const Bytes req_src(request.begin() + (v6 ? 8 : 12), request.begin() + (v6 ? 24 : 16));
  CHECK(dst == req_src);
  CHECK(src == (v6 ? Bytes(kWgStunAddress6.begin(), kWgStunAddress6.end())
                   : Bytes(kWgStunAddress4.begin(), kWgStunAddress4.end())));
  if (!v6) CHECK(p[0] == 0x45 && naive_sum(Bytes(p.begin(), p.begin() + 20)) == 0xffff);
  const Bytes l4(p.begin() + ptrdiff_t(hl), p.begin() + ptrdiff_t(total));
  Bytes ph = src;
  ph.insert(ph.end(), dst.begin(), dst.end());
  ph.insert(ph.end(), {0, 0, uint8_t(l4.size() >> 8), uint8_t(l4.size()), 0, proto});
  if (proto == 1) {
    CHECK(!v6 && l4[0] == 0 && naive_sum(l4) == 0xffff);
    return;
  }
  Bytes all = ph;
  all.insert(all.end(), l4.begin(), l4.end());
  // (v4's pseudo-header is src, dst, 0, proto, len: the same sum as the v6 layout used here.)
  CHECK(naive_sum(all) == 0xffff);
  if (proto == 58) {
    CHECK(v6 && l4[0] == 129);
    return;
  }
  CHECK(proto == 17);
  CHECK((l4[0] << 8 | l4[1]) == kWgStunPort);
  StunDecodeFailure fail;
  const auto m = stun_decode(Bytes(l4.begin() + 8, l4.end()), fail);
  CHECK(m);
  if (m->cls == StunClass::kSuccess) {
    CHECK(m->xor_mapped && m->xor_mapped->str() == w.outer.str());
  } else {
    CHECK(m->cls == StunClass::kError && m->error && m->error->code == 420);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 4096) return 0;
  World& w = world();
  w.sink.sent.clear();
  const Bytes rest(data + 1, data + size);
  if (data[0] % 2 == 0) {
    w.r->receive(rest, w.outer, kNow);
    CHECK(w.sink.sent.size() <= 1);
    for (const auto& [d, to] : w.sink.sent) {
      const uint32_t type = dataplane::load_le32(d.data());
      CHECK((type == 2 && d.size() == dataplane::kResponseSize) ||
            (type == 3 && d.size() == dataplane::kCookieReplySize) ||
            type == 4);  // rest may be a transport packet the client's session accepts
    }
  } else {
    w.r->receive(w.seal(rest.data(), rest.size()), w.outer, kNow);
    CHECK(w.sink.sent.size() <= 1);
    // The client's session survives while the fuzzer's own initiations cannot evict it
    // (unconfirmed ones go first), so every answer is for it.
    for (const auto& [d, to] : w.sink.sent) check_inner_reply(rest, d);
  }
  CHECK(w.r->clients() <= kMaxClients);
  return 0;
}
