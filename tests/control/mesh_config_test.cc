// Tests for control/mesh_config.cc: a full mesh file and a server file against values written
// out by hand, the syntax wg-quick accepts (comments, case, CRLF, whitespace), and every error
// with its exact "file:line: key:" prefix. Keys are independent truth: pairs made by
// `wg genkey | wg pubkey` (the first is wg(8)'s man-page example), hex by `base64 -d | xxd -p`.
#include "control/mesh_config.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "control/uapi.h"  // to_hex

namespace meshwg::control {
namespace {

// The interface's key pair; the public key is what `wg pubkey` prints for kPriv.
constexpr char kPriv[] = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
constexpr char kPrivHex[] = "c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669";
constexpr char kPubHex[] = "1c8828f7137324c58b2804928624ea2326f1674537c062e251e2753ca7fcca4c";
// Peers, the WG-STUN server, and the server's key pair (the relay's public key).
constexpr char kPeer1[] = "tMxS/ho37WTvV8RhweNur+b3sd1ep1GKxPsQ+VQ/NjU=";
constexpr char kPeer1Hex[] = "b4cc52fe1a37ed64ef57c461c1e36eafe6f7b1dd5ea7518ac4fb10f9543f3635";
constexpr char kPeer2[] = "m1Ha9nA4BADw26TeSUoU55sA9DFS6MUjmojuqDjtf04=";
constexpr char kPeer2Hex[] = "9b51daf670380400f0dba4de494a14e79b00f43152e8c5239a88eea838ed7f4e";
constexpr char kPsk[] = "K+p6Oo3Lzf6BM7VEqA98sg1PVRVY2rTodcToBiAVj7E=";
constexpr char kPskHex[] = "2bea7a3a8dcbcdfe8133b544a80f7cb20d4f551558dab4e875c4e80620158fb1";
constexpr char kWgStunPub[] = "IY69l91Xf0S/X2z+AgyMQgJ1NF6dU2MMh63EbanI+TA=";
constexpr char kServerPriv[] = "OI/nF3uZJbz8LtJ3W4TBasmjsArY1ptpnEH8EuId/F8=";
constexpr char kServerPrivHex[] =
    "388fe7177b9925bcfc2ed2775b84c16ac9a3b00ad8d69b699c41fc12e21dfc5f";
constexpr char kServerPub[] = "ik5dmtzgTFf2EdaG1vnHRkEC4jJQ/YMDOYkoMvlUr3c=";
constexpr char kServerPubHex[] = "8a4e5d9adce04c57f611d686d6f9c7464102e23250fd830339892832f954af77";

// Two lines: every error test below starts from here, so line 3 is the first line after it.
const std::string kIface = std::string("[Interface]\nPrivateKey = ") + kPriv + "\n";

std::string hex(const crypto::Key& k) { return to_hex(k.span()); }
std::string hex(const crypto::PublicKey& k) { return to_hex(k); }

// Secrets of the test files, in every form a message could leak them.
void expect_no_secrets(const std::string& msg) {
  for (const char* s : {kPriv, kPrivHex, kPsk, kPskHex, kServerPriv, kServerPrivHex}) {
    EXPECT_EQ(msg.find(std::string(s).substr(0, 12)), std::string::npos) << msg;
  }
}

MeshConfig mesh_ok(const std::string& text) {
  ConfigError err;
  auto c = parse_mesh_config(text, "t.conf", err);
  EXPECT_TRUE(c.has_value()) << err.message << "\n---\n" << text;
  return c ? std::move(*c) : MeshConfig{};
}

ServerConfig server_ok(const std::string& text) {
  ConfigError err;
  auto c = parse_server_config(text, "s.conf", err);
  EXPECT_TRUE(c.has_value()) << err.message << "\n---\n" << text;
  return c ? std::move(*c) : ServerConfig{};
}

// The message starts exactly with "FILE:LINE: KEY: ", the fields agree, and it contains
// `what`. Returns the message for further checks.
std::string expect_error_in(const ConfigError& err, bool failed, const std::string& file,
                            size_t line, const std::string& key, const std::string& what) {
  EXPECT_TRUE(failed);
  const std::string prefix = file + ":" + std::to_string(line) + ": " + key + ": ";
  EXPECT_EQ(err.message.substr(0, prefix.size()), prefix) << err.message;
  EXPECT_GT(err.message.size(), prefix.size()) << err.message;
  EXPECT_EQ(err.file, file);
  EXPECT_EQ(err.line, line) << err.message;
  EXPECT_EQ(err.key, key) << err.message;
  EXPECT_NE(err.message.find(what), std::string::npos) << err.message << "\n  wanted: " << what;
  for (const char c : err.message) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << err.message;
  expect_no_secrets(err.message);
  return err.message;
}

std::string mesh_error(const std::string& text, size_t line, const std::string& key,
                       const std::string& what = "") {
  SCOPED_TRACE(text);
  ConfigError err;
  const bool failed = !parse_mesh_config(text, "t.conf", err).has_value();
  return expect_error_in(err, failed, "t.conf", line, key, what);
}

std::string server_error(const std::string& text, size_t line, const std::string& key,
                         const std::string& what = "") {
  SCOPED_TRACE(text);
  ConfigError err;
  const bool failed = !parse_server_config(text, "s.conf", err).has_value();
  return expect_error_in(err, failed, "s.conf", line, key, what);
}

std::string peer(const char* pub) { return std::string("[Peer]\nPublicKey = ") + pub + "\n"; }

// ---- valid files ----

const std::string kFullMesh = std::string(
                                  "# meshwg mesh config\n"
                                  "[Interface]\n"
                                  "PrivateKey = ") +
                              kPriv +
                              "\n"
                              "ListenPort = 51820\n"
                              "Address = 10.7.0.1/24, fd7a:115c:a1e0::1/64\n"
                              "Address = 192.168.77.5\n"
                              "MTU = 1380\n"
                              "DNS = 10.7.0.53, mesh.internal\n"
                              "Table = off\n"
                              "PreUp = echo pre-up\n"
                              "PostUp = iptables -A FORWARD -i %i -j ACCEPT\n"
                              "PostUp = echo second\n"
                              "PreDown = echo pre-down\n"
                              "PostDown = iptables -D FORWARD -i %i -j ACCEPT\n"
                              "SaveConfig = false\n"
                              "FwMark = 0xca6c\n"
                              "\n"
                              "[Peer]  # a laptop, direct\n"
                              "PublicKey = " +
                              kPeer1 +
                              "\n"
                              "PresharedKey = " +
                              kPsk +
                              "\n"
                              "AllowedIPs = 10.7.0.2/32, fd7a:115c:a1e0::2/128\n"
                              "AllowedIPs = 192.168.10.77/24\n"
                              "Endpoint = 198.51.100.7:51820\n"
                              "PersistentKeepalive = 25\n"
                              "\n"
                              "[Peer]\n"
                              "# behind NAT: no Endpoint, reached through traversal\n"
                              "PublicKey = " +
                              kPeer2 +
                              "\n"
                              "AllowedIPs = 10.7.0.3/32\n"
                              "\n"
                              "[WGStun]\n"
                              "Endpoint = [2001:db8::53]:3479\n"
                              "PublicKey = " +
                              kWgStunPub +
                              "\n"
                              "\n"
                              "[Relay]\n"
                              "Endpoint = relay.example.org:443\n"
                              "PublicKey = " +
                              kServerPub + "\n";

void check_full_mesh(const MeshConfig& c) {
  const InterfaceConfig& i = c.interface;
  EXPECT_EQ(i.line, 2u);
  EXPECT_EQ(hex(i.private_key), kPrivHex);
  ASSERT_TRUE(i.listen_port);
  EXPECT_EQ(*i.listen_port, 51820);
  ASSERT_EQ(i.addresses.size(), 3u);
  EXPECT_EQ(i.addresses[0].str(), "10.7.0.1/24");  // host bits kept
  EXPECT_EQ(i.addresses[0].addr.family, 4);
  EXPECT_EQ(i.addresses[1].str(), "fd7a:115c:a1e0::1/64");
  EXPECT_EQ(i.addresses[1].addr.family, 6);
  EXPECT_EQ(i.addresses[2].str(), "192.168.77.5/32");  // bare address: full length
  ASSERT_TRUE(i.mtu);
  EXPECT_EQ(*i.mtu, 1380u);
  EXPECT_EQ(i.dns, (std::vector<std::string>{"10.7.0.53", "mesh.internal"}));
  EXPECT_EQ(i.table, "off");
  EXPECT_EQ(i.pre_up, std::vector<std::string>{"echo pre-up"});
  EXPECT_EQ(i.post_up,
            (std::vector<std::string>{"iptables -A FORWARD -i %i -j ACCEPT", "echo second"}));
  EXPECT_EQ(i.pre_down, std::vector<std::string>{"echo pre-down"});
  EXPECT_EQ(i.post_down, std::vector<std::string>{"iptables -D FORWARD -i %i -j ACCEPT"});
  EXPECT_EQ(i.save_config, false);
  EXPECT_EQ(i.fwmark, 0xca6cu);

  ASSERT_EQ(c.peers.size(), 2u);
  const PeerConfig& a = c.peers[0];
  EXPECT_EQ(a.line, 18u);
  EXPECT_EQ(hex(a.public_key), kPeer1Hex);
  ASSERT_TRUE(a.preshared_key);
  EXPECT_EQ(hex(*a.preshared_key), kPskHex);
  ASSERT_EQ(a.allowed_ips.size(), 3u);
  EXPECT_EQ(a.allowed_ips[0].str(), "10.7.0.2/32");
  EXPECT_EQ(a.allowed_ips[1].str(), "fd7a:115c:a1e0::2/128");
  EXPECT_EQ(a.allowed_ips[2].str(), "192.168.10.0/24");  // masked like the kernel's table
  ASSERT_TRUE(a.endpoint);
  EXPECT_FALSE(a.endpoint->is_name());
  EXPECT_EQ(a.endpoint->host, "198.51.100.7");
  EXPECT_EQ(a.endpoint->port, 51820);
  EXPECT_EQ(a.endpoint->address->addr.sa.sa_family, AF_INET);
  EXPECT_EQ(ntohl(a.endpoint->address->addr.in4.sin_addr.s_addr), 0xc6336407u);
  EXPECT_EQ(ntohs(a.endpoint->address->addr.in4.sin_port), 51820);
  EXPECT_EQ(a.persistent_keepalive, 25);

  const PeerConfig& b = c.peers[1];
  EXPECT_EQ(b.line, 26u);
  EXPECT_EQ(hex(b.public_key), kPeer2Hex);
  EXPECT_FALSE(b.preshared_key);
  EXPECT_FALSE(b.endpoint);  // traversal
  EXPECT_EQ(b.persistent_keepalive, 0);
  ASSERT_EQ(b.allowed_ips.size(), 1u);

  ASSERT_TRUE(c.wgstun);
  EXPECT_EQ(c.wgstun->line, 31u);
  EXPECT_EQ(c.wgstun->endpoint.host, "2001:db8::53");
  EXPECT_EQ(c.wgstun->endpoint.port, 3479);
  EXPECT_EQ(c.wgstun->endpoint.str(), "[2001:db8::53]:3479");
  ASSERT_TRUE(c.wgstun->endpoint.address);
  EXPECT_EQ(c.wgstun->endpoint.address->str(), "[2001:db8::53]:3479");
  EXPECT_EQ(to_hex(c.wgstun->public_key),
            "218ebd97dd577f44bf5f6cfe020c8c420275345e9d53630c87adc46da9c8f930");

  ASSERT_TRUE(c.relay);
  EXPECT_EQ(c.relay->line, 35u);
  EXPECT_TRUE(c.relay->endpoint.is_name());  // kept for resolution by the daemon
  EXPECT_EQ(c.relay->endpoint.host, "relay.example.org");
  EXPECT_EQ(c.relay->endpoint.port, 443);
  EXPECT_EQ(c.relay->endpoint.str(), "relay.example.org:443");
  EXPECT_EQ(hex(c.relay->public_key), kServerPubHex);
}

TEST(MeshConfig, FullFileParsesToTheWrittenValues) { check_full_mesh(mesh_ok(kFullMesh)); }

TEST(MeshConfig, PrivateKeyMatchesWgPubkey) {
  // The decoded private key yields the public key `wg pubkey` printed: decoding is right.
  ASSERT_TRUE(crypto::init());
  const MeshConfig c = mesh_ok(kFullMesh);
  crypto::PublicKey pub{};
  ASSERT_TRUE(crypto::x25519_public(pub, c.interface.private_key.span()));
  EXPECT_EQ(hex(pub), kPubHex);
}

TEST(MeshConfig, CrlfTrailingWhitespaceAndCaseChangeNothing) {
  std::string crlf;
  for (const char ch : kFullMesh) {
    if (ch == '\n') crlf += " \t\r";  // trailing whitespace, then CRLF
    crlf += ch;
  }
  check_full_mesh(mesh_ok(crlf));

  // Keys and section names in any case (values like base64 keys keep theirs).
  std::string text = kFullMesh;
  for (const char* from :
       {"[Interface]", "PrivateKey", "ListenPort", "Address", "PersistentKeepalive"}) {
    std::string lower_from = from;
    for (char& ch : lower_from) ch = char(tolower(ch));
    for (size_t pos = 0; (pos = text.find(from, pos)) != std::string::npos;)
      text.replace(pos, strlen(from), lower_from);
  }
  for (size_t pos = 0; (pos = text.find("[WGStun]", pos)) != std::string::npos;)
    text.replace(pos, 8, "[wgSTUN]");
  for (size_t pos = 0; (pos = text.find("AllowedIPs", pos)) != std::string::npos;)
    text.replace(pos, 10, "ALLOWEDIPS");
  check_full_mesh(mesh_ok(text));

  // A byte-order mark and no final newline.
  std::string bom = "\xEF\xBB\xBF" + kFullMesh;
  bom.pop_back();
  check_full_mesh(mesh_ok(bom));
}

TEST(MeshConfig, CommentsAndBlankLines) {
  const MeshConfig c =
      mesh_ok(std::string("  # leading comment\n\n \t \n[Interface] # trailing\n") +
              "PrivateKey = " + kPriv + "# no space before the comment\n" + "ListenPort=1234#x\n" +
              "#ListenPort = 9\n" + "PostUp = echo a # wg-quick drops this part too\n");
  EXPECT_EQ(hex(c.interface.private_key), kPrivHex);
  EXPECT_EQ(c.interface.listen_port, 1234);
  EXPECT_EQ(c.interface.post_up, std::vector<std::string>{"echo a"});
  EXPECT_EQ(c.interface.line, 4u);
}

TEST(MeshConfig, MinimalFileAndDefaults) {
  const MeshConfig c = mesh_ok(kIface);
  EXPECT_FALSE(c.interface.listen_port);
  EXPECT_TRUE(c.interface.addresses.empty());
  EXPECT_FALSE(c.interface.mtu);
  EXPECT_FALSE(c.interface.fwmark);
  EXPECT_FALSE(c.interface.save_config);
  EXPECT_TRUE(c.peers.empty());
  EXPECT_FALSE(c.wgstun);
  EXPECT_FALSE(c.relay);
}

TEST(MeshConfig, PeerBeforeInterfaceAndEmptyAllowedIps) {
  const MeshConfig c = mesh_ok(peer(kPeer1) + "AllowedIPs =\n" + kIface);
  ASSERT_EQ(c.peers.size(), 1u);
  EXPECT_TRUE(c.peers[0].allowed_ips.empty());
  EXPECT_EQ(c.interface.line, 4u);
}

TEST(MeshConfig, Ipv6EndpointsAndAddresses) {
  const MeshConfig c = mesh_ok(kIface + "Address = fe80::1/64,2001:DB8::1:2/48\n" + peer(kPeer1) +
                               "Endpoint = [2001:db8::1]:51820\nAllowedIPs = ::/0, 0.0.0.0/0\n" +
                               peer(kPeer2) + "Endpoint = [fe80::2%1]:7\n");
  ASSERT_EQ(c.interface.addresses.size(), 2u);
  EXPECT_EQ(c.interface.addresses[0].str(), "fe80::1/64");
  EXPECT_EQ(c.interface.addresses[1].str(), "2001:db8::1:2/48");
  const HostPort& e1 = *c.peers[0].endpoint;
  EXPECT_EQ(e1.host, "2001:db8::1");
  ASSERT_TRUE(e1.address);
  EXPECT_EQ(e1.address->addr.sa.sa_family, AF_INET6);
  EXPECT_EQ(e1.address->port(), 51820);
  EXPECT_EQ(e1.address->ip().str(), "2001:db8::1");
  EXPECT_EQ(c.peers[0].allowed_ips[0].str(), "::/0");
  EXPECT_EQ(c.peers[0].allowed_ips[1].str(), "0.0.0.0/0");
  const HostPort& e2 = *c.peers[1].endpoint;
  EXPECT_EQ(e2.host, "fe80::2%1");  // numeric scope: interface index 1
  ASSERT_TRUE(e2.address);
  EXPECT_EQ(e2.address->addr.in6.sin6_scope_id, 1u);
  EXPECT_EQ(e2.port, 7);
}

TEST(MeshConfig, HostNamesAreKeptNotResolved) {
  for (const char* ep :
       {"localhost:51820", "wg.example.com.:1", "a-b_c.example:65535", "xn--bcher-kva.example:9"}) {
    const MeshConfig c = mesh_ok(kIface + peer(kPeer1) + "Endpoint = " + ep + "\n");
    ASSERT_EQ(c.peers.size(), 1u) << ep;
    const HostPort& h = *c.peers[0].endpoint;
    EXPECT_TRUE(h.is_name()) << ep;
    EXPECT_EQ(h.str(), ep);
  }
}

TEST(MeshConfig, KeepaliveFwmarkAndSaveConfigForms) {
  auto keepalive = [](const char* v) {
    return mesh_ok(kIface + peer(kPeer1) + "PersistentKeepalive = " + v + "\n")
        .peers.at(0)
        .persistent_keepalive;
  };
  EXPECT_EQ(keepalive("off"), 0);
  EXPECT_EQ(keepalive("OFF"), 0);
  EXPECT_EQ(keepalive("0"), 0);
  EXPECT_EQ(keepalive("65535"), 65535);
  auto fwmark = [](const char* v) {
    return mesh_ok(kIface + "FwMark = " + v + "\n").interface.fwmark;
  };
  EXPECT_EQ(fwmark("off"), 0u);
  EXPECT_EQ(fwmark("51820"), 51820u);
  EXPECT_EQ(fwmark("0xFFFFFFFF"), 0xffffffffu);
  EXPECT_EQ(mesh_ok(kIface + "SaveConfig = TRUE\n").interface.save_config, true);
  EXPECT_EQ(mesh_ok(kIface + "ListenPort = 0\n").interface.listen_port, 0);
  EXPECT_EQ(mesh_ok(kIface + "MTU = 576\n").interface.mtu, 576u);
  EXPECT_EQ(mesh_ok(kIface + "MTU = 65535\n").interface.mtu, 65535u);
}

TEST(MeshConfig, ZeroPresharedKeyIsKept) {
  const MeshConfig c = mesh_ok(kIface + peer(kPeer1) +
                               "PresharedKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
  ASSERT_TRUE(c.peers[0].preshared_key);
  EXPECT_TRUE(c.peers[0].preshared_key->is_zero());
}

// ---- mesh errors: structure ----

TEST(MeshConfigErrors, StructureExactMessages) {
  EXPECT_EQ(mesh_error("ListenPort = 1\n" + kIface, 1, "ListenPort"),
            "t.conf:1: ListenPort: key outside any section");
  EXPECT_EQ(mesh_error(kIface + "Colour = blue\n", 3, "Colour"),
            "t.conf:3: Colour: not a key of [Interface]");
  EXPECT_EQ(mesh_error(kIface + "Endpoint = 1.2.3.4:5\n", 3, "Endpoint"),
            "t.conf:3: Endpoint: not a key of [Interface]");
  EXPECT_EQ(mesh_error(kIface + peer(kPeer1) + "ListenPort = 5\n", 5, "ListenPort"),
            "t.conf:5: ListenPort: not a key of [Peer]");
  EXPECT_EQ(mesh_error(kIface + "[Fish]\n", 3, "[Fish]"),
            "t.conf:3: [Fish]: unknown section in a mesh config");
  EXPECT_EQ(mesh_error(kIface + "[Server]\n", 3, "[Server]"),
            "t.conf:3: [Server]: unknown section in a mesh config");
  EXPECT_EQ(mesh_error(kIface + "ListenPort = 1\n\nlistenport = 2\n", 5, "ListenPort"),
            "t.conf:5: ListenPort: given twice in this section (first on line 3)");
  EXPECT_EQ(mesh_error(kIface + "\n" + kIface, 4, "[Interface]"),
            "t.conf:4: [Interface]: section given twice (first on line 1)");
  EXPECT_EQ(mesh_error(kIface + "[Peer]\nAllowedIPs = 10.0.0.1/32\n", 3, "PublicKey"),
            "t.conf:3: PublicKey: required, missing from the [Peer] section");
  EXPECT_EQ(mesh_error("[Interface]\nListenPort = 1\n", 1, "PrivateKey"),
            "t.conf:1: PrivateKey: required, missing from the [Interface] section");
  EXPECT_EQ(mesh_error(peer(kPeer1), 0, "[Interface]"), "t.conf:0: [Interface]: section missing");
  EXPECT_EQ(mesh_error("", 0, "[Interface]"), "t.conf:0: [Interface]: section missing");
  EXPECT_EQ(mesh_error(kIface + "ListenPort =\n", 3, "ListenPort"),
            "t.conf:3: ListenPort: has no value");
  EXPECT_EQ(mesh_error(kIface + "just some words\n", 3, "line"),
            "t.conf:3: line: not a [Section], Key = Value, comment or blank line");
  EXPECT_EQ(mesh_error(kIface + " = 5\n", 3, "line"),
            "t.conf:3: line: '=' without a key before it");
  EXPECT_EQ(mesh_error(kIface + "[Peer\n", 3, "line"),
            "t.conf:3: line: a section header is [Name] alone on its line");
  EXPECT_EQ(mesh_error(kIface + "[Peer] x\n", 3, "line"),
            "t.conf:3: line: a section header is [Name] alone on its line");
  EXPECT_EQ(mesh_error(kIface + "[ ]\n", 3, "line"),
            "t.conf:3: line: section header without a name");
}

TEST(MeshConfigErrors, RepeatedSingleSections) {
  const std::string relay =
      std::string("[Relay]\nEndpoint = 192.0.2.1:443\nPublicKey = ") + kServerPub + "\n";
  const std::string wgstun =
      std::string("[WGStun]\nEndpoint = 192.0.2.1:3479\nPublicKey = ") + kWgStunPub + "\n";
  mesh_error(kIface + relay + relay, 6, "[Relay]", "section given twice (first on line 3)");
  mesh_error(kIface + wgstun + peer(kPeer1) + wgstun, 8, "[WGStun]", "first on line 3");
  // Peers repeat, but not the same peer.
  EXPECT_EQ(mesh_error(kIface + peer(kPeer1) + peer(kPeer2) + peer(kPeer1), 8, "PublicKey"),
            "t.conf:8: PublicKey: same peer as on line 4");
  mesh_error(kIface + "[Relay]\nPublicKey = " + kServerPub + "\n", 3, "Endpoint",
             "required, missing from the [Relay]");
  mesh_error(kIface + "[WGStun]\nEndpoint = 192.0.2.1:1\n", 3, "PublicKey",
             "missing from the [WGStun]");
  mesh_error(kIface + peer(kPeer1) + "PublicKey = " + kPeer2 + "\n", 5, "PublicKey", "given twice");
}

TEST(MeshConfigErrors, SectionProblemsNameTheHeaderLine) {
  // The missing key is reported at its section's header even when later sections follow.
  mesh_error(kIface + "\n\n[Peer]\nEndpoint = 1.2.3.4:5\n" + peer(kPeer2), 5, "PublicKey",
             "[Peer]");
}

// ---- mesh errors: values ----

TEST(MeshConfigErrors, BadKeys) {
  const std::string what = "is not a base64 key (44 characters ending in one '=')";
  for (const std::string& bad : {
           std::string(kPriv).substr(0, 43),                             // padding missing
           std::string(kPriv) + "=",                                     // 45 characters
           std::string(kPriv).substr(1) + "=",                           // "==": 31 bytes
           std::string("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBml="),  // non-zero trailing bits
           std::string("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3f.mk="),  // not base64
           std::string("yAnz5TF-lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="),  // URL-safe alphabet
           std::string(kPrivHex),                                        // hex, as the UAPI takes
           std::string("yAnz5TF+lXXJte14 tji3zlMNq+hd2rYUIgJBgB3fBm="),
       }) {
    EXPECT_EQ(mesh_error("[Interface]\nPrivateKey = " + bad + "\n", 2, "PrivateKey"),
              "t.conf:2: PrivateKey: " + what);
    mesh_error(kIface + peer(kPeer1) + "PresharedKey = " + bad + "\n", 5, "PresharedKey", what);
    mesh_error(kIface + "[Peer]\nPublicKey = " + bad + "\n", 4, "PublicKey", what);
    mesh_error(kIface + "[Relay]\nEndpoint = 1.2.3.4:5\nPublicKey = " + bad + "\n", 5, "PublicKey",
               what);
  }
  const std::string zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
  mesh_error("[Interface]\nPrivateKey = " + zero + "\n", 2, "PrivateKey", "all zeros");
  mesh_error(kIface + "[Peer]\nPublicKey = " + zero + "\n", 4, "PublicKey", "all zeros");
}

TEST(MeshConfigErrors, SecretsAreNeverEchoed) {
  // '=' forgotten: the key is named, the secret is not shown (expect_no_secrets checks).
  EXPECT_EQ(mesh_error(std::string("[Interface]\nPrivateKey ") + kPriv + "\n", 2, "PrivateKey"),
            "t.conf:2: PrivateKey: missing '=' (want Key = Value)");
  // A secret alone on a line reads as the key "<43 characters>" before its '='.
  EXPECT_EQ(mesh_error(kIface + kPsk + "\n", 3, "line"), "t.conf:3: line: unknown key");
  mesh_error(kIface + peer(kPeer1) + "PresharedKey = " + std::string(kPsk).substr(0, 40) + "\n", 5,
             "PresharedKey");
  mesh_error(std::string("[Interface]\nPrivateKey = ") + kPriv + "x\n", 2, "PrivateKey");
  // Outside a section, and as a section name.
  mesh_error(std::string(kPriv) + "\n", 1, "line", "unknown key");
  mesh_error(std::string("[") + kPriv + "]\n", 1, "line", "unknown section");
}

TEST(MeshConfigErrors, EndpointsThatLookClose) {
  auto ep = [](const std::string& v, const std::string& what) {
    return mesh_error(kIface + peer(kPeer1) + "Endpoint = " + v + "\n", 5, "Endpoint", what);
  };
  EXPECT_EQ(ep("1.2.3.4", ""),
            "t.conf:5: Endpoint: '1.2.3.4' has no port (want host:port or [v6]:port)");
  EXPECT_EQ(ep("1.2.3.4:0", ""), "t.conf:5: Endpoint: port '0' is not a port number (1-65535)");
  EXPECT_EQ(ep("1.2.3.4:70000", ""),
            "t.conf:5: Endpoint: port '70000' is not a port number (1-65535)");
  ep("1.2.3.4:", "port '' is not");
  ep("1.2.3.4:-1", "port '-1' is not");
  ep("1.2.3.4:+80", "port '+80' is not");
  ep("1.2.3.4: 80", "port ' 80' is not");
  ep(":51820", "has no host");
  ep("2001:db8::1:51820", "an IPv6 address needs brackets");
  ep("[2001:db8::1]", "has no port");
  ep("[2001:db8::1]:", "port '' is not");
  ep("[2001:db8::1]x:80", "text after ']'");
  ep("[2001:db8::1:80", "'[' without ']'");
  ep("[1.2.3.4]:80", "in brackets is not an IPv6 address");
  ep("[example.com]:80", "in brackets is not an IPv6 address");
  ep("[2001:db8::zz]:80", "in brackets is not an IPv6 address");
  ep("[fe80::1%no-such-if0]:80", "unknown %interface");
  ep("1.2.3.256:80", "is neither an IP address nor a host name");
  ep("10.1:80", "is neither an IP address nor a host name");
  ep("-bad.example:80", "is neither");
  ep("bad..example:80", "is neither");
  ep("bad!.example:80", "is neither");
  ep(std::string(64, 'a') + ".example:80", "is neither");
  mesh_error(kIface + "[Relay]\nPublicKey = " + kServerPub + "\nEndpoint = relay:99999\n", 5,
             "Endpoint", "port '99999'");
}

TEST(MeshConfigErrors, AddressesAndAllowedIpsThatLookClose) {
  for (const char* key : {"Address", "AllowedIPs"}) {
    const std::string pre = std::string(key) == "Address" ? kIface : kIface + peer(kPeer1);
    const size_t line = std::string(key) == "Address" ? 3 : 5;
    auto bad = [&](const std::string& v, const std::string& what) {
      return mesh_error(pre + key + " = " + v + "\n", line, key, what);
    };
    EXPECT_EQ(bad("10.0.0.1/33", ""), "t.conf:" + std::to_string(line) + ": " + key +
                                          ": prefix length '33' of '10.0.0.1' is not 0-32");
    bad("fd00::1/129", "'129' of 'fd00::1' is not 0-128");
    bad("10.0.0.1/", "prefix length '' of");
    bad("10.0.0.1/-1", "prefix length '-1'");
    bad("10.0.0.1/2 4", "prefix length '2 4'");
    bad("10.0.0.300/24", "'10.0.0.300' is not an IP address");
    bad("10.0.0/24", "'10.0.0' is not an IP address");
    bad("host.example/24", "is not an IP address");
    bad("10.0.0.1/24,,10.1.0.0/16", "empty item in the comma-separated list");
    bad("10.0.0.1/24,", "empty item");
  }
}

TEST(MeshConfigErrors, NumbersAndWords) {
  EXPECT_EQ(mesh_error(kIface + "ListenPort = 65536\n", 3, "ListenPort"),
            "t.conf:3: ListenPort: '65536' is not a port (0-65535)");
  mesh_error(kIface + "ListenPort = -1\n", 3, "ListenPort", "'-1'");
  mesh_error(kIface + "ListenPort = 0x10\n", 3, "ListenPort", "'0x10'");
  mesh_error(kIface + "ListenPort = 51820 51821\n", 3, "ListenPort", "not a port");
  EXPECT_EQ(mesh_error(kIface + "MTU = 575\n", 3, "MTU"),
            "t.conf:3: MTU: '575' is not an MTU (576-65535)");
  mesh_error(kIface + "MTU = 65536\n", 3, "MTU", "576-65535");
  mesh_error(kIface + "MTU = 99999999999999999999999\n", 3, "MTU", "576-65535");
  mesh_error(kIface + peer(kPeer1) + "PersistentKeepalive = 65536\n", 5, "PersistentKeepalive",
             "'65536' is not 0-65535 seconds or 'off'");
  mesh_error(kIface + peer(kPeer1) + "PersistentKeepalive = on\n", 5, "PersistentKeepalive",
             "'on'");
  mesh_error(kIface + "SaveConfig = yes\n", 3, "SaveConfig", "'yes' is not true or false");
  mesh_error(kIface + "FwMark = 0x1ffffffff\n", 3, "FwMark", "32-bit mark");
  mesh_error(kIface + "FwMark = 4294967296\n", 3, "FwMark", "32-bit mark");
  mesh_error(kIface + "FwMark = 0x\n", 3, "FwMark", "32-bit mark");
  mesh_error(kIface + "Table = 1\nTable = 2\n", 4, "Table", "given twice");
  mesh_error(kIface + "DNS = 1.1.1.1,,8.8.8.8\n", 3, "DNS", "empty item");
}

TEST(MeshConfigErrors, BoundsAndBytes) {
  // 4096 characters (CR not counted) are fine, 4097 are not.
  const std::string ok_line = "#" + std::string(4095, 'x');
  mesh_ok(kIface + ok_line + "\r\n" + ok_line);
  mesh_error(kIface + "#" + std::string(4096, 'x') + "\n", 3, "line",
             "longer than 4096 characters");

  std::string big = kIface;
  while (big.size() <= kMaxConfigBytes)
    big += "# padding padding padding padding padding padding\n";
  EXPECT_EQ(mesh_error(big, 0, "file"), "t.conf:0: file: larger than 1048576 bytes (1 MiB)");

  mesh_error(kIface + "Table = a\x01z\n", 3, "line", "control character '\\x01'");
  mesh_error(kIface + "# comment with NUL " + std::string(1, '\0') + "\n", 3, "line", "'\\x00'");
  mesh_error(kIface + "Table = a\rz\n", 3, "line", "'\\x0d'");
  mesh_error(kIface + "Table = \x1b[31m\n", 3, "line", "control character");
  mesh_ok(kIface + "PostUp = echo caf\xc3\xa9\t# UTF-8 and tabs are fine\n");
}

TEST(MeshConfigErrors, AtMostTenThousandPeers) {
  // Distinct, valid public keys: base64 of a counter (wg only needs 32 bytes).
  auto key = [](uint32_t i) {
    uint8_t b[32] = {1};
    memcpy(b + 1, &i, sizeof(i));
    char out[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(out, sizeof(out), b, sizeof(b), sodium_base64_VARIANT_ORIGINAL);
    return std::string(out);
  };
  std::string text = kIface;
  for (uint32_t i = 0; i < kMaxConfigPeers; ++i) text += "[Peer]\nPublicKey = " + key(i) + "\n";
  ASSERT_LT(text.size(), kMaxConfigBytes);
  EXPECT_EQ(mesh_ok(text).peers.size(), kMaxConfigPeers);
  text += "[Peer]\nPublicKey = " + key(kMaxConfigPeers) + "\n";
  EXPECT_EQ(
      mesh_error(text, 3 + 2 * kMaxConfigPeers, "[Peer]"),
      "t.conf:" + std::to_string(3 + 2 * kMaxConfigPeers) + ": [Peer]: more than 10000 peers");
}

// ---- server ----

const std::string kServer = std::string(
                                "[Server]\n"
                                "PrivateKey = ") +
                            kServerPriv +
                            "\n"
                            "Stun = 0.0.0.0:3478\n"
                            "WGStun = [::]:3479\n"
                            "Relay = 192.0.2.10:443\n";

TEST(ServerConfig, FullFileParsesToTheWrittenValues) {
  ASSERT_TRUE(crypto::init());
  const ServerConfig c = server_ok(kServer);
  EXPECT_EQ(hex(c.private_key), kServerPrivHex);
  crypto::PublicKey pub{};
  ASSERT_TRUE(crypto::x25519_public(pub, c.private_key.span()));
  EXPECT_EQ(hex(pub), kServerPubHex);  // what `wg pubkey` printed
  ASSERT_TRUE(c.stun);
  EXPECT_EQ(c.stun->str(), "0.0.0.0:3478");
  ASSERT_TRUE(c.wgstun);
  EXPECT_EQ(c.wgstun->addr.sa.sa_family, AF_INET6);
  EXPECT_EQ(c.wgstun->str(), "[::]:3479");
  ASSERT_TRUE(c.relay);
  EXPECT_EQ(c.relay->str(), "192.0.2.10:443");
}

TEST(ServerConfig, OneServiceIsEnoughAndCaseIsFree) {
  const ServerConfig c = server_ok(std::string("[server]\r\nprivatekey=") + kServerPriv +
                                   "\r\nwgstun = [2001:db8::1]:3479 # only\r\n");
  EXPECT_FALSE(c.stun);
  EXPECT_FALSE(c.relay);
  ASSERT_TRUE(c.wgstun);
  EXPECT_EQ(c.wgstun->port(), 3479);
}

TEST(ServerConfigErrors, ExactMessages) {
  const std::string head = std::string("[Server]\nPrivateKey = ") + kServerPriv + "\n";
  EXPECT_EQ(
      server_error(head, 1, "[Server]"),
      "s.conf:1: [Server]: none of Stun, WGStun, Relay is set; at least one service is needed");
  EXPECT_EQ(server_error("[Server]\nStun = 0.0.0.0:3478\n", 1, "PrivateKey"),
            "s.conf:1: PrivateKey: required, missing from the [Server] section");
  EXPECT_EQ(server_error("", 0, "[Server]"), "s.conf:0: [Server]: section missing");
  EXPECT_EQ(server_error("# nothing\n", 0, "[Server]"), "s.conf:0: [Server]: section missing");
  EXPECT_EQ(server_error(kIface, 1, "[Interface]"),
            "s.conf:1: [Interface]: unknown section in a server config");
  EXPECT_EQ(
      server_error(head + "Relay = relay.example.org:443\n", 3, "Relay"),
      "s.conf:3: Relay: 'relay.example.org' is not an IP address (want a.b.c.d:port or [v6]:port)");
  EXPECT_EQ(server_error(head + "Stun = 0.0.0.0:0\n", 3, "Stun"),
            "s.conf:3: Stun: port '0' is not a port number (1-65535)");
  server_error(head + "Stun = 0.0.0.0\n", 3, "Stun", "has no port");
  server_error(head + "WGStun = :::3479\n", 3, "WGStun", "needs brackets");
  server_error(head + "Stun = 1.2.3.4:1\nstun = 1.2.3.4:2\n", 4, "Stun",
               "given twice in this section (first on line 3)");
  server_error(head + "Stun = 1.2.3.4:1\n[Server]\n", 4, "[Server]",
               "section given twice (first on line 1)");
  server_error(head + "Endpoint = 1.2.3.4:1\n", 3, "Endpoint", "not a key of [Server]");
  server_error("Stun = 1.2.3.4:1\n", 1, "Stun", "key outside any section");
  server_error("[Server]\nPrivateKey = abc\nStun = 1.2.3.4:1\n", 2, "PrivateKey",
               "not a base64 key");
  server_error(head + "Stun = 1.2.3.4:1\n[Peer]\n", 4, "[Peer]",
               "unknown section in a server config");
}

// ---- files ----

class ConfigFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshwg-config-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& p : files_) ::unlink(p.c_str());
    ::rmdir((dir_ + "/sub").c_str());
    ::rmdir(dir_.c_str());
  }
  std::string write(const std::string& name, const std::string& text) {
    const std::string p = dir_ + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    files_.push_back(p);
    return p;
  }
  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(ConfigFiles, LoadsBothKinds) {
  ConfigError err;
  auto m = load_mesh_config(write("mesh.conf", kFullMesh), err);
  ASSERT_TRUE(m) << err.message;
  check_full_mesh(*m);
  auto s = load_server_config(write("server.conf", kServer), err);
  ASSERT_TRUE(s) << err.message;
  EXPECT_EQ(hex(s->private_key), kServerPrivHex);
}

TEST_F(ConfigFiles, ErrorsNameThePath) {
  ConfigError err;
  const std::string p = write("bad.conf", kIface + "ListenPort = 70000\n");
  EXPECT_FALSE(load_mesh_config(p, err));
  EXPECT_EQ(err.message, p + ":3: ListenPort: '70000' is not a port (0-65535)");

  const std::string missing = dir_ + "/nope.conf";
  EXPECT_FALSE(load_server_config(missing, err));
  EXPECT_EQ(err.message, missing + ":0: file: cannot open: No such file or directory");
  EXPECT_EQ(err.line, 0u);
  EXPECT_EQ(err.key, "file");

  ASSERT_EQ(::mkdir((dir_ + "/sub").c_str(), 0700), 0);
  EXPECT_FALSE(load_mesh_config(dir_ + "/sub", err));
  EXPECT_EQ(err.message, dir_ + "/sub:0: file: cannot read: Is a directory");

  // Exactly 1 MiB is read; one byte more is refused.
  std::string text = kIface;
  text += std::string(kMaxConfigBytes - text.size(), '\n');
  ASSERT_TRUE(load_mesh_config(write("max.conf", text), err)) << err.message;
  EXPECT_FALSE(load_mesh_config(write("big.conf", text + "\n"), err));
  EXPECT_EQ(err.message, dir_ + "/big.conf:0: file: larger than 1048576 bytes (1 MiB)");
}

}  // namespace
}  // namespace meshwg::control

