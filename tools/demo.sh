#!/usr/bin/env bash
# The meshwg demo: installs the dependencies, builds, then runs meshwg-server on a "public"
# network and two meshwg peers, each behind its own NAT, that know nothing of each other but
# their public keys. They start talking through the server's relay at once, find a direct
# path through both NATs and move their WireGuard traffic onto it. The demo shows the status
# while relayed, how long the upgrade took, `meshwg status`, ping and a 5 s iperf3 (one TCP
# stream) through the tunnel. Everything it creates (namespaces, daemons, sockets) is removed
# on exit, also on failure or Ctrl-C. Run as root.
#
#   peer a (mwg-PID-ca)         nat_a (mwg-PID-na)         internet (mwg-PID-in)
#   meshwg --config a.conf       masquerade                 router, no NAT
#   10.1.0.2 ── eth0 ─────────── lan0   wan0 198.51.100.1 ─ a0
#   tunnel 10.99.0.1                                        b0 ─────────────────────┐
#   peer b (mwg-PID-cb)         nat_b (mwg-PID-nb)                                  │
#   meshwg --config b.conf       masquerade                                         │
#   10.2.0.2 ── eth0 ─────────── lan0   wan0 198.51.101.1 ──────────────────────────┘
#   tunnel 10.99.0.2                                        s0 ─┐
#   server (mwg-PID-sv)  meshwg-server 203.0.113.2: relay :443 (TCP), WG-STUN :51820 and
#                        STUN :3478 (UDP)   eth0 ───────────────┘
#
# DEMO_SKIP_BUILD=1 skips install-deps and build (uses the existing build/). The demo needs
# meshwg's own control plane (mesh mode), so the old DEMO_IMPL=wireguard-go variant is gone;
# benchmarks/throughput.sh compares the data planes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ${DEMO_SKIP_BUILD:-0} != 1 ]]; then
  bash tools/install-deps.sh
  bash tools/build.sh
fi
source tests/netns/lib.sh

say() { printf '\n== %s\n' "$*"; }

say "meshwg-server on a public network, two peers behind separate NATs"
mesh_lab natA=plain natB=plain || die "lab setup"
echo "server 203.0.113.2 ($SRV): relay TCP :443, WG-STUN :51820, STUN :3478"
echo "peer a 10.1.0.2 ($CA) behind nat_a 198.51.100.1, tunnel 10.99.0.1"
echo "peer b 10.2.0.2 ($CB) behind nat_b 198.51.101.1, tunnel 10.99.0.2"
echo
echo "a.conf (b.conf alike; the [Peer] has no Endpoint: meshwg finds one):"
sed -e 's/^PrivateKey = .*/PrivateKey = (hidden)/' "$WORKDIR/a.conf" | sed 's/^/  /'

say "starting both peers"
start_mesh_peers || die "meshwg peers did not start"

# The first status in which a's peer b is relayed (a handshake went through the relay);
# the upgrade may be quick, so look often.
relayed_text=""
for ((i = 0; i < 100; i++)); do
  text=$(nsx "$CA" "$MESHWG" status "$IFA" 2>/dev/null || true)
  if grep -q 'path: relayed' <<<"$text"; then relayed_text=$text; break; fi
  path_is "$CA" "$IFA" direct >/dev/null 2>&1 && break
  sleep 0.05
done
say "meshwg status $IFA (peer a), right after the start: relayed"
if [[ -n $relayed_text ]]; then
  echo "$relayed_text"
else
  echo "(a was direct before a relayed status could be taken)"
fi

say "waiting for the direct path"
took=$(wait_both_path "$MESH_T0" 30 direct "$CA" "$IFA" "$CB" "$IFB") ||
  die "no direct path within 30 s"
echo "relayed -> direct in $took s (from starting the peers)"

say "meshwg status $IFA (peer a)"
nsx "$CA" "$MESHWG" status "$IFA"

say "ping 10.99.0.2 (peer b) from peer a through the tunnel"
nsx "$CA" ping -n -c 5 -i 0.3 -W 2 10.99.0.2 || die "ping through the tunnel"

say "iperf3, one TCP stream, 5 s, a -> b"
mbps=$(iperf_mbps "$CB" 10.99.0.2 "$CA" 5) || die "iperf3 through the tunnel"
echo "throughput: $mbps Mbit/s"
path_is "$CA" "$IFA" direct >/dev/null || die "a left the direct path during the run"

echo
echo "demo OK: relayed -> direct in $took s, $mbps Mbit/s direct through two NATs (cleaning up)"
