// Parsers for the mesh config (wg-quick format plus [WGStun] / [Relay]) and the server config
// ([Server]); the syntax and error format are described in control/mesh_config.h.
//
// Errors are thrown inside this file only (a Failure, from any depth of the small value
// parsers) and turned into a ConfigError by the four public functions, which never throw.
#include "control/mesh_config.h"
#include "control/uapi.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <map>
#include <system_error>
#include <utility>

namespace meshwg::control {
namespace {

// ---- errors ----

struct Failure {
  size_t line;
  std::string key;
  std::string what;
};

[[noreturn]] void fail(size_t line, std::string_view key, std::string what) {
  throw Failure{line, std::string(key), std::move(what)};
}

ConfigError to_error(std::string_view file, const Failure& f) {
  ConfigError e;
  e.file = std::string(file);
  e.line = f.line;
  e.key = f.key;
  e.message = e.file + ":" + std::to_string(f.line) + ": " + f.key + ": " + f.what;
  return e;
}

// A name the user wrote (unknown key or section) is echoed only if it looks like one: a
// base64 secret pasted on a line of its own reads as the key "<43 chars>" before its '='.
// The longest real key, PersistentKeepalive, has 19 characters.
bool echoable_name(std::string_view s) {
  if (s.empty() || s.size() > 24) return false;
  for (const char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// ---- text helpers ----

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// Decimal digits only (no sign, space or base prefix), value at most max.
bool parse_uint(std::string_view s, uint64_t max, uint64_t& out, unsigned base = 10) {
  if (s.empty()) return false;
  uint64_t v = 0;
  for (const char c : s) {
    unsigned d = 0;
    if (c >= '0' && c <= '9') {
      d = unsigned(c - '0');
    } else if (base == 16 && lower(c) >= 'a' && lower(c) <= 'f') {
      d = unsigned(lower(c) - 'a' + 10);
    } else {
      return false;
    }
    if (d >= base || v > (max - d) / base) return false;
    v = v * base + d;
  }
  out = v;
  return true;
}

// Calls fn on each trimmed item of a comma list. A wholly empty value is an empty list (as
// "AllowedIPs =" in wg(8)); an empty item between commas is a typo and an error.
template <class Fn>
void for_each_item(std::string_view value, size_t line, std::string_view key, Fn fn) {
  if (value.empty()) return;
  while (true) {
    const size_t comma = value.find(',');
    const std::string_view item = trim(value.substr(0, comma));
    if (item.empty()) fail(line, key, "empty item in the comma-separated list");
    fn(item);
    if (comma == std::string_view::npos) return;
    value.remove_prefix(comma + 1);
  }
}

// ---- keys, sections ----

enum class K {
  PrivateKey,
  ListenPort,
  Address,
  Mtu,
  Dns,
  Table,
  PreUp,
  PostUp,
  PreDown,
  PostDown,
  SaveConfig,
  FwMark,
  PublicKey,
  AllowedIps,
  Endpoint,
  PersistentKeepalive,
  PresharedKey,
  Stun,
  WgStun,
  Relay,
  kCount
};

struct KeyInfo {
  std::string_view name;  // canonical spelling, used in messages
  bool repeatable;        // each line adds to a list; all others may appear once per section
};

constexpr std::array<KeyInfo, size_t(K::kCount)> kKeys = {{
    {"PrivateKey", false},   {"ListenPort", false},
    {"Address", true},       {"MTU", false},
    {"DNS", true},           {"Table", false},
    {"PreUp", true},         {"PostUp", true},
    {"PreDown", true},       {"PostDown", true},
    {"SaveConfig", false},   {"FwMark", false},
    {"PublicKey", false},    {"AllowedIPs", true},
    {"Endpoint", false},     {"PersistentKeepalive", false},
    {"PresharedKey", false}, {"Stun", false},
    {"WGStun", false},       {"Relay", false},
}};

std::string_view name_of(K k) { return kKeys[size_t(k)].name; }

std::optional<K> lookup_key(std::string_view s) {
  for (size_t i = 0; i < kKeys.size(); ++i)
    if (iequals(s, kKeys[i].name)) return K(i);
  return std::nullopt;
}

// Keys whose value is a list, where an empty value means an empty list.
bool is_list_key(K k) { return k == K::Address || k == K::AllowedIps || k == K::Dns; }

enum class S { Interface, Peer, WgStun, Relay, Server, kCount };

struct SectionInfo {
  std::string_view header;  // "[Interface]", as in messages
  bool repeatable;
};

constexpr std::array<SectionInfo, size_t(S::kCount)> kSections = {{
    {"[Interface]", false},
    {"[Peer]", true},
    {"[WGStun]", false},
    {"[Relay]", false},
    {"[Server]", false},
}};

std::string_view header_of(S s) { return kSections[size_t(s)].header; }

bool key_in(S s, K k) {
  switch (s) {
    case S::Interface:
      return k == K::PrivateKey || k == K::ListenPort || k == K::Address || k == K::Mtu ||
             k == K::Dns || k == K::Table || k == K::PreUp || k == K::PostUp || k == K::PreDown ||
             k == K::PostDown || k == K::SaveConfig || k == K::FwMark;
    case S::Peer:
      return k == K::PublicKey || k == K::AllowedIps || k == K::Endpoint ||
             k == K::PersistentKeepalive || k == K::PresharedKey;
    case S::WgStun:
      return k == K::Endpoint || k == K::PublicKey || k == K::Stun;
    case S::Relay:
      return k == K::Endpoint || k == K::PublicKey;
    case S::Server:
      return k == K::PrivateKey || k == K::Stun || k == K::WgStun || k == K::Relay;
    case S::kCount:
      break;
  }
  return false;
}

// ---- lexer ----

// One meaningful line: a section header or a key = value pair, comments and blanks removed.
struct Line {
  size_t no = 0;
  bool header = false;
  std::string_view name;   // section name (inside the brackets, trimmed) or key as written
  std::string_view value;  // trimmed; empty for headers
};

class Lexer {
 public:
  explicit Lexer(std::string_view text) : rest_(text) {
    // Editors on Windows like to start UTF-8 files with a byte-order mark.
    if (rest_.starts_with("\xEF\xBB\xBF")) rest_.remove_prefix(3);
  }

  // The next meaningful line; false at the end of the text. Throws Failure.
  [[nodiscard]] bool next(Line& out) {
    while (!rest_.empty()) {
      const size_t nl = rest_.find('\n');
      std::string_view raw = rest_.substr(0, nl);
      rest_ = nl == std::string_view::npos ? std::string_view{} : rest_.substr(nl + 1);
      ++no_;
      if (raw.ends_with('\r')) raw.remove_suffix(1);  // CRLF
      check_raw(raw);
      const std::string_view body = trim(raw.substr(0, raw.find('#')));
      if (body.empty()) continue;
      out = body.front() == '[' ? header(body) : pair(body);
      return true;
    }
    return false;
  }

 private:
  void check_raw(std::string_view raw) const {
    if (raw.size() > kMaxConfigLineLength)
      fail(no_, "line", "longer than " + std::to_string(kMaxConfigLineLength) + " characters");
    // Tabs are whitespace; any other control byte (NUL, a stray CR, ESC) has no business in a
    // config file and would otherwise end up in a kept string such as a PostUp command.
    for (const char c : raw) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f)
        fail(no_, "line", "contains a control character " + quote(std::string_view(&c, 1)));
    }
  }

  Line header(std::string_view body) const {
    if (!body.ends_with(']')) fail(no_, "line", "a section header is [Name] alone on its line");
    const std::string_view name = trim(body.substr(1, body.size() - 2));
    if (name.empty()) fail(no_, "line", "section header without a name");
    return Line{no_, true, name, {}};
  }

  Line pair(std::string_view body) const {
    const size_t eq = body.find('=');
    // "PrivateKey <base64>=" has an '=' (the padding) but not after the key. Nothing of such
    // a line is echoed: it is a key name with its secret glued on.
    const std::string_view word = body.substr(0, std::min(eq, body.find_first_of(" \t")));
    const bool glued = word.size() < trim(body.substr(0, eq)).size();
    if (eq == std::string_view::npos || glued) {
      if (const auto k = lookup_key(word)) fail(no_, name_of(*k), "missing '=' (want Key = Value)");
      if (eq == std::string_view::npos)
        fail(no_, "line", "not a [Section], Key = Value, comment or blank line");
    }
    const std::string_view key = trim(body.substr(0, eq));
    if (key.empty()) fail(no_, "line", "'=' without a key before it");
    return Line{no_, false, key, trim(body.substr(eq + 1))};
  }

  std::string_view rest_;
  size_t no_ = 0;
};

// ---- value parsers (each throws Failure naming the line and key) ----

// A WireGuard key in base64 as wg(8) prints it: exactly 44 characters, one '=' of padding,
// decoding to 32 bytes with zero trailing bits (libsodium rejects non-canonical encodings,
// as wg's key_from_base64 does). The value is never echoed: it may be a secret.
void decode_key(std::string_view v, size_t line, K key, std::span<uint8_t, 32> out) {
  const std::string_view what = "is not a base64 key (44 characters ending in one '=')";
  if (v.size() != 44 || v[43] != '=' || v[42] == '=') fail(line, name_of(key), std::string(what));
  crypto::Key tmp;  // out is written only after a full, valid decode; tmp wipes itself
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(tmp.data(), tmp.size(), v.data(), v.size(), nullptr, &len, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      len != 32 || end != v.data() + v.size())
    fail(line, name_of(key), std::string(what));
  std::copy(tmp.b.begin(), tmp.b.end(), out.begin());
}

crypto::Key parse_private_key(std::string_view v, size_t line, K key) {
  crypto::Key k;
  decode_key(v, line, key, k.span());
  // "AAAA...A=" is a placeholder, not a key; wg(8) would read it as "no private key".
  if (k.is_zero()) fail(line, name_of(key), "is all zeros (not a usable key)");
  return k;
}

crypto::PublicKey parse_public_key(std::string_view v, size_t line, K key) {
  crypto::PublicKey k{};
  decode_key(v, line, key, k);
  if (crypto::is_zero_ct(k)) fail(line, name_of(key), "is all zeros (not a usable key)");
  return k;
}

uint64_t parse_number(std::string_view v, size_t line, K key, uint64_t min, uint64_t max,
                      std::string_view what) {
  uint64_t n = 0;
  if (!parse_uint(v, max, n) || n < min)
    fail(line, name_of(key), quote(v) + " " + std::string(what));
  return n;
}

// RFC 1123 host names: dot-separated labels of letters, digits, '-' (and '_', which real
// zones contain), 1-63 characters each, 253 in all, one trailing dot allowed. A final label
// of digits only is refused: "1.2.3.256" or "10.1" is a mistyped address, not a name.
bool valid_host_name(std::string_view s) {
  if (s.ends_with('.')) s.remove_suffix(1);
  if (s.empty() || s.size() > 253) return false;
  bool last_all_digits = false;
  while (true) {
    const size_t dot = s.find('.');
    const std::string_view label = s.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return false;
    last_all_digits = true;
    for (const char c : label) {
      const bool digit = c >= '0' && c <= '9';
      const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      if (!digit && !alpha && c != '-' && c != '_') return false;
      last_all_digits = last_all_digits && digit;
    }
    if (dot == std::string_view::npos) break;
    s.remove_prefix(dot + 1);
  }
  return !last_all_digits;
}

// "host:port" or "[v6]:port". With allow_names false (bind addresses) the host must be an
// IP literal.
HostPort parse_host_port(std::string_view v, size_t line, K key, bool allow_names) {
  const std::string_view k = name_of(key);
  const std::string_view want =
      allow_names ? "(want host:port or [v6]:port)" : "(want a.b.c.d:port or [v6]:port)";
  std::string_view host;
  std::string_view port;
  bool bracketed = false;
  if (v.starts_with('[')) {
    const size_t close = v.find(']');
    if (close == std::string_view::npos) fail(line, k, quote(v) + " has '[' without ']'");
    host = v.substr(1, close - 1);
    const std::string_view rest = v.substr(close + 1);
    if (rest.empty()) fail(line, k, quote(v) + " has no port " + std::string(want));
    if (rest.front() != ':') fail(line, k, quote(v) + " has text after ']' " + std::string(want));
    port = rest.substr(1);
    bracketed = true;
  } else {
    const size_t colon = v.rfind(':');
    if (colon == std::string_view::npos)
      fail(line, k, quote(v) + " has no port " + std::string(want));
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      fail(line, k, quote(v) + ": an IPv6 address needs brackets, as in [2001:db8::1]:51820");
  }
  if (host.empty()) fail(line, k, quote(v) + " has no host " + std::string(want));
  uint64_t p = 0;
  if (!parse_uint(port, 65535, p) || p == 0)
    fail(line, k, "port " + quote(port) + " is not a port number (1-65535)");

  HostPort hp;
  hp.host = std::string(host);
  hp.port = uint16_t(p);
  const auto ip = dataplane::IpAddress::parse(host.substr(0, host.find('%')));
  if (bracketed && !(ip && ip->family == 6))
    fail(line, k, quote(host) + " in brackets is not an IPv6 address");
  if (ip) {
    const std::string norm = (bracketed ? "[" + hp.host + "]" : hp.host) + ":" + std::to_string(p);
    hp.address = dataplane::Endpoint::parse(norm);
    // Only a %scope can fail here (Endpoint::parse looks interface names up).
    if (!hp.address) fail(line, k, quote(host) + ": unknown %interface, or a %scope on IPv4");
    return hp;
  }
  if (!allow_names) fail(line, k, quote(host) + " is not an IP address " + std::string(want));
  if (!valid_host_name(host))
    fail(line, k, quote(host) + " is neither an IP address nor a host name");
  return hp;
}

// "addr/prefix" or a bare address (full length), host bits kept.
InterfaceAddress parse_address(std::string_view item, size_t line, K key) {
  const size_t slash = item.find('/');
  const std::string_view a = item.substr(0, slash);
  const auto ip = dataplane::IpAddress::parse(a);
  if (!ip) fail(line, name_of(key), quote(a) + " is not an IP address");
  InterfaceAddress out{*ip, uint8_t(ip->family == 4 ? 32 : 128)};
  if (slash != std::string_view::npos) {
    const std::string_view c = item.substr(slash + 1);
    uint64_t cidr = 0;
    if (!parse_uint(c, out.cidr, cidr))
      fail(line, name_of(key),
           "prefix length " + quote(c) + " of " + quote(a) +
               (ip->family == 4 ? " is not 0-32" : " is not 0-128"));
    out.cidr = uint8_t(cidr);
  }
  return out;
}

// The strings wg-quick keeps (DNS items, Table, hook commands): anything printable.
std::string keep(std::string_view v) { return std::string(v); }

bool parse_bool(std::string_view v, size_t line, K key) {
  if (iequals(v, "true")) return true;
  if (iequals(v, "false")) return false;
  fail(line, name_of(key), quote(v) + " is not true or false");
}

// As wg(8)'s parse_fwmark: "off", decimal, or 0x-prefixed hex, at most 32 bits.
uint32_t parse_fwmark(std::string_view v, size_t line, K key) {
  if (iequals(v, "off")) return 0;
  uint64_t n = 0;
  const bool hex = v.size() > 2 && v[0] == '0' && lower(v[1]) == 'x';
  if (!parse_uint(hex ? v.substr(2) : v, UINT32_MAX, n, hex ? 16 : 10))
    fail(line, name_of(key), quote(v) + " is not 'off' or a 32-bit mark (decimal or 0x hex)");
  return uint32_t(n);
}

// ---- the walk shared by both files ----

// Lexes the text and does every check that does not depend on a key's meaning: sections
// known and not repeated, keys known, in their section, single-valued keys set once. The
// concrete parsers supply which sections exist and what each key does.
class SectionWalker {
 public:
  virtual ~SectionWalker() = default;

