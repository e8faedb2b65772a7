#!/usr/bin/env bash
# The meshwg demo: installs the dependencies, builds, then brings up a WireGuard tunnel
# between two network namespaces with meshwg on both ends, configured with wg(8), and shows
# ping and a 5 s iperf3 (one TCP stream) through it. Everything it creates (namespaces,
# daemons, sockets) is removed on exit, also on failure or Ctrl-C. Run as root.
#
#   ns1 (mwg-PID-a)                                   ns2 (mwg-PID-b)
#   ┌────────────────────────────┐                    ┌────────────────────────────┐
#   │ meshwg  192.168.241.1/24   │  WireGuard / UDP   │ meshwg  192.168.241.2/24   │
#   │ veth0   10.0.0.1:51821    ─┼────────────────────┼─ veth0  10.0.0.2:51822     │
#   └────────────────────────────┘                    └────────────────────────────┘
#
# DEMO_IMPL=wireguard-go runs the same demo with wireguard-go (for comparison).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tools/install-deps.sh
bash tools/build.sh
source tests/netns/lib.sh

IMPL=${DEMO_IMPL:-meshwg}
say() { printf '\n== %s\n' "$*"; }

say "two namespaces joined by a veth"
ns_create NS1 a
ns_create NS2 b
veth_pair "$NS1" "$NS2" || die "veth setup"
echo "$NS1: veth0 10.0.0.1/24    $NS2: veth0 10.0.0.2/24"

say "$IMPL on both ends, keys from wg genkey"
ifname_new IF1
ifname_new IF2
genkey k1
genkey k2
start_daemon "$IMPL" "$NS1" "$IF1" PID1 || die "start $IMPL in $NS1"
start_daemon "$IMPL" "$NS2" "$IF2" PID2 || die "start $IMPL in $NS2"
wgx "$NS1" set "$IF1" listen-port 51821 private-key "$(keyfile k1)" \
  peer "$(pub k2)" allowed-ips 192.168.241.2/32 endpoint 10.0.0.2:51822 || die "wg set $IF1"
wgx "$NS2" set "$IF2" listen-port 51822 private-key "$(keyfile k2)" \
  peer "$(pub k1)" allowed-ips 192.168.241.1/32 endpoint 10.0.0.1:51821 || die "wg set $IF2"
ip -n "$NS1" addr add 192.168.241.1/24 dev "$IF1" && ip -n "$NS1" link set "$IF1" up
ip -n "$NS2" addr add 192.168.241.2/24 dev "$IF2" && ip -n "$NS2" link set "$IF2" up
echo "$NS1: $IF1 192.168.241.1    $NS2: $IF2 192.168.241.2"

say "ping 192.168.241.2 from $NS1 through the tunnel"
nsx "$NS1" ping -n -c 5 -i 0.3 -W 2 192.168.241.2 || die "ping through the tunnel"

say "wg show in $NS1"
wgx "$NS1" show "$IF1"

say "iperf3, one TCP stream, 5 s, $NS1 -> $NS2"
mbps=$(iperf_mbps "$NS2" 192.168.241.2 "$NS1" 5) || die "iperf3 through the tunnel"
echo "throughput: $mbps Mbit/s"

say "wg show transfer after the run"
wgx "$NS1" show "$IF1" transfer
echo
echo "demo OK: $IMPL tunnel pinged and carried $mbps Mbit/s (cleaning up)"
