// `meshwg status` building blocks: parse_get against serialize_get (round trip) and against a
// reply written the way wireguard-go writes it; the path classification; the JSON schema.
#include <gtest/gtest.h>

#include <chrono>

#include "control/status.h"
#include "control/uapi.h"

namespace meshwg::control {
namespace {

using namespace std::chrono_literals;

crypto::PublicKey key_of(uint8_t fill) {
  crypto::PublicKey k;
  k.fill(fill);
  return k;
}

DeviceSnapshot sample() {
  DeviceSnapshot s;
  crypto::Key priv;
  priv.span()[0] = 0x41;
  priv.span()[31] = 0x7f;
  s.private_key = priv;
  s.listen_port = 51820;
  s.fwmark = 7;
  PeerSnapshot a;
  a.public_key = key_of(0x11);
  a.preshared_key.span()[5] = 9;
  a.endpoint = dataplane::Endpoint::parse("192.0.2.1:51820");
  a.last_handshake_sec = 1700000000;
  a.last_handshake_nsec = 123456789;
  a.rx_bytes = 1372;
  a.tx_bytes = 18446744073709551615ull;
  a.persistent_keepalive = 25;
  a.allowed_ips = {*dataplane::IpPrefix::parse("10.9.0.2/32"), *dataplane::IpPrefix::parse("fd00::/64")};
  PeerSnapshot b;  // never handshaked, no endpoint, no allowed IPs
  b.public_key = key_of(0x22);
  PeerSnapshot c;
  c.public_key = key_of(0x33);
  c.endpoint = dataplane::Endpoint::parse("[2001:db8::1]:4500");
  s.peers = {a, b, c};
  return s;
}

void expect_same(const DeviceSnapshot& x, const DeviceSnapshot& y) {
  ASSERT_EQ(x.private_key.has_value(), y.private_key.has_value());
  if (x.private_key) {
    EXPECT_TRUE(crypto::equal_ct(x.private_key->span(), y.private_key->span()));
  }
  EXPECT_EQ(x.listen_port, y.listen_port);
  EXPECT_EQ(x.fwmark, y.fwmark);
  ASSERT_EQ(x.peers.size(), y.peers.size());
  for (size_t i = 0; i < x.peers.size(); ++i) {
    const PeerSnapshot& p = x.peers[i];
    const PeerSnapshot& q = y.peers[i];
    EXPECT_EQ(p.public_key, q.public_key);
    EXPECT_TRUE(crypto::equal_ct(p.preshared_key.span(), q.preshared_key.span()));
    ASSERT_EQ(p.endpoint.has_value(), q.endpoint.has_value()) << i;
    if (p.endpoint) {
      EXPECT_EQ(p.endpoint->str(), q.endpoint->str());
    }
    EXPECT_EQ(p.last_handshake_sec, q.last_handshake_sec);
    EXPECT_EQ(p.last_handshake_nsec, q.last_handshake_nsec);
    EXPECT_EQ(p.rx_bytes, q.rx_bytes);
    EXPECT_EQ(p.tx_bytes, q.tx_bytes);
    EXPECT_EQ(p.persistent_keepalive, q.persistent_keepalive);
    EXPECT_EQ(p.allowed_ips, q.allowed_ips);
  }
}

TEST(ParseGet, ReadsBackWhatSerializeGetWrites) {
  const DeviceSnapshot s = sample();
  ParseError err;
  auto back = parse_get(serialize_get(s) + "errno=0\n", err);
  ASSERT_TRUE(back) << err.message;
  expect_same(s, *back);
}

TEST(ParseGet, ReadsWireguardGoStyleReply) {
  // Interface keys in another order, protocol_version, a key this reader does not know, and
  // the reply's terminating empty line with nothing read after it.
  const std::string reply =
      "listen_port=1234\nprivate_key=" + std::string(64, 'a') + "\nsome_future_key=1\n"
      "public_key=" + to_hex(key_of(0x44)) + "\npreshared_key=" + std::string(64, '0') +
      "\nprotocol_version=1\nendpoint=[fe80::1%1]:9\nlast_handshake_time_sec=5\n"
      "last_handshake_time_nsec=6\ntx_bytes=7\nrx_bytes=8\npersistent_keepalive_interval=0\n"
      "allowed_ip=0.0.0.0/0\nerrno=0\n\npublic_key=" + to_hex(key_of(0x55)) + "\n";
  ParseError err;
  auto s = parse_get(reply, err);
  ASSERT_TRUE(s) << err.message;
  EXPECT_EQ(s->listen_port, 1234);
  ASSERT_EQ(s->peers.size(), 1u) << "nothing after the empty line";
  EXPECT_EQ(s->peers[0].public_key, key_of(0x44));
  EXPECT_EQ(s->peers[0].tx_bytes, 7u);
  EXPECT_EQ(s->peers[0].rx_bytes, 8u);
  ASSERT_TRUE(s->peers[0].endpoint);
  EXPECT_EQ(s->peers[0].endpoint->port(), 9);
  ASSERT_EQ(s->peers[0].allowed_ips.size(), 1u);
  EXPECT_EQ(s->peers[0].allowed_ips[0].cidr, 0);
}

TEST(ParseGet, RejectsWhatIsNotAReply) {
  struct Case {
    std::string body;
    int errno_value;
    size_t line;
  };
  const std::string pk = "public_key=" + to_hex(key_of(1)) + "\n";
  const Case cases[] = {
      {"errno=5\n", 5, 1},
      {"listen_port=65536\n", EINVAL, 1},
      {"listen_port\n", EPROTO, 1},
      {"public_key=zz\n", EINVAL, 1},
      {pk + "endpoint=1.2.3.4\n", EINVAL, 2},
      {pk + "rx_bytes=-1\n", EINVAL, 2},
      {pk + "tx_bytes=18446744073709551616\n", EINVAL, 2},
      {pk + "last_handshake_time_nsec=1000000000\n", EINVAL, 2},
      {pk + "allowed_ip=10.0.0.1\n", EINVAL, 2},
      {pk + "preshared_key=" + std::string(63, '0') + "\n", EINVAL, 2},
      {"private_key=" + std::string(65, '1') + "\n", EINVAL, 1},
  };
  for (const Case& c : cases) {
    ParseError err;
    EXPECT_FALSE(parse_get(c.body, err)) << c.body;
    EXPECT_EQ(err.errno_value, c.errno_value) << c.body;
    EXPECT_EQ(err.line, c.line) << c.body;
    EXPECT_EQ(err.message.find(std::string(65, '1')), std::string::npos) << "no key echoed";
  }
}

TEST(Status, PathFollowsEndpointAndHandshakeAge) {
  const auto now = std::chrono::system_clock::time_point(1700000000s);
  PeerSnapshot p;
  EXPECT_EQ(classify_path(p, now), "none") << "no endpoint";
  p.endpoint = dataplane::Endpoint::parse("192.0.2.1:1");
  EXPECT_EQ(classify_path(p, now), "none") << "no handshake yet";
  p.last_handshake_sec = 1700000000 - 179;
  EXPECT_EQ(classify_path(p, now), "direct");
  p.last_handshake_sec = 1700000000 - 180;
  EXPECT_EQ(classify_path(p, now), "none") << "session past REJECT_AFTER_TIME";
  p.last_handshake_sec = 1700000000 - 1;
  p.endpoint = dataplane::Endpoint::parse("127.0.0.1:40000");
  EXPECT_EQ(classify_path(p, now), "relayed") << "the control plane's loopback relay socket";
  p.endpoint = dataplane::Endpoint::parse("[::1]:40000");
  EXPECT_EQ(classify_path(p, now), "relayed");
  p.endpoint = dataplane::Endpoint::parse("[::ffff:127.0.0.1]:40000");
  EXPECT_EQ(classify_path(p, now), "relayed");
  p.endpoint = dataplane::Endpoint::parse("[::ffff:192.0.2.1]:40000");
  EXPECT_EQ(classify_path(p, now), "direct");
}

TEST(Status, JsonHasTheDocumentedSchema) {
  DeviceSnapshot s = sample();
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1700000010));
  InterfaceStatus st = status_from_snapshot("wg7", s, now);
  st.candidates.push_back({"local", "10.0.0.1:51820", 3});
  const nlohmann::json j = to_json(st);
  EXPECT_EQ(j["interface"], "wg7");
  EXPECT_EQ(j["listen_port"], 51820);
  ASSERT_EQ(j["candidates"].size(), 1u);
  EXPECT_EQ(j["candidates"][0]["kind"], "local");
  EXPECT_EQ(j["candidates"][0]["address"], "10.0.0.1:51820");
  ASSERT_EQ(j["peers"].size(), 3u);
  const auto& a = j["peers"][0];
  // `wg genkey`-style base64 of 32 bytes of 0x11.
  EXPECT_EQ(a["public_key"], "ERERERERERERERERERERERERERERERERERERERERERE=");
  EXPECT_EQ(a["endpoint"], "192.0.2.1:51820");
  EXPECT_EQ(a["path"], "direct");
  EXPECT_TRUE(a["rtt_ms"].is_null());
  EXPECT_EQ(a["latest_handshake"], 1700000000);
  EXPECT_EQ(a["rx_bytes"], 1372);
  EXPECT_EQ(a["tx_bytes"], 18446744073709551615ull);
  EXPECT_TRUE(j["peers"][1]["endpoint"].is_null());
  EXPECT_EQ(j["peers"][1]["path"], "none");
  EXPECT_EQ(j["peers"][2]["endpoint"], "[2001:db8::1]:4500");
  for (const auto& p : j["peers"])
    for (const char* k : {"public_key", "endpoint", "path", "rtt_ms", "latest_handshake", "rx_bytes", "tx_bytes"})
      EXPECT_TRUE(p.contains(k)) << k;
  const std::string text = to_text(st, now);
  EXPECT_NE(text.find("interface: wg7"), std::string::npos);
  EXPECT_NE(text.find("latest handshake: 10 s ago"), std::string::npos) << text;
  EXPECT_NE(text.find("latest handshake: never"), std::string::npos);
  EXPECT_NE(text.find("1.34 KiB received"), std::string::npos) << text;
}

