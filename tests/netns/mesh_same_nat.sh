#!/usr/bin/env bash
# Two peers on the same LAN behind one NAT: their public (WG-STUN) candidates share nat_a's
# address and the NAT does no hairpinning, so the only direct path is the LAN one; the peers
# start relayed and must move to each other's local candidate 10.1.0.x:51000.
#
#   cli_a (mwg-PID-ca)                  nat_a (mwg-PID-na)              inet (mwg-PID-in)
#   meshwg --config a.conf              bridge br0 10.1.0.1/24          router, no NAT
#   10.1.0.2/24 ── eth0 ─────────────── lan0 ┐                          a0 198.51.100.254
#   tunnel 10.99.0.1/24                      ├─ br0 ─ masquerade ─ wan0 198.51.100.1 ── a0
#   cli_b (mwg-PID-cb)                       │        (keeps ports)
#   meshwg --config b.conf                   │                          s0 203.0.113.254 ──┐
#   10.1.0.3/24 ── eth0 ─────────────── lan1 ┘                                             │
#   tunnel 10.99.0.2/24                                                                    │
#                                       (nat_b, mwg-PID-nb: unused)                        │
#   srv (mwg-PID-sv)  meshwg-server: Relay 203.0.113.2:443 (TCP), WGStun :51820,              │
#                     Stun :3478        eth0 203.0.113.2/24 ─────────────────────────────── s0
#
#   direct path wanted:  10.1.0.2:51000 ⇄ 10.1.0.3:51000 (on the LAN, through the bridge)
#
# Checks: relays up; both sides "direct" within 20 s of the start; a's endpoint for b is
# 10.1.0.3:51000 and b's for a is 10.1.0.2:51000; ping both ways through the tunnel; still
# direct on the LAN afterwards. Note: time to direct.
# shellcheck disable=SC2317  # functions here run through check / wait_until
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mesh_lab same_nat=1 || die "mesh lab setup"
start_mesh_peers || die "meshwg peers did not start"

check "a's relay connection comes up" wait_until 10 0.1 relay_up "$CA" "$IFA"
check "b's relay connection comes up" wait_until 10 0.1 relay_up "$CB" "$IFB"
check "both sides direct within 20 s of starting the peers" \
  save_out ttd wait_both_path "$MESH_T0" 20 direct "$CA" "$IFA" "$CB" "$IFB"
note "same LAN: time to direct (start of both peers -> both direct): $(saved ttd) s"

check "a's endpoint for b is b's LAN address 10.1.0.3:51000" path_is "$CA" "$IFA" direct 10.1.0.3:51000
check "b's endpoint for a is a's LAN address 10.1.0.2:51000" path_is "$CB" "$IFB" direct 10.1.0.2:51000
check "ping a -> b over the LAN path" ping_first "$CA" 10.99.0.2
check "ping b -> a over the LAN path" ping_ok "$CB" 10.99.0.1 5
check "a still on the LAN path after the pings" path_is "$CA" "$IFA" direct 10.1.0.3:51000
check "b still on the LAN path after the pings" path_is "$CB" "$IFB" direct 10.1.0.2:51000
note "a's view of b: $(peer_field "$CA" "$IFA" state rtt_ms upgrades fallbacks 2>/dev/null |
  awk '{ printf "state %s, rtt_ms %s, upgrades %s, fallbacks %s", $1, $2, $3, $4 }')"
check "both daemons still running" mesh_peers_alive

stop_mesh_peers || true
finish
