#!/usr/bin/env bash
# End-to-end throughput: one TCP stream (iperf3, $SECS s) through a WireGuard tunnel with the
# same implementation on both ends, first wireguard-go, then meshwg, alternating for $ROUNDS
# rounds; prints every run, the medians and the ratio meshwg / wireguard-go.
#
#   ns1 (mwg-PID-a)                                   ns2 (mwg-PID-b)
#   ┌────────────────────────────┐                    ┌────────────────────────────┐
#   │ iperf3 client              │                    │ iperf3 server              │
#   │ $impl  192.168.241.1/24    │  WireGuard / UDP   │ $impl  192.168.241.2/24    │
#   │ veth0 10.0.0.1/24         ─┼────────────────────┼─ veth0 10.0.0.2/24         │
#   └────────────────────────────┘                    └────────────────────────────┘
#
# Usage (root): bash benchmarks/throughput.sh        ROUNDS=3 SECS=10 by env
#   IMPL_A / IMPL_B choose the two implementations (default wireguard-go / meshwg), so
#   IMPL_B=wireguard-go checks the harness itself. Both daemons and iperf3 share the machine's
#   cores, so the figures compare implementations on this machine, nothing more.
set -euo pipefail
# Benchmarks must not pay for logging; set before lib.sh, whose default is info.
LOG_LEVEL=${LOG_LEVEL:-error}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/netns/lib.sh"

ROUNDS=${ROUNDS:-2}
SECS=${SECS:-10}
IMPL_A=${IMPL_A:-wireguard-go}
IMPL_B=${IMPL_B:-meshwg}

ns_create NS1 a
ns_create NS2 b
veth_pair "$NS1" "$NS2" || die "veth setup"
genkey k1
genkey k2

# run_one IMPL: sets RESULT to the Mbit/s of one run, or "fail".
run_one() {
  local impl=$1 if1 if2 pid1 pid2
  RESULT=fail
  ifname_new if1
  ifname_new if2
  start_daemon "$impl" "$NS1" "$if1" pid1 || return 0
  start_daemon "$impl" "$NS2" "$if2" pid2 || { stop_daemon "$pid1"; return 0; }
  if wgx "$NS1" set "$if1" listen-port 51821 private-key "$(keyfile k1)" \
       peer "$(pub k2)" allowed-ips 192.168.241.2/32 endpoint 10.0.0.2:51822 &&
     wgx "$NS2" set "$if2" listen-port 51822 private-key "$(keyfile k2)" \
       peer "$(pub k1)" allowed-ips 192.168.241.1/32 endpoint 10.0.0.1:51821 &&
     ip -n "$NS1" addr add 192.168.241.1/24 dev "$if1" && ip -n "$NS1" link set "$if1" mtu 1420 up &&
     ip -n "$NS2" addr add 192.168.241.2/24 dev "$if2" && ip -n "$NS2" link set "$if2" mtu 1420 up &&
     ping_first "$NS1" 192.168.241.2; then
    RESULT=$(iperf_mbps "$NS2" 192.168.241.2 "$NS1" "$SECS") || RESULT=fail
  fi
  stop_daemon "$pid1" || true
  stop_daemon "$pid2" || true
}

median() {  # numbers on stdin ("fail" ignored) -> median or "n/a"
  "$PY" -c '
import statistics, sys
v = [float(x) for x in sys.stdin.read().split() if x != "fail"]
print("%.1f" % statistics.median(v) if v else "n/a")'
}

# Runs are kept per slot (A, B), not per name, so IMPL_A == IMPL_B works as a harness check.
RUNS_A=""
RUNS_B=""
for ((round = 1; round <= ROUNDS; round++)); do
  # Alternate the order so slow drift of the machine (thermal, other load) hits both alike.
  if ((round % 2)); then order=(A B); else order=(B A); fi
  for slot in "${order[@]}"; do
    if [[ $slot == A ]]; then impl=$IMPL_A; else impl=$IMPL_B; fi
    run_one "$impl"
    log "round $round $impl: $RESULT Mbit/s"
    if [[ $slot == A ]]; then RUNS_A+="$RESULT "; else RUNS_B+="$RESULT "; fi
  done
done

MED_A=$(median <<<"$RUNS_A")
MED_B=$(median <<<"$RUNS_B")
echo
printf 'iperf3, 1 TCP stream, %s s, %s rounds (Mbit/s)\n' "$SECS" "$ROUNDS"
printf '%-14s %-8s %s\n' implementation median runs
printf '%-14s %-8s %s\n' "$IMPL_A" "$MED_A" "$RUNS_A"
printf '%-14s %-8s %s\n' "$IMPL_B" "$MED_B" "$RUNS_B"
if [[ $MED_A != n/a && $MED_B != n/a ]]; then
  printf 'ratio %s/%s: %s\n' "$IMPL_B" "$IMPL_A" "$("$PY" -c "print('%.2f' % ($MED_B / $MED_A))")"
else
  echo "ratio: n/a (a run failed; KEEP_WORKDIR=1 keeps the daemon logs)"
  exit 1
fi
