// One in-process WireGuard node for the device tests: a fake TUN and UDP bind (fakes.h), a
// Device, its UAPI front end, and a fresh key pair. Configured through UAPI `set` bodies, as
// wg(8) would configure it.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "control/device_uapi.h"
#include "control/uapi.h"
#include "fakes.h"

namespace meshwg::testing {

struct Node {
  // vnet: the TUN carries virtio-net headers (offloads), as a Linux TUN with IFF_VNET_HDR.
  Node(FakeNet& net, FakeClock& clock, const std::string& ip, bool vnet = false,
       const dataplane::DeviceOptions& opts = {})
      : tun(1420, vnet), bind(net, ip), dev(tun, bind, clock, opts), uapi(dev) {
    crypto::x25519_generate(priv.span());
    EXPECT_TRUE(crypto::x25519_public(pub, priv.span()));
  }
  // Applies a UAPI set body; returns 0 or the errno the UAPI would answer.
  int set(const std::string& body) {
    control::ParseError err;
    auto req = control::parse_set(body, err);
    EXPECT_TRUE(req) << err.message;
    return req ? uapi.apply_set(*req) : err.errno_value;
  }
  FakeTun tun;
  FakeBind bind;
  dataplane::Device dev;
  control::DeviceUapi uapi;
  crypto::Key priv;
  crypto::PublicKey pub{};
};

}  // namespace meshwg::testing
