// libFuzzer target for the config files (control/mesh_config.cc): the mesh and the server
// parser on the same bytes. Neither may crash; every error must read "fuzz:LINE: KEY: ..."
// in printable ASCII, and every accepted config must keep the documented invariants.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "control/mesh_config.h"
#include "fuzz_check.h"

using namespace meshwg;
using namespace meshwg::control;

namespace {

void check_error(const ConfigError& err) {
  const std::string prefix = "fuzz:" + std::to_string(err.line) + ": " + err.key + ": ";
  CHECK(err.file == "fuzz");
  CHECK(!err.key.empty());
  CHECK(err.message.starts_with(prefix));
  CHECK(err.message.size() > prefix.size());
  for (const char c : err.message) CHECK(c >= 0x20 && c < 0x7f);  // no log injection
}

// Lines of text, counted as the parser counts them (for line-number bounds).
size_t count_lines(std::string_view text) {
  size_t n = 1;
  for (const char c : text) n += c == '\n';
  return n;
}

void check_host_port(const HostPort& hp) {
  CHECK(hp.port != 0);
  CHECK(!hp.host.empty());
  if (hp.address) CHECK(hp.address->valid() && hp.address->port() == hp.port);
}

void check_mesh(const MeshConfig& c, size_t lines) {
  CHECK(!c.interface.private_key.is_zero());
  CHECK(c.interface.line >= 1 && c.interface.line <= lines);
  CHECK(c.peers.size() <= kMaxConfigPeers);
  for (const InterfaceAddress& a : c.interface.addresses)
    CHECK((a.addr.family == 4 && a.cidr <= 32) || (a.addr.family == 6 && a.cidr <= 128));
  if (c.interface.mtu) CHECK(*c.interface.mtu >= 576 && *c.interface.mtu <= 65535);
  for (const PeerConfig& p : c.peers) {
    CHECK(p.line >= 1 && p.line <= lines);
    if (p.endpoint) check_host_port(*p.endpoint);
    for (const dataplane::IpPrefix& a : p.allowed_ips) {
      dataplane::IpPrefix m = a;
      m.mask();
      CHECK(m == a && a.cidr <= a.addr.size() * 8 && a.addr.size() != 0);
    }
  }
  if (c.wgstun) check_host_port(c.wgstun->endpoint);
  if (c.relay) check_host_port(c.relay->endpoint);
}

void check_server(const ServerConfig& c) {
  CHECK(!c.private_key.is_zero());
  CHECK(c.stun || c.wgstun || c.relay);
  for (const auto* e : {&c.stun, &c.wgstun, &c.relay})
    if (*e) CHECK((*e)->valid() && (*e)->port() != 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Above the 1 MiB bound the parsers only say "too large"; keep the fuzzer on real inputs.
  if (size > 64 * 1024) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const size_t lines = count_lines(text);

  ConfigError err;
  if (const auto mesh = parse_mesh_config(text, "fuzz", err)) {
    check_mesh(*mesh, lines);
  } else {
    check_error(err);
    CHECK(err.line <= lines);
  }

  ConfigError serr;
  if (const auto server = parse_server_config(text, "fuzz", serr)) {
    check_server(*server);
  } else {
    check_error(serr);
    CHECK(serr.line <= lines);
  }
  return 0;
}
