#!/usr/bin/env bash
# Interoperability of meshwg with Debian's wireguard-go over a real kernel path.
#
#   ns1 (mwg-PID-a)                                   ns2 (mwg-PID-b)
#   ┌────────────────────────────┐                    ┌────────────────────────────┐
#   │ $IMPL1 (default meshwg)    │                    │ $IMPL2 (default wireguard-go)│
#   │ wgPIDx0 192.168.241.1/24   │                    │ wgPIDx1 192.168.241.2/24   │
#   │         fd00:241::1/64     │  WireGuard / UDP   │         fd00:241::2/64     │
#   │ veth0 10.0.0.1/24 :51821  ─┼────────────────────┼─ veth0 10.0.0.2/24 :51822 │
#   │       fd00::1/64           │                    │       fd00::2/64           │
#   └────────────────────────────┘                    └────────────────────────────┘
#
# Checks, each printed as PASS/FAIL:
#   A. ns1 alone has an endpoint: its first ping starts the handshake ($IMPL1 initiates) and
#      ns2 learns ns1's endpoint from the authenticated packets. Both daemons exit on SIGTERM.
#   B. Fresh daemons, now only ns2 has an endpoint: $IMPL2 initiates, $IMPL1 learns the
#      endpoint. Ping v4/v6 both ways, iperf3 TCP 3 s both directions, `wg show`/`showconf`
#      against ns1 parse and contain the peer.
#   C. SIGTERM $IMPL1: it exits, its UAPI socket and interface are gone. Restart it with the
#      showconf saved in B; while $IMPL2 keeps running with its old session, pings work again.
#
# Run as root from anywhere: IMPL1=wireguard-go runs wireguard-go on both ends (the harness
# self-test); MESHWG=path overrides the meshwg binary (default build/tools/meshwg).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMPL1=${IMPL1:-meshwg}
IMPL2=${IMPL2:-wireguard-go}
LP1=51821
LP2=51822
T1V4=192.168.241.1 T1V6=fd00:241::1
T2V4=192.168.241.2 T2V6=fd00:241::2

ns_create NS1 a
ns_create NS2 b
veth_pair "$NS1" "$NS2" || die "veth setup"
ifname_new IF1
ifname_new IF2
genkey k1
genkey k2
P1=$(pub k1)
P2=$(pub k2)
log "ns1=$NS1 ($IMPL1 $IF1)  ns2=$NS2 ($IMPL2 $IF2)"

# conf1/conf2 [ENDPOINT]: keys, port, the other side as peer, tunnel addresses.
conf1() {
  wgx "$NS1" set "$IF1" listen-port $LP1 private-key "$(keyfile k1)" \
    peer "$P2" allowed-ips "$T2V4/32,$T2V6/128" ${1:+endpoint "$1"} &&
    tunnel_addr "$NS1" "$IF1" "$T1V4/24" "$T1V6/64"
}
conf2() {
  wgx "$NS2" set "$IF2" listen-port $LP2 private-key "$(keyfile k2)" \
    peer "$P1" allowed-ips "$T1V4/32,$T1V6/128" ${1:+endpoint "$1"} &&
    tunnel_addr "$NS2" "$IF2" "$T2V4/24" "$T2V6/64"
}

handshake_recent() {  # NS IFNAME PUBKEY: latest handshake is non-zero
  local t
  t=$(wgx "$1" show "$2" latest-handshakes | awk -v k="$3" '$1 == k { print $2 }')
  echo "latest handshake: '$t'"
  [[ -n $t && $t != 0 ]]
}

gone() {  # NS IFNAME: neither the UAPI socket nor the interface exists
  local ok=0
  if [[ -e $WG_RUN_DIR/$2.sock ]]; then echo "socket $WG_RUN_DIR/$2.sock still exists"; ok=1; fi
  if ip -n "$1" link show "$2" >/dev/null 2>&1; then echo "interface $2 still exists"; ok=1; fi
  return $ok
}

iperf_check() {  # label, iperf3 extra args
  local mbps
  mbps=$(iperf_mbps "$NS2" "$T2V4" "$NS1" 3 "${@:2}") || return 1
  echo "$1: $mbps Mbit/s"
  note "iperf3 $IMPL1<->$IMPL2 $1: $mbps Mbit/s"
  awk -v m="$mbps" 'BEGIN { exit !(m > 0) }'
}

# Parses `wg showconf` (the wg-quick subset) and checks the interface and the peer.
showconf_ok() {
  "$PY" - "$1" "$(cat "$(keyfile k1)")" "$LP1" "$P2" "$T2V4/32" "$T2V6/128" "10.0.0.2:$LP2" <<'EOF'
import sys
path, priv, port, peer, a4, a6, ep = sys.argv[1:]
sections = []
for n, line in enumerate(open(path), 1):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    if line.startswith("[") and line.endswith("]"):
        sections.append((line[1:-1], {}))
        continue
    key, sep, value = line.partition("=")
    if not sep or not sections:
        sys.exit(f"line {n} does not parse: {line!r}")
    sections[-1][1][key.strip()] = value.strip()
names = [s[0] for s in sections]
assert names == ["Interface", "Peer"], names
iface, p = sections[0][1], sections[1][1]
assert iface.get("PrivateKey") == priv, "PrivateKey"
assert iface.get("ListenPort") == port, iface.get("ListenPort")
assert p.get("PublicKey") == peer, "PublicKey"
ips = {x.strip() for x in p.get("AllowedIPs", "").split(",")}
assert ips == {a4, a6}, ips
assert p.get("Endpoint") == ep, p.get("Endpoint")
print("showconf ok")
EOF
}

