#!/usr/bin/env bash
# Time to direct: two meshwg peers behind separate plain (endpoint-independent) NATs start
# relayed and upgrade to a direct path; this measures the seconds from starting both peers to
# both reporting path "direct" (control-plane state "direct": a confirmed switch) in
# `meshwg status --json`, polled every 50 ms, over $RUNS runs from fresh daemons. Prints each
# run, the median and the target (< 2 s) with PASS or MISS.
#
#   cli_a (mwg-PID-ca)          nat_a (mwg-PID-na)         inet (mwg-PID-in)
#   meshwg --config a.conf       masquerade (keeps ports)   router, no NAT
#   10.1.0.2/24 ── eth0 ──────── lan0 10.1.0.1             a0 198.51.100.254
#   tunnel 10.99.0.1/24          wan0 198.51.100.1 ──────── a0
#                                                           b0 198.51.101.254 ─┐
#   cli_b (mwg-PID-cb)          nat_b (mwg-PID-nb)                             │
#   meshwg --config b.conf       masquerade (keeps ports)                      │
#   10.2.0.2/24 ── eth0 ──────── lan0 10.2.0.1                                 │
#   tunnel 10.99.0.2/24          wan0 198.51.101.1 ─────────────────────────── b0
#                                                           s0 203.0.113.254 ──┐
#   srv (mwg-PID-sv)  meshwg-server: Relay 203.0.113.2:443 (TCP), WGStun :51820,  │
#                     Stun :3478        eth0 203.0.113.2/24 ─────────────────── s0
#
# The namespaces and meshwg-server (the lab of tests/netns/lib.sh, mesh_lab) are set up once
# and kept; every run starts both peers afresh on new interface names after flushing the
# routers' conntrack tables, so no NAT mapping of an earlier run is reused.
#
# Usage (root): bash benchmarks/time_to_direct.sh
#   env: RUNS (5), LIMIT (30: seconds a run may take before it counts as failed), MESHWG
#   (default build/tools/meshwg; meshwg-server next to it), KEEP_WORKDIR=1 keeps the logs.
# Exit status: 0 PASS, 2 MISS, 1 no run went direct.
set -euo pipefail
# Benchmarks must not pay for logging; set before lib.sh, whose default is info.
LOG_LEVEL=${LOG_LEVEL:-error}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/netns/lib.sh"

RUNS=${RUNS:-5}
LIMIT=${LIMIT:-30}
TARGET=2
((RUNS >= 1 && RUNS <= 100)) || die "RUNS must be 1..100"

mesh_lab natA=plain natB=plain || die "mesh lab setup"

# run_one: sets RESULT to the seconds of one run, or "fail".
run_one() {
  local r
  RESULT=fail
  UPGRADES="a ?, b ?"
  for r in "$NA" "$NB" "$INET"; do nsx "$r" conntrack -F >/dev/null 2>&1 || true; done
  if ! start_mesh_peers; then
    stop_mesh_peers || true
    return 0
  fi
  RESULT=$(wait_both_path "$MESH_T0" "$LIMIT" direct "$CA" "$IFA" "$CB" "$IFB" \
    2>>"$WORKDIR/failed-runs.txt") || RESULT=fail
  UPGRADES="a $(peer_field "$CA" "$IFA" upgrades 2>/dev/null || echo '?'), b $(peer_field "$CB" "$IFB" upgrades 2>/dev/null || echo '?')"
  stop_mesh_peers || true
}

RUNS_S=""
for ((run = 1; run <= RUNS; run++)); do
  run_one
  printf 'run %d: %s s (switch attempts: %s)\n' "$run" "$RESULT" "$UPGRADES"
  RUNS_S+="$RESULT "
done

MEDIAN=$("$PY" -c '
import statistics, sys
v = [float(x) for x in sys.argv[1].split() if x != "fail"]
print("%.2f" % statistics.median(v) if v else "n/a")' "$RUNS_S")
echo
echo "machine: $(nproc) CPUs, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
printf 'time to direct (start of both peers -> both direct), %s runs: %s\n' "$RUNS" "$RUNS_S"
printf 'median: %s s\n' "$MEDIAN"
if [[ $MEDIAN == n/a ]]; then
  echo "target: < $TARGET s: MISS (no run went direct within $LIMIT s; KEEP_WORKDIR=1 keeps the logs)"
  cat "$WORKDIR/failed-runs.txt" 2>/dev/null || true
  exit 1
fi
if "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$MEDIAN" "$TARGET"; then
  echo "target: < $TARGET s: PASS"
else
  echo "target: < $TARGET s: MISS"
  exit 2
fi