namespace meshwg::control {
namespace {

TEST(MeshConfigWgStun, StunServersAreAListOnlyInWgStun) {
  const std::string head =
      std::string("[WGStun]\nEndpoint = 192.0.2.1:51820\nPublicKey = ") + kWgStunPub + "\n";
  ConfigError err;
  const std::string text = kIface + head + "Stun = 192.0.2.1:3478\nStun = [2001:db8::1]:3479\n" +
                           "Stun = stun.example.org:3478\n";
  auto c = parse_mesh_config(text, "t.conf", err);
  ASSERT_TRUE(c) << err.message;
  ASSERT_TRUE(c->wgstun);
  ASSERT_EQ(c->wgstun->stun.size(), 3u);
  EXPECT_EQ(c->wgstun->stun[0].str(), "192.0.2.1:3478");
  EXPECT_EQ(c->wgstun->stun[1].str(), "[2001:db8::1]:3479");
  EXPECT_TRUE(c->wgstun->stun[2].is_name());
  // Not a key of [Relay] or [Peer]; bounded; a bad value names its line.
  mesh_error(kIface + "[Relay]\nEndpoint = 192.0.2.1:443\nPublicKey = " + kServerPub +
                 "\nStun = 192.0.2.1:3478\n",
             6, "Stun", "not a key of [Relay]");
  std::string many = kIface + head;
  for (int i = 0; i < int(kMaxStunServers) + 1; ++i) many += "Stun = 192.0.2.1:3478\n";
  mesh_error(many, 6 + kMaxStunServers, "Stun", "more than 8 servers");
  mesh_error(kIface + head + "Stun = 192.0.2.1\n", 6, "Stun");
}

}  // namespace
}  // namespace meshwg::control