 protected:
  void walk(std::string_view text) {
    if (text.size() > kMaxConfigBytes)
      fail(0, "file", "larger than " + std::to_string(kMaxConfigBytes) + " bytes (1 MiB)");
    Lexer lexer(text);
    Line line;
    while (lexer.next(line)) {
      if (line.header)
        open(line);
      else
        key_line(line);
    }
    close();
  }

  // Is this section allowed in this kind of file?
  [[nodiscard]] virtual bool has_section(S s) const = 0;
  virtual std::string_view kind() const = 0;  // "mesh", "server": for messages
  virtual void begin(S s, size_t line) = 0;
  virtual void end(S s, size_t header_line) = 0;  // checks the section's required keys
  virtual void apply(S s, K k, const Line& line) = 0;

  // The line that set k in the current section, 0 if none did.
  [[nodiscard]] size_t seen(K k) const { return seen_[size_t(k)]; }
  // The header line of the first section s, 0 if there was none.
  [[nodiscard]] size_t first(S s) const { return first_[size_t(s)]; }

 private:
  void open(const Line& line) {
    close();
    std::optional<S> s;
    for (size_t i = 0; i < kSections.size(); ++i) {
      const std::string_view h = kSections[i].header;
      if (has_section(S(i)) && iequals(line.name, h.substr(1, h.size() - 2))) s = S(i);
    }
    if (!s) {
      if (!echoable_name(line.name)) fail(line.no, "line", "unknown section");
      // Appended piecewise: "[" + std::string(...) trips a GCC 12 -Wrestrict false positive.
      std::string header = "[";
      header.append(line.name).append("]");
      fail(line.no, header, "unknown section in a " + std::string(kind()) + " config");
    }
    const size_t earlier = first_[size_t(*s)];
    if (earlier != 0 && !kSections[size_t(*s)].repeatable)
      fail(line.no, header_of(*s),
           "section given twice (first on line " + std::to_string(earlier) + ")");
    if (earlier == 0) first_[size_t(*s)] = line.no;
    section_ = s;
    section_line_ = line.no;
    seen_.fill(0);
    begin(*s, line.no);
  }