TEST(Status, MeshStatusAddsCheckPortAndCandidates) {
  InterfaceStatus s;
  s.interface = "mw0";
  EXPECT_TRUE(to_json(s)["check_port"].is_null()) << "no control plane: null, not absent";
  ASSERT_TRUE(merge_mesh_status(
      s, R"({"check_port": 40000, "relay": "up", "candidates": [{"kind": "wg-stun", "address": "198.51.100.2:51000", "age_s": 3},
                                                {"kind": "local", "address": "[2001:db8::2]:51000", "age_s": 0}]})"));
  const auto j = to_json(s);
  EXPECT_EQ(j["check_port"], 40000);
  EXPECT_EQ(j["relay"], "up");
  ASSERT_EQ(j["candidates"].size(), 2u);
  EXPECT_EQ(j["candidates"][0]["kind"], "wg-stun");
  EXPECT_EQ(j["candidates"][0]["address"], "198.51.100.2:51000");
  EXPECT_EQ(j["candidates"][1]["age_s"], 0);
  const std::string text = to_text(s, std::chrono::system_clock::now());
  EXPECT_NE(text.find("check port: 40000"), std::string::npos);
  EXPECT_NE(text.find("198.51.100.2:51000 (wg-stun, 3 s old)"), std::string::npos) << text;
  // Anything else leaves the status as it was.
  for (const char* bad :
       {"", "null", "[]", "{\"candidates\": []}", "{\"check_port\": 70000, \"candidates\": []}",
        "{\"check_port\": -1, \"candidates\": []}", "{\"check_port\": 1, \"candidates\": {}}",
        "{\"check_port\": 1, \"candidates\": [{\"kind\": 1, \"address\": \"x\", \"age_s\": 0}]}",
        "{\"check_port\": 1, \"candidates\": [{\"kind\": \"local\", \"age_s\": 0}]}",
        "{\"check_port\": 1, \"candidates\": [1]}",
        "{\"check_port\": 1, \"relay\": \"sideways\", \"candidates\": []}",
        "{\"check_port\": 1, \"relay\": 1, \"candidates\": []}", "{\"check_port\": 1, \"candidates\": [] "}) {
    InterfaceStatus t = s;
    EXPECT_FALSE(merge_mesh_status(t, bad)) << bad;
    EXPECT_EQ(to_json(t), j) << bad;
  }
}