show_ok() {  # human and dump forms of `wg show` against ns1
  local out dump
  out=$(wgx "$NS1" show "$IF1") || return 1
  echo "$out"
  [[ $out == *"interface: $IF1"* && $out == *"peer: $P2"* && $out == *"endpoint: 10.0.0.2:$LP2"* &&
     $out == *"latest handshake:"* && $out == *"transfer:"* && $out == *"listening port: $LP1"* ]] || return 1
  dump=$(wgx "$NS1" show "$IF1" dump) || return 1
  # Line 1: private, public, port, fwmark. Line 2: peer, psk, endpoint, ips, handshake, rx, tx, keepalive.
  awk -F'\t' -v p="$P2" -v lp="$LP1" '
    NR == 1 && !(NF == 4 && $3 == lp) { bad = 1 }
    NR == 2 && !(NF == 8 && $1 == p && $6 > 0 && $7 > 0) { bad = 1 }
    END { exit bad || NR != 2 }' <<<"$dump"
}

# --- A: $IMPL1 initiates ------------------------------------------------------------------
start_daemon "$IMPL1" "$NS1" "$IF1" PID1 || die "start $IMPL1"
start_daemon "$IMPL2" "$NS2" "$IF2" PID2 || die "start $IMPL2"
conf1 "10.0.0.2:$LP2" || die "configure $IMPL1"
conf2 || die "configure $IMPL2"

check "A: first ping ns1->ns2 completes the handshake initiated by $IMPL1" ping_first "$NS1" $T2V4
check "A: $IMPL2 (no endpoint configured) learned $IMPL1's endpoint" \
  expect_endpoint "$NS2" "$IF2" "$P1" "10.0.0.1:$LP1"
check "A: $IMPL1 reports a handshake" handshake_recent "$NS1" "$IF1" "$P2"
check "A: $IMPL2 reports a handshake" handshake_recent "$NS2" "$IF2" "$P1"
check "A: $IMPL1 exits on SIGTERM" stop_daemon "$PID1"
check "A: $IMPL2 exits on SIGTERM" stop_daemon "$PID2"
check "A: $IMPL1 removed its socket and interface" gone "$NS1" "$IF1"

# --- B: $IMPL2 initiates ------------------------------------------------------------------
start_daemon "$IMPL1" "$NS1" "$IF1" PID1 || die "restart $IMPL1"
start_daemon "$IMPL2" "$NS2" "$IF2" PID2 || die "restart $IMPL2"
conf1 || die "configure $IMPL1"
conf2 "10.0.0.1:$LP1" || die "configure $IMPL2"

check "B: first ping ns2->ns1 completes the handshake initiated by $IMPL2" ping_first "$NS2" $T1V4
check "B: $IMPL1 (no endpoint configured) learned $IMPL2's endpoint" \
  expect_endpoint "$NS1" "$IF1" "$P2" "10.0.0.2:$LP2"
check "B: ping v4 ns1->ns2" ping_ok "$NS1" $T2V4 5
check "B: ping v4 ns2->ns1" ping_ok "$NS2" $T1V4 5
check "B: ping v6 ns1->ns2" ping_ok "$NS1" $T2V6 5
check "B: ping v6 ns2->ns1" ping_ok "$NS2" $T1V6 5
check "B: ping with 1400-byte v4 packets ns1->ns2 (fits the 1420 MTU)" ping_ok "$NS1" $T2V4 3 1372
check "B: ping with 1400-byte v6 packets ns2->ns1" ping_ok "$NS2" $T1V6 3 1352
check "B: iperf3 TCP 3 s ns1->ns2" iperf_check "ns1->ns2"
check "B: iperf3 TCP 3 s ns2->ns1 (-R)" iperf_check "ns2->ns1" -R
check "B: wg show against $IMPL1 lists the peer" show_ok
wgx "$NS1" showconf "$IF1" >"$WORKDIR/ns1.conf" || true
check "B: wg showconf against $IMPL1 parses and holds the peer" showconf_ok "$WORKDIR/ns1.conf"

# --- C: restart $IMPL1 while $IMPL2 keeps its session --------------------------------------
check "C: $IMPL1 exits on SIGTERM" stop_daemon "$PID1"
check "C: $IMPL1 removed its socket and interface" gone "$NS1" "$IF1"
start_daemon "$IMPL1" "$NS1" "$IF1" PID1 || die "restart $IMPL1"
check "C: wg setconf with the saved showconf" wgx "$NS1" setconf "$IF1" "$WORKDIR/ns1.conf"
tunnel_addr "$NS1" "$IF1" "$T1V4/24" "$T1V6/64" || die "tunnel addresses after restart"
check "C: ping ns1->ns2 after $IMPL1 restarted" ping_first "$NS1" $T2V4
check "C: $IMPL2 was not restarted" kill -0 "$PID2"
check "C: ping v4 ns2->ns1" ping_ok "$NS2" $T1V4 3
check "C: ping v6 ns1->ns2" ping_ok "$NS1" $T2V6 3
check "C: ping v6 ns2->ns1" ping_ok "$NS2" $T1V6 3

finish
