// libFuzzer target for the UAPI text protocol (wireguard.com/xplatform): control/uapi.cc's
// parse_set on raw bytes, with invariants and a get→set round trip on success (and the
// get reply read back by parse_get), parse_get on the raw bytes, and
// control/uapi_server.cc's UapiServer::serve() on the same bytes over a socketpair, and
// control/status.cc's merge_mesh_status (the mesh status document) on them too.
//
// Inputs may be framed like a request ("set=1\n...\n\n"): the parser then sees the body, so
// one corpus drives both halves.
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>

#include "control/status.h"
#include "control/uapi.h"
#include "control/uapi_server.h"
#include "fuzz_check.h"

using namespace meshwg;
using namespace meshwg::control;

namespace {

class FakeHandler : public UapiHandler {
 public:
  int apply_set(const SetRequest& req) override { return req.peers.size() > 3 ? EINVAL : 0; }
  DeviceSnapshot snapshot() override {
    DeviceSnapshot s;
    s.listen_port = 51820;
    s.peers.emplace_back();
    s.peers[0].allowed_ips.push_back(*dataplane::IpPrefix::parse("10.0.0.1/32"));
    return s;
  }
};

bool masked(const dataplane::IpPrefix& p) {
  dataplane::IpPrefix m = p;
  m.mask();
  return m == p && (p.addr.family == 4 || p.addr.family == 6) && p.cidr <= p.addr.size() * 8;
}

// Drops the keys a get reply has but a set does not accept.
std::string get_to_set(const std::string& get) {
  std::string body;
  size_t pos = 0;
  while (pos < get.size()) {
    const size_t nl = get.find('\n', pos);
    const std::string_view line(get.data() + pos, nl - pos);
    pos = nl + 1;
    if (line.starts_with("last_handshake_time_") || line.starts_with("tx_bytes=") ||
        line.starts_with("rx_bytes="))
      continue;
    body.append(line);
    body += '\n';
  }
  return body;
}

void check_parse(std::string_view body) {
  ParseError err;
  const auto r = parse_set(body, err);
  if (!r) {
    CHECK(err.errno_value == EINVAL || err.errno_value == EPROTO);
    CHECK(err.line >= 1);
    CHECK(err.message.starts_with("line " + std::to_string(err.line) + ": "));
    for (const char c : err.message) CHECK(c >= 0x20 && c < 0x7f);  // no log injection
    return;
  }

  // Everything parsed is well-formed, and survives get serialisation and re-parsing.
  DeviceSnapshot snap;
  snap.private_key = r->private_key;
  snap.listen_port = r->listen_port.value_or(0);
  snap.fwmark = r->fwmark.value_or(0);
  for (const PeerChange& p : r->peers) {
    PeerSnapshot s;
    s.public_key = p.public_key;
    if (p.preshared_key) s.preshared_key = *p.preshared_key;
    if (p.endpoint) {
      CHECK(p.endpoint->valid());
      s.endpoint = p.endpoint;
    }
    s.persistent_keepalive = p.persistent_keepalive.value_or(0);
    for (const AllowedIpChange& a : p.allowed_ips) {
      CHECK(masked(a.prefix));
      if (!a.remove) s.allowed_ips.push_back(a.prefix);
    }
    snap.peers.push_back(s);
  }
  const std::string get = serialize_get(snap);
  CHECK(get.empty() || get.back() == '\n');
  CHECK(get.find("\n\n") == std::string::npos);
  // What `meshwg status` reads back is what was written.
  ParseError gerr;
  const auto back = parse_get(get, gerr);
  CHECK(back.has_value());
  CHECK(back->peers.size() == snap.peers.size());
  CHECK(back->listen_port == snap.listen_port && back->fwmark == snap.fwmark);
  for (size_t i = 0; i < snap.peers.size(); ++i) {
    CHECK(back->peers[i].public_key == snap.peers[i].public_key);
    CHECK(back->peers[i].allowed_ips == snap.peers[i].allowed_ips);
    CHECK(back->peers[i].endpoint.has_value() ==
          (snap.peers[i].endpoint && snap.peers[i].endpoint->valid()));
  }

  ParseError err2;
  const auto r2 = parse_set(get_to_set(get), err2);
  CHECK(r2.has_value());
  const bool had_priv = r->private_key && !r->private_key->is_zero();
  CHECK(r2->private_key.has_value() == had_priv);
  if (had_priv) CHECK(r2->private_key->b == r->private_key->b);
  CHECK(r2->listen_port.value_or(0) == snap.listen_port);
  CHECK(r2->fwmark.value_or(0) == snap.fwmark);
  CHECK(r2->peers.size() == snap.peers.size());
  for (size_t i = 0; i < snap.peers.size(); ++i) {
    const PeerChange& p = r2->peers[i];
    const PeerSnapshot& s = snap.peers[i];
    CHECK(p.public_key == s.public_key);
    CHECK(p.preshared_key && p.preshared_key->b == s.preshared_key.b);
    CHECK(p.endpoint.has_value() == s.endpoint.has_value());
    if (s.endpoint) CHECK(p.endpoint->same_remote(*s.endpoint));
    CHECK(p.persistent_keepalive.value_or(0xffff + 1) == s.persistent_keepalive);
    CHECK(p.allowed_ips.size() == s.allowed_ips.size());
    for (size_t j = 0; j < s.allowed_ips.size(); ++j)
      CHECK(!p.allowed_ips[j].remove && p.allowed_ips[j].prefix == s.allowed_ips[j]);
  }
}

void check_serve(std::string_view input) {
  static FakeHandler handler;
  static UapiServer server("fuzz0", handler, "/nonexistent");  // never listens
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  // Replies are drained concurrently so serve() never blocks on a full socket buffer.
  std::string out;
  std::thread reader([&] {
    char buf[8192];
    ssize_t n;
    while ((n = read(sv[0], buf, sizeof(buf))) > 0) out.append(buf, size_t(n));
  });
  // Inputs are small (max_len), far below the socket buffer, so this write cannot block.
  size_t off = 0;
  while (off < input.size()) {
    const ssize_t n = send(sv[0], input.data() + off, input.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += size_t(n);
  }
  shutdown(sv[0], SHUT_WR);
  server.serve(sv[1]);
  close(sv[1]);
  reader.join();
  close(sv[0]);
  // Every reply ends with its empty line, and a reply is only ever written whole.
  CHECK(out.empty() || out.ends_with("\n\n"));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  if (!crypto::init()) abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  std::string_view body = in;
  if (body.starts_with("set=1\n")) {
    body.remove_prefix(6);
    if (const size_t end = body.find("\n\n"); end != std::string_view::npos)
      body = body.substr(0, end + 1);
  }
  check_parse(body);
  check_serve(in);
  // The get-reply reader on raw bytes: never crashes; a failure names a line and an errno.
  ParseError gerr;
  if (!parse_get(in, gerr)) CHECK(gerr.errno_value != 0 && gerr.line >= 1);
  // `meshwg status` also reads the control plane's status document: a rejected one must
  // leave the status untouched, an accepted one must serialise.
  {
    InterfaceStatus st;
    st.interface = "fz0";
    const std::string before = to_json(st).dump();
    if (merge_mesh_status(st, in))
      (void)to_json(st).dump();
    else
      CHECK(to_json(st).dump() == before);
  }
  return 0;
}
