// libFuzzer target for the WireGuard message parser and handshake consumers: datagrams reach
// a configured device exactly as from the network. To get past mac1 (which random bytes
// never satisfy), some inputs are applied as a mask over a valid initiation whose mac1 is then
// recomputed, so the Noise decryption and the peer lookup see hostile but authentic-looking
// messages. Invariants: no crash, no UB, and no session from a message that failed.
#include <cstdint>
#include <cstring>
#include <memory>

#include "control/device_uapi.h"
#include "control/uapi.h"
#include "crypto/cookie.h"
#include "crypto/noise.h"
#include "tests/dataplane/fakes.h"

using namespace meshwg;

namespace {

struct World {
  testing::FakeNet net;
  testing::FakeClock clock;
  testing::FakeTun tun;
  testing::FakeBind bind{net, "10.0.0.1"};
  std::unique_ptr<dataplane::Device> dev;
  crypto::LocalStatic self, other;
  crypto::Handshake other_hs;  // the other side, to mint valid initiations
  crypto::CookieGenerator other_cookie;

  World() {
    (void)crypto::init();
    dataplane::DeviceOptions opts;  // small pools: a fuzz input handles one datagram
    opts.tx_buffers = opts.rx_buffers = 64;
    dev = std::make_unique<dataplane::Device>(tun, bind, clock, opts);
    crypto::Key k1, k2;
    crypto::x25519_generate(k1.span());
    crypto::x25519_generate(k2.span());
    self.set(k1.span());
    other.set(k2.span());
    control::DeviceUapi uapi(*dev);
    control::ParseError err;
    auto req = control::parse_set("private_key=" + control::to_hex(k1.span()) +
                                      "\npublic_key=" + control::to_hex(other.public_key) +
                                      "\nallowed_ip=10.10.0.0/16\nallowed_ip=fd00::/64\n",
                                  err);
    if (!req || uapi.apply_set(*req) != 0) __builtin_trap();
    crypto::Key zero;
    if (!other_hs.set_keys(other, self.public_key, zero.span())) __builtin_trap();
    other_cookie.init(self.public_key);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  if (size < 1) return 0;
  const uint8_t mode = data[0] % 3;
  std::vector<uint8_t> msg(data + 1, data + size);
  const auto from = *dataplane::Endpoint::parse("10.0.0.2:51820");
  w.clock.advance(std::chrono::milliseconds(30));  // lets consecutive initiations pass the flood guard
  switch (mode) {
    case 0:  // raw datagram
      w.dev->receive_now(msg, from, (size & 1) != 0);
      break;
    case 1: {  // a valid initiation, XOR-masked by the input, mac1 recomputed
      dataplane::MessageInitiation init{};
      if (!w.other_hs.create_initiation(init, w.other, 1234,
                                        crypto::tai64n_from(w.clock.wall())))
        return 0;
      auto* b = reinterpret_cast<uint8_t*>(&init);
      for (size_t i = 0; i < msg.size() && i < 116; ++i) b[i] ^= msg[i];
      std::span<uint8_t> bytes(b, sizeof(init));
      w.other_cookie.add_macs(bytes, w.clock.now());
      std::vector<uint8_t> v(bytes.begin(), bytes.end());
      w.dev->receive_now(v, from, false);
      break;
    }
    case 2: {  // a response consumed by a handshake waiting for one
      crypto::Handshake hs;
      crypto::Key zero;
      if (!hs.set_keys(w.other, w.self.public_key, zero.span())) return 0;
      dataplane::MessageInitiation init{};
      if (!hs.create_initiation(init, w.other, 99, crypto::tai64n_from(w.clock.wall()))) return 0;
      dataplane::MessageResponse resp{};
      if (!msg.empty()) std::memcpy(&resp, msg.data(), std::min(msg.size(), sizeof(resp)));
      crypto::SessionKeys keys;
      if (hs.consume_response(resp, w.other) && !hs.derive_session(keys)) __builtin_trap();
      break;
    }
  }
  return 0;
}
