#!/usr/bin/env bash
# Fallback and recovery: two peers behind plain NATs go direct; then the internet router cuts
# UDP between the two NATs (the relay's TCP and STUN / WG-STUN to the server still pass). The
# direct path goes quiet, both fall back to the relay on their own, ban the dead pair, and
# traffic keeps flowing over the relay. When the cut is lifted, checks find the pair working
# again and both go direct again.
#
#   cli_a (mwg-PID-ca)          nat_a (mwg-PID-na)         inet (mwg-PID-in)
#   meshwg --config a.conf       masquerade (keeps ports)   router, no NAT
#   10.1.0.2/24 ── eth0 ──────── lan0 10.1.0.1             a0 198.51.100.254
#   tunnel 10.99.0.1/24          wan0 198.51.100.1 ──────── a0
#                                                           b0 198.51.101.254 ─┐
#   cli_b (mwg-PID-cb)          nat_b (mwg-PID-nb)          table ip mwgcut,   │
#   meshwg --config b.conf       masquerade (keeps ports)   chain cut (forward):
#   10.2.0.2/24 ── eth0 ──────── lan0 10.2.0.1               UDP 198.51.100.1 ⇄ │
#   tunnel 10.99.0.2/24          wan0 198.51.101.1 ───────── 198.51.101.1 drop ─ b0
#                                                           s0 203.0.113.254 ──┐
#   srv (mwg-PID-sv)  meshwg-server: Relay 203.0.113.2:443 (TCP), WGStun :51820,  │
#                     Stun :3478        eth0 203.0.113.2/24 ─────────────────── s0
#
# Checks: both direct (within 20 s of the start); with a ping stream running, the cut: both
# show "relayed" (loopback endpoint) within 10 s, ping works over the relay, the cut rules
# really dropped packets, each side counted a fallback and bans the pair it was using (the
# "MINE>YOURS" pair whose YOURS is the endpoint it had); cut lifted (nft flush chain ip mwgcut
# cut): both "direct" again within 60 s on the same public endpoints, ping works. Notes: seconds
# from the cut to relayed and from the heal to direct, pings lost across the cut, the bans.
# shellcheck disable=SC2317  # functions here run through check / wait_until
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mesh_lab natA=plain natB=plain || die "mesh lab setup"
start_mesh_peers || die "meshwg peers did not start"

check "a's relay connection comes up" wait_until 10 0.1 relay_up "$CA" "$IFA"
check "b's relay connection comes up" wait_until 10 0.1 relay_up "$CB" "$IFB"
check "both sides direct (within 20 s of the start)" \
  save_out ttd wait_both_path "$MESH_T0" 20 direct "$CA" "$IFA" "$CB" "$IFB"
EP_A=$(peer_field "$CA" "$IFA" endpoint 2>/dev/null || echo none)  # a's endpoint for b
EP_B=$(peer_field "$CB" "$IFB" endpoint 2>/dev/null || echo none)
check "a -> b over the direct path before the cut ($EP_A)" ping_ok "$CA" 10.99.0.2 3

# fell_back_and_banned NS IFNAME ENDPOINT: fallbacks >= 1, and a ban "MINE>ENDPOINT".
fell_back_and_banned() {
  local got
  got=$(peer_field "$1" "$2" fallbacks bans) || return 1
  echo "fallbacks, bans: $got"
  "$PY" -c '
import json, sys
fallbacks, bans = sys.argv[1].split(" ", 1)
bans = json.loads(bans) or []
ok = json.loads(fallbacks) not in (None, 0)
hit = [b for b in bans if str(b.get("pair", "")).split(">")[-1] == sys.argv[2]]
print("fallback counted:", ok, "- bans of the pair to", sys.argv[2] + ":", hit)
sys.exit(0 if ok and hit else 1)' "$got" "$3"
}

# A steady stream across the cut (stopped with SIGINT, so ping prints its summary).
ip netns exec "$CA" timeout 60 ping -n -q -i 0.2 -W 2 10.99.0.2 >"$WORKDIR/ping-cut.out" 2>&1 &
PING_PID=$!
track_pid "$PING_PID"
sleep 1

