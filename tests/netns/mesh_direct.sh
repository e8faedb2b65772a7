#!/usr/bin/env bash
# The upgrade from the relay to a direct path: two meshwg peers behind separate plain
# (endpoint-independent) NATs start relayed, exchange candidates over the relay, check them
# and both move their WireGuard endpoint to the other's public WG-STUN mapping; the direct path
# then survives the loss of the relay server.
#
#   cli_a (mwg-PID-ca)          nat_a (mwg-PID-na)         inet (mwg-PID-in)
#   meshwg --config a.conf       masquerade (keeps ports)   router, no NAT
#   10.1.0.2/24 ── eth0 ──────── lan0 10.1.0.1             a0 198.51.100.254
#   WireGuard :51000             wan0 198.51.100.1 ──────── a0
#   tunnel 10.99.0.1/24                                     b0 198.51.101.254 ─┐
#                                                                              │
#   cli_b (mwg-PID-cb)          nat_b (mwg-PID-nb)                             │
#   meshwg --config b.conf       masquerade (keeps ports)                      │
#   10.2.0.2/24 ── eth0 ──────── lan0 10.2.0.1                                 │
#   WireGuard :51000             wan0 198.51.101.1 ─────────────────────────── b0
#   tunnel 10.99.0.2/24                                     s0 203.0.113.254 ──┐
#                                                                              │
#   srv (mwg-PID-sv)  meshwg-server: Relay 203.0.113.2:443 (TCP), WGStun :51820,  │
#                     Stun :3478        eth0 203.0.113.2/24 ─────────────────── s0
#
#   direct path wanted:  10.1.0.2:51000 → 198.51.100.1:51000 ⇄ 198.51.101.1:51000 ← 10.2.0.2:51000
#
# Checks: relays up; within 20 s of starting the peers both show path "direct" (state
# "direct": a confirmed switch) with the other NAT's public address 198.51.10x.1:51000 as
# endpoint; ping both ways; iperf3 (3 s) through the tunnel, still direct after it; nat_a's
# conntrack holds the direct WireGuard flow 10.1.0.2:51000 → 198.51.101.1; meshwg-server
# stopped: the path stays direct on both sides and 25 pings over 5 s all come back, while the
# relay connection is down. Notes: time to direct, Mbit/s, RTT, upgrade counters.
# shellcheck disable=SC2317  # functions here run through check / wait_until
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mesh_lab natA=plain natB=plain || die "mesh lab setup"
start_mesh_peers || die "meshwg peers did not start"

check "a's relay connection comes up" wait_until 10 0.1 relay_up "$CA" "$IFA"
check "b's relay connection comes up" wait_until 10 0.1 relay_up "$CB" "$IFB"
check "both sides direct within 20 s of starting the peers" \
  save_out ttd wait_both_path "$MESH_T0" 20 direct "$CA" "$IFA" "$CB" "$IFB"
note "time to direct (start of both peers -> both direct): $(saved ttd) s"

check "a's endpoint for b is nat_b's public WireGuard mapping" \
  path_is "$CA" "$IFA" direct 198.51.101.1:51000
check "b's endpoint for a is nat_a's public WireGuard mapping" \
  path_is "$CB" "$IFB" direct 198.51.100.1:51000
check "ping a -> b over the direct path" ping_ok "$CA" 10.99.0.2 5
check "ping b -> a over the direct path" ping_ok "$CB" 10.99.0.1 5

check "iperf3 a -> b through the direct tunnel (3 s)" save_out mbps iperf_mbps "$CB" 10.99.0.2 "$CA" 3
note "direct path: iperf3, 1 TCP stream, 3 s: $(saved mbps) Mbit/s"
check "still direct on both sides after the transfer" wait_both_path "$(now_s)" 2 direct \
  "$CA" "$IFA" "$CB" "$IFB"

direct_flow() {  # nat_a's conntrack: the WireGuard socket's flow straight to nat_b
  local flows
  flows=$(nsx "$NA" conntrack -L -p udp --orig-src 10.1.0.2 --orig-port-src 51000 \
    --orig-dst 198.51.101.1 2>/dev/null)
  echo "nat_a conntrack, 10.1.0.2:51000 -> 198.51.101.1: ${flows:-(none)}"
  [[ -n $flows ]]
}
check "nat_a's conntrack holds the direct flow 10.1.0.2:51000 -> 198.51.101.1" direct_flow
note "a's view of b: $(peer_field "$CA" "$IFA" state rtt_ms upgrades fallbacks bans 2>/dev/null |
  awk '{ printf "state %s, rtt_ms %s, upgrades %s, fallbacks %s, bans %s", $1, $2, $3, $4, $5 }')"

# Relay loss: the server goes away; the direct path must not notice.
stop_mesh_server || true
ip netns exec "$CA" timeout 25 ping -n -q -c 25 -i 0.2 -W 2 -w 20 10.99.0.2 >"$WORKDIR/ping-norelay.out" 2>&1 &
PING_PID=$!
track_pid "$PING_PID"
stays_direct() {  # 5 s, a look every 0.5 s
  local i
  for ((i = 0; i < 10; i++)); do
    if ! { path_is "$CA" "$IFA" direct 198.51.101.1: && path_is "$CB" "$IFB" direct 198.51.100.1:; }; then
      return 1
    fi
    sleep 0.5
  done
}
check "without the relay server: both stay direct for 5 s" stays_direct
ping_all_back() {
  local rc=0
  wait "$PING_PID" || rc=$?
  cat "$WORKDIR/ping-norelay.out"
  ((rc == 0)) && grep -q ' 0% packet loss' "$WORKDIR/ping-norelay.out"
}
check "without the relay server: 25 pings a -> b over 5 s, none lost" ping_all_back
check "the relay connection is really down (a)" wait_until 5 0.2 relay_down "$CA" "$IFA"
check "both daemons still running" mesh_peers_alive

stop_mesh_peers || true
finish