  void close() {
    if (section_) end(*section_, section_line_);
    section_.reset();
  }

  void key_line(const Line& line) {
    const auto k = lookup_key(line.name);
    const std::string shown = k ? std::string(name_of(*k)) : std::string(line.name);
    if (!k && !echoable_name(line.name)) fail(line.no, "line", "unknown key");
    if (!section_) fail(line.no, shown, "key outside any section");
    if (!k || !key_in(*section_, *k))
      fail(line.no, shown, "not a key of " + std::string(header_of(*section_)));
    // Stun lists servers in [WGStun]; in [Server] it is the one bind address.
    const bool repeatable =
        kKeys[size_t(*k)].repeatable || (*section_ == S::WgStun && *k == K::Stun);
    if (!repeatable && seen(*k) != 0)
      fail(line.no, shown,
           "given twice in this section (first on line " + std::to_string(seen(*k)) + ")");
    if (line.value.empty() && !is_list_key(*k)) fail(line.no, shown, "has no value");
    seen_[size_t(*k)] = line.no;
    apply(*section_, *k, line);
  }

  std::optional<S> section_;
  size_t section_line_ = 0;
  std::array<size_t, size_t(K::kCount)> seen_{};
  std::array<size_t, size_t(S::kCount)> first_{};
};

// ---- mesh file ----

class MeshParser : public SectionWalker {
 public:
  MeshConfig parse(std::string_view text) {
    walk(text);
    if (first(S::Interface) == 0) fail(0, "[Interface]", "section missing");
    return std::move(cfg_);
  }

