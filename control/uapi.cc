// UAPI set-body parsing and get-reply serialisation (wireguard.com/xplatform; key semantics
// follow wireguard-go device/uapi.go, see shared/vectors/uapi.md).
//
// Deliberate divergence: wireguard-go applies a set line by line, so a bad line leaves the
// earlier lines applied. meshwg parses the whole body into a SetRequest first and the device
// applies it in one go, so a set with any bad line changes nothing.
#include "control/uapi.h"

#include <cerrno>
#include <string>

namespace meshwg::control {

std::string quote(std::string_view s) {
  constexpr size_t kMaxEcho = 64;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMaxEcho; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += char(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > kMaxEcho) out += "...";
  out += "'";
  return out;
}

namespace {


// Decimal digits only (no sign, no space, no base prefix), like Go's strconv.ParseUint(v, 10,
// bits): leading zeros are fine, the value must not exceed max.
bool parse_uint(std::string_view s, uint64_t max, uint64_t& out) {
  if (s.empty()) return false;
  uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    const unsigned d = unsigned(c - '0');
    if (v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_interface_key(std::string_view k) {
  return k == "private_key" || k == "listen_port" || k == "fwmark" || k == "replace_peers";
}

// Builds the error and returns nullopt, so every failure is one `return fail(...)`.
class Failer {
 public:
  explicit Failer(ParseError& err) : err_(err) {}
  std::nullopt_t operator()(int errno_value, size_t line, std::string_view what) {
    err_.errno_value = errno_value;
    err_.line = line;
    err_.message = "line " + std::to_string(line) + ": " + std::string(what);
    return std::nullopt;
  }

 private:
  ParseError& err_;
};

}  // namespace

std::string to_hex(std::span<const uint8_t, 32> key) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    s[2 * i] = kHex[key[i] >> 4];
    s[2 * i + 1] = kHex[key[i] & 15];
  }
  return s;
}

bool from_hex(std::string_view s, std::span<uint8_t, 32> out) {
  if (s.size() != 64) return false;
  uint8_t tmp[32];
  for (size_t i = 0; i < 32; ++i) {
    const int hi = hex_value(s[2 * i]);
    const int lo = hex_value(s[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      crypto::wipe(tmp, sizeof(tmp));
      return false;
    }
    tmp[i] = uint8_t(hi << 4 | lo);
  }
  // out is written only once the whole string is valid.
  std::copy(std::begin(tmp), std::end(tmp), out.begin());
  crypto::wipe(tmp, sizeof(tmp));
  return true;
}

std::optional<SetRequest> parse_set(std::string_view body, ParseError& err) {
  Failer fail(err);
  SetRequest req;
  PeerChange* peer = nullptr;  // current peer section; null while in the interface section
  size_t line_no = 0;

  while (!body.empty()) {
    const size_t nl = body.find('\n');
    const std::string_view line = body.substr(0, nl);
    body = nl == std::string_view::npos ? std::string_view{} : body.substr(nl + 1);
    ++line_no;

    // The server enforces the same bounds while reading; they are repeated here so the
    // parser stays bounded for any caller.
    if (line_no > kMaxSetLines) return fail(EINVAL, line_no, "too many lines in set");
    if (line.size() > kMaxLineLength) return fail(EINVAL, line_no, "line too long");
    // On the wire an empty line ends the set, so one inside a body means the caller framed
    // it wrongly; wireguard-go would silently drop everything after it.
    if (line.empty()) return fail(EPROTO, line_no, "empty line inside a set body");

    const size_t eq = line.find('=');
    // No echo: a malformed line may well be a key with its secret glued on.
    if (eq == std::string_view::npos) return fail(EPROTO, line_no, "missing '=' (want key=value)");
    const std::string_view key = line.substr(0, eq);
    const std::string_view value = line.substr(eq + 1);

    // Only called for known keys, so echoing the key is safe and short.
    auto bad = [&](std::string_view why) {
      return fail(EINVAL, line_no, std::string(key) + ": " + std::string(why));
    };
    auto bad_value = [&](std::string_view why) {
      return fail(EINVAL, line_no, std::string(key) + ": " + quote(value) + " " + std::string(why));
    };
    auto want_true = [&]() { return value == "true"; };

    if (key == "public_key") {
      PeerChange& p = req.peers.emplace_back();
      if (!from_hex(value, p.public_key)) return bad("not a 64-character hex key");
      peer = &p;
      continue;
    }

    if (peer == nullptr) {
      // Interface section.
      if (key == "private_key") {
        crypto::Key priv;
        if (!from_hex(value, priv.span())) return bad("not a 64-character hex key");
        req.private_key = priv;
      } else if (key == "listen_port") {
        uint64_t v = 0;
        if (!parse_uint(value, 65535, v)) return bad_value("is not a port (0-65535)");
        req.listen_port = uint16_t(v);
      } else if (key == "fwmark") {
        uint64_t v = 0;
        if (!parse_uint(value, UINT32_MAX, v)) return bad_value("is not a 32-bit mark (0-4294967295)");
        req.fwmark = uint32_t(v);
      } else if (key == "replace_peers") {
        if (!want_true()) return bad_value("is not 'true' (the only accepted value)");
        req.replace_peers = true;
      } else {
        return fail(EINVAL, line_no, "unknown interface key " + quote(key));
      }
      continue;
    }

    // Peer section.
    if (key == "remove") {
      if (!want_true()) return bad_value("is not 'true' (the only accepted value)");
      peer->remove = true;
    } else if (key == "update_only") {
      if (!want_true()) return bad_value("is not 'true' (the only accepted value)");
      peer->update_only = true;
    } else if (key == "preshared_key") {
      crypto::Key psk;
      if (!from_hex(value, psk.span())) return bad("not a 64-character hex key");
      peer->preshared_key = psk;
    } else if (key == "endpoint") {
      // inet_pton stops at a NUL byte, so reject it here rather than accept a prefix of value.
      std::optional<dataplane::Endpoint> ep;
      if (value.find('\0') == std::string_view::npos) ep = dataplane::Endpoint::parse(value);
      if (!ep) return bad_value("is not an endpoint (a.b.c.d:port or [v6]:port)");
      peer->endpoint = *ep;
    } else if (key == "persistent_keepalive_interval") {
      uint64_t v = 0;
      if (!parse_uint(value, 65535, v)) return bad_value("is not an interval (0-65535 seconds)");
      peer->persistent_keepalive = uint16_t(v);
    } else if (key == "replace_allowed_ips") {
      if (!want_true()) return bad_value("is not 'true' (the only accepted value)");
      peer->replace_allowed_ips = true;
    } else if (key == "allowed_ip") {
      AllowedIpChange c;
      std::string_view v = value;
      if (!v.empty() && v.front() == '-') {
        c.remove = true;
        v.remove_prefix(1);
      }
      // Like Go's netip.ParsePrefix (wireguard-go), the /cidr is mandatory.
      std::optional<dataplane::IpPrefix> pfx;
      if (v.find('/') != std::string_view::npos && v.find('\0') == std::string_view::npos)
        pfx = dataplane::IpPrefix::parse(v);
      if (!pfx) return bad_value("is not an IP prefix (addr/cidr)");
      c.prefix = *pfx;
      peer->allowed_ips.push_back(c);
    } else if (key == "protocol_version") {
      if (value != "1") return bad_value("is not a supported protocol version (only 1)");
    } else if (is_interface_key(key)) {
      return fail(EINVAL, line_no, std::string(key) + ": interface key not allowed in a peer section (after public_key)");
    } else {
      return fail(EINVAL, line_no, "unknown peer key " + quote(key));
    }
  }
  return req;
}

std::string serialize_get(const DeviceSnapshot& snap) {
  // Reserved up front: besides speed, growing the buffer would leave stray copies of the
  // private key's hex in freed memory.
  size_t estimate = 256;
  for (const PeerSnapshot& p : snap.peers) estimate += 512 + p.allowed_ips.size() * 56;
  std::string out;
  out.reserve(estimate);
  auto kv = [&out](std::string_view k, std::string_view v) {
    out += k;
    out += '=';
    out += v;
    out += '\n';
  };
  auto kn = [&kv](std::string_view k, auto n) { kv(k, std::to_string(n)); };

  // Order and presence rules as wireguard-go's IpcGetOperation: wg(8) does not care about
  // order except that public_key starts a peer, but matching it keeps diffs readable.
  if (snap.private_key && !snap.private_key->is_zero()) {
    std::string hex = to_hex(snap.private_key->span());
    kv("private_key", hex);
    crypto::wipe(hex.data(), hex.size());
  }
  if (snap.listen_port != 0) kn("listen_port", snap.listen_port);
  if (snap.fwmark != 0) kn("fwmark", snap.fwmark);
  for (const PeerSnapshot& p : snap.peers) {
    kv("public_key", to_hex(p.public_key));
    std::string psk = to_hex(p.preshared_key.span());
    kv("preshared_key", psk);
    crypto::wipe(psk.data(), psk.size());
    kv("protocol_version", "1");
    if (p.endpoint && p.endpoint->valid()) kv("endpoint", p.endpoint->str());
    kn("last_handshake_time_sec", p.last_handshake_sec);
    kn("last_handshake_time_nsec", p.last_handshake_nsec);
    kn("tx_bytes", p.tx_bytes);
    kn("rx_bytes", p.rx_bytes);
    kn("persistent_keepalive_interval", p.persistent_keepalive);
    for (const dataplane::IpPrefix& a : p.allowed_ips) kv("allowed_ip", a.str());
  }
  return out;
}

std::optional<DeviceSnapshot> parse_get(std::string_view body, ParseError& err) {
  Failer fail(err);
  DeviceSnapshot snap;
  PeerSnapshot* peer = nullptr;
  size_t line_no = 0;
  while (!body.empty()) {
    const size_t nl = body.find('\n');
    const std::string_view line = body.substr(0, nl);
    body = nl == std::string_view::npos ? std::string_view{} : body.substr(nl + 1);
    ++line_no;
    if (line_no > kMaxSetLines || line.size() > kMaxLineLength)
      return fail(EINVAL, line_no, "reply too large");
    if (line.empty()) break;  // the end of the reply
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) return fail(EPROTO, line_no, "missing '=' (want key=value)");
    const std::string_view key = line.substr(0, eq);
    const std::string_view value = line.substr(eq + 1);
    auto bad_value = [&] {
      return fail(EINVAL, line_no, std::string(key) + ": " + quote(value) + " is not valid");
    };
    uint64_t v = 0;
    if (key == "public_key") {
      peer = &snap.peers.emplace_back();
      if (!from_hex(value, peer->public_key)) return bad_value();
    } else if (!peer) {
      if (key == "private_key") {
        crypto::Key k;
        // No echo of a private key, valid or not.
        if (!from_hex(value, k.span())) return fail(EINVAL, line_no, "private_key: not 64 hex digits");
        snap.private_key = k;
      } else if (key == "listen_port") {
        if (!parse_uint(value, 65535, v)) return bad_value();
        snap.listen_port = uint16_t(v);
      } else if (key == "fwmark") {
        if (!parse_uint(value, UINT32_MAX, v)) return bad_value();
        snap.fwmark = uint32_t(v);
      } else if (key == "errno") {
        if (!parse_uint(value, INT32_MAX, v)) return bad_value();
        if (v != 0) return fail(int(v), line_no, "the device answered errno=" + std::string(value));
      }
      // Other interface keys are newer than this reader: skipped, as wg(8) would not.
    } else if (key == "preshared_key") {
      if (!from_hex(value, peer->preshared_key.span()))
        return fail(EINVAL, line_no, "preshared_key: not 64 hex digits");
    } else if (key == "endpoint") {
      peer->endpoint = dataplane::Endpoint::parse(value);
      if (!peer->endpoint) return bad_value();
    } else if (key == "last_handshake_time_sec") {
      if (!parse_uint(value, INT64_MAX, v)) return bad_value();
      peer->last_handshake_sec = int64_t(v);
    } else if (key == "last_handshake_time_nsec") {
      if (!parse_uint(value, 999'999'999, v)) return bad_value();
      peer->last_handshake_nsec = int64_t(v);
    } else if (key == "tx_bytes") {
      if (!parse_uint(value, UINT64_MAX, v)) return bad_value();
      peer->tx_bytes = v;
    } else if (key == "rx_bytes") {
      if (!parse_uint(value, UINT64_MAX, v)) return bad_value();
      peer->rx_bytes = v;
    } else if (key == "persistent_keepalive_interval") {
      if (!parse_uint(value, 65535, v)) return bad_value();
      peer->persistent_keepalive = uint16_t(v);
    } else if (key == "allowed_ip") {
      auto prefix = dataplane::IpPrefix::parse(value);
      if (!prefix || value.find('/') == std::string_view::npos) return bad_value();
      peer->allowed_ips.push_back(*prefix);
    } else if (key == "errno") {
      if (!parse_uint(value, INT32_MAX, v)) return bad_value();
      if (v != 0) return fail(int(v), line_no, "the device answered errno=" + std::string(value));
    }
    // protocol_version and keys newer than this reader: skipped.
  }
  return snap;
}

}  // namespace meshwg::control
