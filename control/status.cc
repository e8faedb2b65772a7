// `meshwg status` (see status.h for the JSON schema).
#include "control/status.h"

#include <sodium.h>

#include <cstdio>

#include "dataplane/messages.h"

namespace meshwg::control {

std::string key_to_base64(std::span<const uint8_t, 32> key) {
  char out[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(out, sizeof(out), key.data(), key.size(), sodium_base64_VARIANT_ORIGINAL);
  return out;
}

bool is_loopback(const dataplane::IpAddress& a) {
  if (a.family == 4) return a.bytes[0] == 127;
  if (a.family != 6) return false;
  static constexpr uint8_t kLoop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(a.bytes.begin(), a.bytes.end(), kLoop6)) return true;
  return std::equal(kMapped, kMapped + 12, a.bytes.begin()) && a.bytes[12] == 127;
}

namespace {

std::string bytes_text(uint64_t n) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", v, kUnits[u]);
  return buf;
}

std::string ago_text(int64_t secs) {
  if (secs < 60) return std::to_string(secs) + " s ago";
  if (secs < 3600) return std::to_string(secs / 60) + " min " + std::to_string(secs % 60) + " s ago";
  return std::to_string(secs / 3600) + " h " + std::to_string(secs / 60 % 60) + " min ago";
}
}  // namespace

std::string classify_path(const PeerSnapshot& p, std::chrono::system_clock::time_point now) {
  if (!p.endpoint || !p.endpoint->valid() || p.last_handshake_sec == 0) return "none";
  const auto hs = std::chrono::system_clock::time_point(std::chrono::seconds(p.last_handshake_sec));
  if (now - hs >= dataplane::kRejectAfterTime) return "none";
  return is_loopback(p.endpoint->ip()) ? "relayed" : "direct";
}

InterfaceStatus status_from_snapshot(const std::string& ifname, const DeviceSnapshot& snap,
                                     std::chrono::system_clock::time_point now) {
  InterfaceStatus s;
  s.interface = ifname;
  s.listen_port = snap.listen_port;
  for (const PeerSnapshot& p : snap.peers) {
    PeerStatus ps;
    ps.public_key = key_to_base64(p.public_key);
    if (p.endpoint && p.endpoint->valid()) ps.endpoint = p.endpoint->str();
    ps.path = classify_path(p, now);
    ps.latest_handshake = p.last_handshake_sec;
    ps.rx_bytes = p.rx_bytes;
    ps.tx_bytes = p.tx_bytes;
    s.peers.push_back(std::move(ps));
  }
  return s;
}

bool merge_mesh_status(InterfaceStatus& s, std::string_view doc) {
  const auto j = nlohmann::json::parse(doc, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("check_port") || !j["check_port"].is_number_unsigned() ||
      j["check_port"].get<uint64_t>() > 65535 || !j.contains("candidates") ||
      !j["candidates"].is_array())
    return false;
  // Ours carry their age; a peer's (below) do not.
  auto candidate = [](const nlohmann::json& c, bool aged, std::vector<CandidateStatus>& out) {
    if (!c.is_object() || !c.contains("kind") || !c["kind"].is_string() ||
        !c.contains("address") || !c["address"].is_string() ||
        (aged && (!c.contains("age_s") || !c["age_s"].is_number_integer())))
      return false;
    out.push_back({c["kind"].get<std::string>(), c["address"].get<std::string>(),
                   aged ? c["age_s"].get<int64_t>() : 0});
    return true;
  };
  std::vector<CandidateStatus> cs;
  for (const auto& c : j["candidates"])
    if (!candidate(c, true, cs)) return false;
  if (j.contains("relay") && !j["relay"].is_null() &&
      (!j["relay"].is_string() || (j["relay"] != "up" && j["relay"] != "down")))
    return false;
  const auto relay = j.contains("relay") && j["relay"].is_string()
                         ? std::optional<std::string>(j["relay"].get<std::string>())
                         : std::nullopt;
  // Optional: what each relayed peer told us (sealed) about its candidates, and the control
  // plane's path to it.
  std::vector<std::pair<std::string, PeerStatus>> remote;
  auto opt_u64 = [](const nlohmann::json& p, const char* k, std::optional<uint64_t>& out) {
    if (!p.contains(k) || p[k].is_null()) return true;
    if (!p[k].is_number_unsigned()) return false;
    out = p[k].get<uint64_t>();
    return true;
  };
  if (j.contains("peers")) {
    if (!j["peers"].is_array()) return false;
    for (const auto& p : j["peers"]) {
      if (!p.is_object() || !p.contains("public_key") || !p["public_key"].is_string() ||
          !p.contains("candidates") || !p["candidates"].is_array())
        return false;
      PeerStatus got;
      for (const auto& c : p["candidates"])
        if (!candidate(c, false, got.candidates)) return false;
      if (p.contains("state") && !p["state"].is_null()) {
        if (!p["state"].is_string()) return false;
        const auto st = p["state"].get<std::string>();
        if (st != "relayed" && st != "switching" && st != "direct") return false;
        got.state = st;
      }
      if (p.contains("rtt_ms") && !p["rtt_ms"].is_null()) {
        if (!p["rtt_ms"].is_number() || !(p["rtt_ms"].get<double>() >= 0)) return false;
        got.rtt_ms = p["rtt_ms"].get<double>();
      }
      if (!opt_u64(p, "upgrades", got.upgrades) || !opt_u64(p, "fallbacks", got.fallbacks))
        return false;
      if (p.contains("bans")) {
        if (!p["bans"].is_array()) return false;
        for (const auto& b : p["bans"]) {
          if (!b.is_object() || !b.contains("pair") || !b["pair"].is_string() ||
              !b.contains("ttl_s") || !b["ttl_s"].is_number_integer() ||
              !b.contains("failures") || !b["failures"].is_number_unsigned())
            return false;
          got.bans.push_back({b["pair"].get<std::string>(), b["ttl_s"].get<int64_t>(),
                              b["failures"].get<uint64_t>()});
        }
      }
      remote.emplace_back(p["public_key"].get<std::string>(), std::move(got));
    }
  }
  for (auto& [key, got] : remote)
    for (PeerStatus& ps : s.peers)
      if (ps.public_key == key) {
        ps.candidates = std::move(got.candidates);
        ps.state = std::move(got.state);
        if (got.rtt_ms) ps.rtt_ms = got.rtt_ms;
        ps.upgrades = got.upgrades;
        ps.fallbacks = got.fallbacks;
        ps.bans = std::move(got.bans);
      }
  s.check_port = uint16_t(j["check_port"].get<uint64_t>());
  s.candidates = std::move(cs);
  s.relay = relay;
  return true;
}

