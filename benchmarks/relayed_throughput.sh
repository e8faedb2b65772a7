#!/usr/bin/env bash
# Relayed vs direct throughput: iperf3 (1 TCP stream) through the tunnel of two meshwg peers
# behind separate plain NATs, once with the direct path available and once with UDP between
# the NATs cut on the internet router, so the WireGuard packets can only travel over the
# relay's TCP connections (meshwg -> loopback socket -> relay client -> meshwg-server ->
# relay client -> loopback socket -> meshwg). Rounds alternate between the two, each from
# fresh daemons, so both see the same machine load; prints every round, the medians and the
# ratio relayed / direct.
#
#   cli_a ── nat_a (masquerade) ── inet (router; "ip mwgcut" drops UDP nat_a <-> nat_b
#   cli_b ── nat_b (masquerade) ──   │   in the relayed rounds)
#                                    └── srv: meshwg-server, Relay 203.0.113.2:443 (TCP)
# (the lab of tests/netns/lib.sh, mesh_lab; its full diagram is in benchmarks/time_to_direct.sh)
#
# Usage (root): bash benchmarks/relayed_throughput.sh
#   env: ROUNDS (3), SECS (5: iperf3 seconds per measurement), MESHWG (default
#   build/tools/meshwg; meshwg-server next to it), KEEP_WORKDIR=1 keeps the logs.
# Exit status: 0 when every round measured both, 1 otherwise.
set -euo pipefail
# Benchmarks must not pay for logging; set before lib.sh, whose default is info.
LOG_LEVEL=${LOG_LEVEL:-error}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/netns/lib.sh"

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
((SECS >= 1 && SECS <= 60)) || die "SECS must be 1..60"

mesh_lab natA=plain natB=plain || die "mesh lab setup"

cut_udp() {
  nsx "$INET" nft -f - <<EOF
add rule ip mwgcut cut ip saddr 198.51.100.1 ip daddr 198.51.101.1 meta l4proto udp drop
add rule ip mwgcut cut ip saddr 198.51.101.1 ip daddr 198.51.100.1 meta l4proto udp drop
EOF
}

# measure PATH: fresh peers, waits until both show PATH (20 s), then iperf3 b <- a; prints
# Mbit/s, or "fail" (with the reason on stderr).
measure() {
  local want=$1 mbps=fail r
  for r in "$NA" "$NB" "$INET"; do nsx "$r" conntrack -F >/dev/null 2>&1 || true; done
  nsx "$INET" nft flush chain ip mwgcut cut
  if [[ $want == relayed ]]; then cut_udp || die "cut rules"; fi
  if start_mesh_peers && wait_both_path "$MESH_T0" 20 "$want" "$CA" "$IFA" "$CB" "$IFB" >/dev/null &&
    ping_first "$CA" 10.99.0.2; then
    mbps=$(iperf_mbps "$CB" 10.99.0.2 "$CA" "$SECS") || mbps=fail
    # The path must not have changed under the measurement.
    path_is "$CA" "$IFA" "$want" >/dev/null || { echo "a left $want during iperf3" >&2; mbps=fail; }
  else
    echo "round did not reach $want" >&2
  fi
  stop_mesh_peers || true
  echo "$mbps"
}

DIRECT="" RELAYED=""
for ((round = 1; round <= ROUNDS; round++)); do
  d=$(measure direct)
  r=$(measure relayed)
  printf 'round %d: direct %s Mbit/s, relayed %s Mbit/s\n' "$round" "$d" "$r"
  DIRECT+="$d " RELAYED+="$r "
done
nsx "$INET" nft flush chain ip mwgcut cut || true

echo
echo "machine: $(nproc) CPUs, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
"$PY" - "$DIRECT" "$RELAYED" "$SECS" <<'EOF'
import statistics, sys
def vals(s):
    return [float(x) for x in s.split() if x != "fail"]
d, r = vals(sys.argv[1]), vals(sys.argv[2])
md = statistics.median(d) if d else None
mr = statistics.median(r) if r else None
print("iperf3, 1 TCP stream, %s s per round; medians:" % sys.argv[3])
print("  direct : %s Mbit/s over %d rounds" % ("%.0f" % md if md else "n/a", len(d)))
print("  relayed: %s Mbit/s over %d rounds" % ("%.0f" % mr if mr else "n/a", len(r)))
if md and mr:
    print("  ratio relayed / direct: %.2f" % (mr / md))
EOF
[[ $DIRECT$RELAYED != *fail* ]]