nsx "$INET" nft -f - <<EOF || die "cut rules"
add rule ip mwgcut cut ip saddr 198.51.100.1 ip daddr 198.51.101.1 meta l4proto udp counter drop
add rule ip mwgcut cut ip saddr 198.51.101.1 ip daddr 198.51.100.1 meta l4proto udp counter drop
EOF
T_CUT=$(now_s)
log "UDP between the NATs cut"

# A first ban lasts 5 s from the fallback, shorter than a slow status round of both sides may
# take: watch each side for it from the cut on, in the background, and look at the result later.
wait_until 20 0.1 fell_back_and_banned "$CA" "$IFA" "$EP_A" >"$WORKDIR/ban_a.out" 2>&1 &
BAN_A=$!
track_pid "$BAN_A"
wait_until 20 0.1 fell_back_and_banned "$CB" "$IFB" "$EP_B" >"$WORKDIR/ban_b.out" 2>&1 &
BAN_B=$!
track_pid "$BAN_B"
ban_seen() {  # PID OUT: what the background wait_until PID ended with
  local rc=0
  wait "$1" || rc=$?
  cat "$2"
  return "$rc"
}

check "cut: both sides relayed within 10 s" \
  save_out to_relay wait_both_path "$T_CUT" 10 relayed "$CA" "$IFA" "$CB" "$IFB"
note "cut -> both relayed: $(saved to_relay) s"
check "a counted a fallback and bans the pair to $EP_A" ban_seen "$BAN_A" "$WORKDIR/ban_a.out"
check "b counted a fallback and bans the pair to $EP_B" ban_seen "$BAN_B" "$WORKDIR/ban_b.out"
note "a after the cut: $(head -n 1 "$WORKDIR/ban_a.out")"
note "b after the cut: $(head -n 1 "$WORKDIR/ban_b.out")"

check "cut: a's endpoint is the relay's loopback socket" path_is "$CA" "$IFA" relayed 127.0.0.1:
check "cut: b's endpoint is the relay's loopback socket" path_is "$CB" "$IFB" relayed 127.0.0.1:
check "cut: ping a -> b works over the relay" wait_until 5 0.2 ping_ok "$CA" 10.99.0.2 3
check "cut: ping b -> a works over the relay" wait_until 5 0.2 ping_ok "$CB" 10.99.0.1 3

kill -INT "$PING_PID" 2>/dev/null || true
wait "$PING_PID" 2>/dev/null || true
note "ping stream across the cut: $(grep 'packets transmitted' "$WORKDIR/ping-cut.out" || echo '(no summary)')"

cut_dropped() {
  local n
  n=$(nsx "$INET" nft list chain ip mwgcut cut | awk '/counter packets/ {
    for (i = 1; i <= NF; i++) if ($i == "packets") s += $(i + 1) } END { print s + 0 }')
  echo "packets dropped by the cut: $n"
  ((n > 0))
}
check "the cut rules dropped packets (the direct path really was cut)" cut_dropped

nsx "$INET" nft flush chain ip mwgcut cut || die "lifting the cut"
T_HEAL=$(now_s)
log "cut lifted"
check "healed: both sides direct again within 60 s" \
  save_out to_direct wait_both_path "$T_HEAL" 60 direct "$CA" "$IFA" "$CB" "$IFB"
note "heal -> both direct again: $(saved to_direct) s"
check "healed: a's endpoint is nat_b's public mapping again" path_is "$CA" "$IFA" direct 198.51.101.1:
check "healed: b's endpoint is nat_a's public mapping again" path_is "$CB" "$IFB" direct 198.51.100.1:
check "healed: ping a -> b over the direct path" ping_ok "$CA" 10.99.0.2 5
note "a's view of b at the end: $(peer_field "$CA" "$IFA" state upgrades fallbacks 2>/dev/null |
  awk '{ printf "state %s, upgrades %s, fallbacks %s", $1, $2, $3 }')"
check "both daemons still running" mesh_peers_alive

stop_mesh_peers || true
finish