 private:
  bool has_section(S s) const override { return s != S::Server; }
  std::string_view kind() const override { return "mesh"; }

  void begin(S s, size_t line) override {
    if (s == S::Interface) cfg_.interface.line = line;
    if (s == S::Peer) {
      if (cfg_.peers.size() >= kMaxConfigPeers)
        fail(line, "[Peer]", "more than " + std::to_string(kMaxConfigPeers) + " peers");
      cfg_.peers.emplace_back().line = line;
    }
    if (s == S::WgStun) cfg_.wgstun.emplace().line = line;
    if (s == S::Relay) cfg_.relay.emplace().line = line;
  }

  void end(S s, size_t header_line) override {
    const std::string in = " missing from the " + std::string(header_of(s)) + " section";
    if (s == S::Interface && seen(K::PrivateKey) == 0)
      fail(header_line, "PrivateKey", "required," + in);
    if (s != S::Interface && seen(K::PublicKey) == 0)
      fail(header_line, "PublicKey", "required," + in);
    if ((s == S::WgStun || s == S::Relay) && seen(K::Endpoint) == 0)
      fail(header_line, "Endpoint", "required," + in);
  }

  void apply(S s, K k, const Line& line) override {
    if (s == S::Interface) return set_interface(k, line);
    if (s == S::Peer) return set_peer(k, line);
    set_service(s == S::WgStun ? *cfg_.wgstun : *cfg_.relay, k, line);
  }

