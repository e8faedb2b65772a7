// Applies UAPI set requests to the device under its configuration lock, so a set is atomic
// with respect to packets and other sets; produces get snapshots.
#include "control/device_uapi.h"

#include <algorithm>
#include <cerrno>
#include <tuple>
#include <chrono>

namespace meshwg::control {

int DeviceUapi::apply_set(const SetRequest& req) {
  return dev_.with_config([&]() -> int {
    // The only step that can fail is binding the port: do it first, so a failure leaves
    // everything else untouched.
    if (req.listen_port) {
      if (int e = dev_.set_listen_port_locked(*req.listen_port); e != 0) return e;
    }
    if (req.fwmark) {
      if (int e = dev_.set_fwmark_locked(*req.fwmark); e != 0) return e;
    }
    if (req.private_key) (void)dev_.set_private_key_locked(req.private_key->span());
    if (req.replace_peers) dev_.remove_all_peers_locked();
    for (const PeerChange& pc : req.peers) {
      dataplane::Peer* peer = dev_.find_peer_locked(pc.public_key);
      if (pc.remove) {
        if (peer) dev_.remove_peer_locked(peer);
        continue;
      }
      if (!peer) {
        if (pc.update_only) continue;
        peer = dev_.add_peer_locked(pc.public_key);
        if (!peer) continue;  // our own public key: ignored, as wireguard-go does
      }
      if (pc.preshared_key) dev_.set_preshared_key_locked(peer, pc.preshared_key->span());
      if (pc.endpoint) dev_.set_endpoint_locked(peer, *pc.endpoint);
      if (pc.replace_allowed_ips) dev_.clear_allowed_ips_locked(peer);
      for (const AllowedIpChange& a : pc.allowed_ips) {
        if (a.remove)
          dev_.remove_allowed_ip_locked(peer, a.prefix);
        else
          dev_.add_allowed_ip_locked(peer, a.prefix);
      }
      // Last, so the keepalive it may send goes to the endpoint set above.
      if (pc.persistent_keepalive) dev_.set_persistent_keepalive_locked(peer, *pc.persistent_keepalive);
    }
    return 0;
  });
}

DeviceSnapshot DeviceUapi::snapshot() {
  DeviceSnapshot snap;
  dev_.with_config_shared([&] {
    const auto& id = dev_.identity_locked();
    if (id.has_key) snap.private_key = id.private_key;
    snap.listen_port = dev_.listen_port_locked();
    snap.fwmark = dev_.fwmark_locked();
    dev_.for_each_peer_locked([&](dataplane::Peer& p) {
      PeerSnapshot ps;
      ps.public_key = p.public_key;
      {
        std::lock_guard lk(p.mu);
        ps.preshared_key = p.preshared_key;
        if (p.endpoint.valid()) ps.endpoint = p.endpoint;
        if (p.last_handshake.time_since_epoch().count() != 0) {
          const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              p.last_handshake.time_since_epoch())
                              .count();
          ps.last_handshake_sec = ns / 1'000'000'000;
          ps.last_handshake_nsec = ns % 1'000'000'000;
        }
        ps.persistent_keepalive = p.persistent_keepalive;
      }
      ps.rx_bytes = p.rx_bytes.load();
      ps.tx_bytes = p.tx_bytes.load();
      dev_.for_each_allowed_ip_locked(&p, [&](const dataplane::IpPrefix& pfx) {
        ps.allowed_ips.push_back(pfx);
      });
      // A canonical order (IPv4 first, then by address and length) makes `wg showconf`
      // output stable, so setconf(showconf) reproduces it byte for byte.
      std::sort(ps.allowed_ips.begin(), ps.allowed_ips.end(),
                [](const dataplane::IpPrefix& x, const dataplane::IpPrefix& y) {
                  return std::tie(x.addr.family, x.addr.bytes, x.cidr) <
                         std::tie(y.addr.family, y.addr.bytes, y.cidr);
                });
      snap.peers.push_back(std::move(ps));
    });
  });
  return snap;
}

}  // namespace meshwg::control