nlohmann::json to_json(const InterfaceStatus& s) {
  nlohmann::json j;
  j["interface"] = s.interface;
  j["listen_port"] = s.listen_port;
  j["check_port"] = s.check_port ? nlohmann::json(*s.check_port) : nlohmann::json(nullptr);
  j["relay"] = s.relay ? nlohmann::json(*s.relay) : nlohmann::json(nullptr);
  j["candidates"] = nlohmann::json::array();
  for (const CandidateStatus& c : s.candidates)
    j["candidates"].push_back({{"kind", c.kind}, {"address", c.address}, {"age_s", c.age_s}});
  j["peers"] = nlohmann::json::array();
  for (const PeerStatus& p : s.peers) {
    nlohmann::json pj;
    pj["public_key"] = p.public_key;
    pj["endpoint"] = p.endpoint ? nlohmann::json(*p.endpoint) : nlohmann::json(nullptr);
    pj["path"] = p.path;
    pj["rtt_ms"] = p.rtt_ms ? nlohmann::json(*p.rtt_ms) : nlohmann::json(nullptr);
    pj["latest_handshake"] = p.latest_handshake;
    pj["rx_bytes"] = p.rx_bytes;
    pj["tx_bytes"] = p.tx_bytes;
    pj["candidates"] = nlohmann::json::array();
    for (const CandidateStatus& c : p.candidates)
      pj["candidates"].push_back({{"kind", c.kind}, {"address", c.address}});
    pj["state"] = p.state ? nlohmann::json(*p.state) : nlohmann::json(nullptr);
    pj["upgrades"] = p.upgrades ? nlohmann::json(*p.upgrades) : nlohmann::json(nullptr);
    pj["fallbacks"] = p.fallbacks ? nlohmann::json(*p.fallbacks) : nlohmann::json(nullptr);
    pj["bans"] = nlohmann::json::array();
    for (const BanStatus& b : p.bans)
      pj["bans"].push_back({{"pair", b.pair}, {"ttl_s", b.ttl_s}, {"failures", b.failures}});
    j["peers"].push_back(std::move(pj));
  }
  return j;
}

std::string to_text(const InterfaceStatus& s, std::chrono::system_clock::time_point now) {
  std::string out = "interface: " + s.interface + "\n  listening port: " +
                    std::to_string(s.listen_port) + "\n";
  if (s.check_port) out += "  check port: " + std::to_string(*s.check_port) + "\n";
  if (s.relay) out += "  relay: " + *s.relay + "\n";
  if (s.candidates.empty()) out += "  candidates: (none gathered)\n";
  for (const CandidateStatus& c : s.candidates)
    out += "  candidate: " + c.address + " (" + c.kind + ", " + std::to_string(c.age_s) + " s old)\n";
  const int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  for (const PeerStatus& p : s.peers) {
    out += "\npeer: " + p.public_key + "\n";
    out += "  endpoint: " + (p.endpoint ? *p.endpoint : std::string("(none)")) + "\n";
    out += "  path: " + p.path;
    if (p.rtt_ms) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), ", rtt %.2f ms", *p.rtt_ms);
      out += buf;
    }
    if (p.state) {
      out += " (control plane: " + *p.state;
      if (p.upgrades) out += ", " + std::to_string(*p.upgrades) + " upgrades";
      if (p.fallbacks) out += ", " + std::to_string(*p.fallbacks) + " fallbacks";
      out += ")";
    }
    out += "\n  latest handshake: " +
           (p.latest_handshake == 0 ? std::string("never")
                                    : ago_text(std::max<int64_t>(0, now_s - p.latest_handshake))) +
           "\n";
    for (const CandidateStatus& c : p.candidates)
      out += "  candidate: " + c.address + " (" + c.kind + ")\n";
    for (const BanStatus& b : p.bans)
      out += "  banned pair: " + b.pair + " (" + std::to_string(b.failures) + " failures, " +
             std::to_string(b.ttl_s) + " s left)\n";
    out += "  transfer: " + bytes_text(p.rx_bytes) + " received, " + bytes_text(p.tx_bytes) +
           " sent\n";
  }
  return out;
}

}  // namespace meshwg::control