  void set_interface(K k, const Line& line) {
    InterfaceConfig& i = cfg_.interface;
    const std::string_view v = line.value;
    const size_t n = line.no;
    switch (k) {
      case K::PrivateKey:
        i.private_key = parse_private_key(v, n, k);
        break;
      case K::ListenPort:
        i.listen_port = uint16_t(parse_number(v, n, k, 0, 65535, "is not a port (0-65535)"));
        break;
      case K::Address:
        for_each_item(v, n, name_of(k),
                      [&](std::string_view a) { i.addresses.push_back(parse_address(a, n, k)); });
        break;
      // 576 is the datagram size every IPv4 host must accept (RFC 791); below it a tunnel is
      // unusable, so a smaller value is a typo.
      case K::Mtu:
        i.mtu = uint32_t(parse_number(v, n, k, 576, 65535, "is not an MTU (576-65535)"));
        break;
      case K::Dns:
        for_each_item(v, n, name_of(k), [&](std::string_view d) { i.dns.push_back(keep(d)); });
        break;
      case K::Table:
        i.table = keep(v);
        break;
      case K::PreUp:
        i.pre_up.push_back(keep(v));
        break;
      case K::PostUp:
        i.post_up.push_back(keep(v));
        break;
      case K::PreDown:
        i.pre_down.push_back(keep(v));
        break;
      case K::PostDown:
        i.post_down.push_back(keep(v));
        break;
      case K::SaveConfig:
        i.save_config = parse_bool(v, n, k);
        break;
      case K::FwMark:
        i.fwmark = parse_fwmark(v, n, k);
        break;
      default:
        break;  // key_in() let only interface keys through
    }
  }