TEST(Status, MeshStatusAddsThePathStateOfRelayedPeers) {
  DeviceSnapshot snap;
  snap.listen_port = 51000;
  PeerSnapshot p;
  p.public_key = key_of(0x11);
  p.endpoint = dataplane::Endpoint::parse("198.51.101.1:51000");
  p.last_handshake_sec = 1000;
  snap.peers = {p};
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1010));
  InterfaceStatus s = status_from_snapshot("mw0", snap, now);
  EXPECT_TRUE(to_json(s)["peers"][0]["state"].is_null()) << "not managed: null";
  EXPECT_TRUE(to_json(s)["peers"][0]["bans"].empty());
  const std::string key = key_to_base64(p.public_key);
  const std::string doc = R"({"check_port": 40000, "candidates": [], "peers": [{"public_key": ")" +
                          key + R"(", "candidates": [], "state": "direct", "rtt_ms": 0.5,
      "upgrades": 3, "fallbacks": 1,
      "bans": [{"pair": "198.51.100.1:51000>198.51.101.1:51000", "ttl_s": 9, "failures": 2}]}]})";
  ASSERT_TRUE(merge_mesh_status(s, doc));
  const auto j = to_json(s)["peers"][0];
  EXPECT_EQ(j["path"], "direct");
  EXPECT_EQ(j["state"], "direct");
  EXPECT_EQ(j["rtt_ms"], 0.5);
  EXPECT_EQ(j["upgrades"], 3);
  EXPECT_EQ(j["fallbacks"], 1);
  ASSERT_EQ(j["bans"].size(), 1u);
  EXPECT_EQ(j["bans"][0]["pair"], "198.51.100.1:51000>198.51.101.1:51000");
  EXPECT_EQ(j["bans"][0]["ttl_s"], 9);
  EXPECT_EQ(j["bans"][0]["failures"], 2);
  const std::string text = to_text(s, now);
  EXPECT_NE(text.find("control plane: direct, 3 upgrades, 1 fallbacks"), std::string::npos) << text;
  EXPECT_NE(text.find("banned pair: 198.51.100.1:51000>198.51.101.1:51000 (2 failures, 9 s left)"),
            std::string::npos)
      << text;
  // Malformed path fields are refused as a whole.
  for (const char* bad : {R"("state": "teleported")", R"("state": 1)", R"("rtt_ms": -1)",
                          R"("upgrades": -2)", R"("bans": {})", R"("bans": [{"pair": "x"}])",
                          R"("bans": [{"pair": "x", "ttl_s": 1, "failures": -1}])"}) {
    InterfaceStatus t = status_from_snapshot("mw0", snap, now);
    const auto before = to_json(t);
    // A valid relay field in front of the bad peer must not be applied either.
    const std::string d = R"({"check_port": 1, "relay": "up", "candidates": [], "peers": [{"public_key": ")" + key +
                          R"(", "candidates": [], )" + bad + "}]}";
    EXPECT_FALSE(merge_mesh_status(t, d)) << bad;
    EXPECT_TRUE(to_json(t)["peers"][0]["state"].is_null()) << bad;
    EXPECT_EQ(to_json(t), before) << bad;
  }
}

}  // namespace
}  // namespace meshwg::control