  void set_peer(K k, const Line& line) {
    PeerConfig& p = cfg_.peers.back();
    const std::string_view v = line.value;
    const size_t n = line.no;
    switch (k) {
      case K::PublicKey: {
        p.public_key = parse_public_key(v, n, k);
        // wg(8) would merge the two sections into one peer; in a mesh file that is a
        // copy-paste mistake.
        const auto [it, fresh] = peer_lines_.emplace(p.public_key, n);
        if (!fresh) fail(n, name_of(k), "same peer as on line " + std::to_string(it->second));
        break;
      }
      case K::PresharedKey: {
        crypto::Key psk;
        decode_key(v, n, k, psk.span());
        p.preshared_key = psk;
        break;
      }
      case K::AllowedIps:
        for_each_item(v, n, name_of(k), [&](std::string_view a) {
          const InterfaceAddress ia = parse_address(a, n, k);
          dataplane::IpPrefix pfx{ia.addr, ia.cidr};
          pfx.mask();
          p.allowed_ips.push_back(pfx);
        });
        break;
      case K::Endpoint:
        p.endpoint = parse_host_port(v, n, k, true);
        break;
      case K::PersistentKeepalive:
        p.persistent_keepalive =
            iequals(v, "off")
                ? 0
                : uint16_t(parse_number(v, n, k, 0, 65535, "is not 0-65535 seconds or 'off'"));
        break;
      default:
        break;
    }
  }

  void set_service(ServiceConfig& svc, K k, const Line& line) {
    if (k == K::Endpoint) svc.endpoint = parse_host_port(line.value, line.no, k, true);
    if (k == K::PublicKey) svc.public_key = parse_public_key(line.value, line.no, k);
    if (k == K::Stun) {
      if (svc.stun.size() >= kMaxStunServers)
        fail(line.no, name_of(k), "more than " + std::to_string(kMaxStunServers) + " servers");
      svc.stun.push_back(parse_host_port(line.value, line.no, k, true));
    }
  }

  MeshConfig cfg_;
  std::map<crypto::PublicKey, size_t> peer_lines_;  // public key -> line, for duplicates
};

// ---- server file ----

class ServerParser : public SectionWalker {
 public:
  ServerConfig parse(std::string_view text) {
    walk(text);
    if (first(S::Server) == 0) fail(0, "[Server]", "section missing");
    return std::move(cfg_);
  }

 private:
  bool has_section(S s) const override { return s == S::Server; }
  std::string_view kind() const override { return "server"; }
  void begin(S, size_t) override {}

  void end(S, size_t header_line) override {
    if (seen(K::PrivateKey) == 0)
      fail(header_line, "PrivateKey", "required, missing from the [Server] section");
    if (seen(K::Stun) == 0 && seen(K::WgStun) == 0 && seen(K::Relay) == 0)
      fail(header_line, "[Server]",
           "none of Stun, WGStun, Relay is set; at least one service is needed");
  }

  void apply(S, K k, const Line& line) override {
    if (k == K::PrivateKey) {
      cfg_.private_key = parse_private_key(line.value, line.no, k);
      return;
    }
    auto addr = parse_host_port(line.value, line.no, k, false).address;
    if (k == K::Stun) cfg_.stun = addr;
    if (k == K::WgStun) cfg_.wgstun = addr;
    if (k == K::Relay) cfg_.relay = addr;
  }

  ServerConfig cfg_;
};

// ---- files ----

// Reads at most kMaxConfigBytes + 1 bytes into buf, which is sized once up front: growing it
// would leave copies of the private key in freed memory. Returns the number of bytes read;
// throws Failure (line 0, key "file").
size_t read_bounded(const std::string& path, std::string& buf) {
  auto sys = [](std::string_view what, int e) {
    fail(0, "file", std::string(what) + ": " + std::generic_category().message(e));
  };
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) sys("cannot open", errno);
  buf.assign(kMaxConfigBytes + 1, '\0');
  size_t got = 0;
  while (got < buf.size()) {
    const ssize_t n = read(fd, buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      close(fd);
      sys("cannot read", e);
    }
    if (n == 0) break;
    got += size_t(n);
  }
  close(fd);
  return got;
}

// Runs a parse that may throw Failure; reports it in err.
template <class Config, class Parse>
std::optional<Config> run(std::string_view file, ConfigError& err, Parse parse) {
  try {
    return parse();
  } catch (const Failure& f) {
    err = to_error(file, f);
    return std::nullopt;
  }
}

template <class Config>
std::optional<Config> load(const std::string& path, ConfigError& err,
                           std::optional<Config> (*parse)(std::string_view, std::string_view,
                                                          ConfigError&)) {
  std::string buf;
  const auto got = run<size_t>(path, err, [&] { return read_bounded(path, buf); });
  std::optional<Config> cfg;
  if (got) cfg = parse(std::string_view(buf.data(), *got), path, err);
  crypto::wipe(buf.data(), buf.size());
  return cfg;
}

}  // namespace

std::string HostPort::str() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string InterfaceAddress::str() const { return addr.str() + "/" + std::to_string(cidr); }

std::optional<MeshConfig> parse_mesh_config(std::string_view text, std::string_view file,
                                            ConfigError& err) {
  return run<MeshConfig>(file, err, [&] { return MeshParser().parse(text); });
}

std::optional<ServerConfig> parse_server_config(std::string_view text, std::string_view file,
                                                ConfigError& err) {
  return run<ServerConfig>(file, err, [&] { return ServerParser().parse(text); });
}

std::optional<MeshConfig> load_mesh_config(const std::string& path, ConfigError& err) {
  return load<MeshConfig>(path, err, &parse_mesh_config);
}

std::optional<ServerConfig> load_server_config(const std::string& path, ConfigError& err) {
  return load<ServerConfig>(path, err, &parse_server_config);
}

}  // namespace meshwg::control
