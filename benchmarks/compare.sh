#!/usr/bin/env bash
# End-to-end comparison of meshwg with wireguard-go: the same implementation on both ends of a
# tunnel between two namespaces joined by a veth. Per round and implementation (the order
# alternates round by round, so slow drift of the machine hits both alike) it measures
#
#   rtt    ping RTT through the idle tunnel: 20 pings, 0.2 s apart, after a warm-up; median ms
#   tcp1   iperf3, one TCP stream, $SECS s, Mbit/s at the receiver
#   tcp4   iperf3 -P 4, sum of four TCP streams, Mbit/s at the receiver
#   udp64  iperf3 -u -l 64 -b 0 (64-byte payloads, unlimited rate): packets per second that
#          arrived (packets sent minus lost, over the test time), plus the loss in %
#
# then prints the medians per metric and implementation with the ratio meshwg / wireguard-go,
# and writes to $OUT: results.tsv (every round's raw values), medians.tsv, and compare.png
# (bars per metric, normalised to wireguard-go = 1.0, absolute medians as labels).
#
#   ns1 (mwg-PID-a)                                   ns2 (mwg-PID-b)
#   ┌────────────────────────────┐                    ┌────────────────────────────┐
#   │ ping, iperf3 client        │                    │ iperf3 server              │
#   │ $impl  192.168.241.1/24    │  WireGuard / UDP   │ $impl  192.168.241.2/24    │
#   │ veth0 10.0.0.1/24         ─┼────────────────────┼─ veth0 10.0.0.2/24         │
#   └────────────────────────────┘                    └────────────────────────────┘
#
# Usage (root): bash benchmarks/compare.sh
#   env: ROUNDS (3, at least 2), SECS (10), OUT (/tmp/meshwg-bench-DATE), MESHWG (meshwg
#   binary, default build/tools/meshwg), TESTS (default "rtt tcp1 tcp4 udp64"; a subset runs
#   only those), IMPL_A / IMPL_B (wireguard-go / meshwg; IMPL_B=wireguard-go checks the
#   harness; IMPL_A=meshwg with MESHWG_A / MESHWG_B compares two meshwg builds, the A/B of a
#   change), MESHWG_NO_OFFLOAD=1 is passed through to meshwg, KEEP_WORKDIR=1 keeps the
#   daemon logs. Daemons, iperf3 and ping share the machine's cores, so the figures compare
#   the implementations on this machine, nothing more.
set -euo pipefail
# Benchmarks must not pay for logging; set before lib.sh, whose default is info.
LOG_LEVEL=${LOG_LEVEL:-error}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/netns/lib.sh"

ROUNDS=${ROUNDS:-3}
((ROUNDS >= 2)) || ROUNDS=2
SECS=${SECS:-10}
OUT=${OUT:-/tmp/meshwg-bench-$(date +%Y%m%d-%H%M%S)}
TESTS=${TESTS:-rtt tcp1 tcp4 udp64}
IMPL_A=${IMPL_A:-wireguard-go}
IMPL_B=${IMPL_B:-meshwg}
[[ -n ${MESHWG_NO_OFFLOAD:-} ]] && export MESHWG_NO_OFFLOAD
IPERF_PORT=5201

for t in $TESTS; do
  case $t in rtt | tcp1 | tcp4 | udp64) ;; *) die "unknown test '$t' in TESTS" ;; esac
done
command -v iperf3 >/dev/null || die "iperf3 not installed"
mkdir -p "$OUT"
TSV=$OUT/results.tsv
printf 'round\timpl\trtt_ms\ttcp1_mbps\ttcp4_mbps\tudp64_pps\tudp64_loss_pct\n' >"$TSV"

ns_create NS1 a
ns_create NS2 b
veth_pair "$NS1" "$NS2" || die "veth setup"
genkey k1
genkey k2

# iperf_json NAME CLIENT-ARGS...: one iperf3 run from NS1 to the one-shot server in NS2; the
# client's JSON lands in $WORKDIR/NAME.json. Every step is bounded.
iperf_json() {
  local name=$1 spid json
  shift
  json=$WORKDIR/$name.json
  rm -f "$json"
  ip netns exec "$NS2" timeout $((SECS + 30)) iperf3 -s -1 -B 192.168.241.2 -p $IPERF_PORT \
    >>"$WORKDIR/iperf3-server.log" 2>&1 &
  spid=$!
  track_pid "$spid"
  wait_for 50 0.1 listening "$NS2" $IPERF_PORT || true
  if ! timeout $((SECS + 20)) ip netns exec "$NS1" iperf3 -c 192.168.241.2 -p $IPERF_PORT \
      -t "$SECS" -J "$@" >"$json" 2>>"$WORKDIR/iperf3-client.log"; then
    log "iperf3 $name failed: $(head -c 300 "$json" | tr '\n' ' ')"
    kill "$spid" 2>/dev/null || true
    wait_gone "$spid" 30 || kill -KILL "$spid" 2>/dev/null || true
    return 1
  fi
  wait_gone "$spid" 50 || { kill "$spid" 2>/dev/null; wait_gone "$spid" 30; } || true
}

# iperf_field NAME EXPR: evaluates EXPR (python, with d = the JSON, s = end.sum_received).
iperf_field() {
  "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1])); s = d["end"]["sum_received"]
print(eval(sys.argv[2]))' "$WORKDIR/$1.json" "$2"
}

# rtt_ms: median RTT of 20 pings through the idle tunnel, after one warm-up ping.
rtt_ms() {
  nsx "$NS1" ping -n -q -c 1 -W 2 192.168.241.2 >/dev/null 2>&1 || true
  local out
  out=$(nsx "$NS1" ping -n -c 20 -i 0.2 -W 2 192.168.241.2 2>&1) || true
  "$PY" -c '
import re, statistics, sys
v = [float(x) for x in re.findall(r"time=([0-9.]+) ms", sys.stdin.read())]
if len(v) < 10: sys.exit("only %d of 20 pings answered" % len(v))
print("%.3f" % statistics.median(v))' <<<"$out"
}

# run_round ROUND IMPL: brings a tunnel up with IMPL on both ends, runs $TESTS, appends one
# row to results.tsv ("fail" for anything that failed, "-" for tests not selected).
run_round() {
  local round=$1 impl=$2 if1 if2 pid1="" pid2="" up=0
  local rtt=- tcp1=- tcp4=- pps=- loss=-
  for t in $TESTS; do
    case $t in rtt) rtt=fail ;; tcp1) tcp1=fail ;; tcp4) tcp4=fail ;; udp64) pps=fail loss=fail ;; esac
  done
  ifname_new if1
  ifname_new if2
  if start_daemon "$impl" "$NS1" "$if1" pid1 && start_daemon "$impl" "$NS2" "$if2" pid2 &&
     wgx "$NS1" set "$if1" listen-port 51821 private-key "$(keyfile k1)" \
       peer "$(pub k2)" allowed-ips 192.168.241.2/32 endpoint 10.0.0.2:51822 &&
     wgx "$NS2" set "$if2" listen-port 51822 private-key "$(keyfile k2)" \
       peer "$(pub k1)" allowed-ips 192.168.241.1/32 endpoint 10.0.0.1:51821 &&
     ip -n "$NS1" addr add 192.168.241.1/24 dev "$if1" && ip -n "$NS1" link set "$if1" mtu 1420 up &&
     ip -n "$NS2" addr add 192.168.241.2/24 dev "$if2" && ip -n "$NS2" link set "$if2" mtu 1420 up &&
     ping_first "$NS1" 192.168.241.2; then
    up=1
  else
    log "round $round $impl: tunnel did not come up"
  fi
  if ((up)); then
    for t in $TESTS; do
      case $t in
        rtt) rtt=$(rtt_ms) || rtt=fail ;;
        tcp1)
          if iperf_json tcp1; then
            tcp1=$(iperf_field tcp1 '"%.1f" % (s["bits_per_second"] / 1e6)') || tcp1=fail
          fi ;;
        tcp4)
          if iperf_json tcp4 -P 4; then
            tcp4=$(iperf_field tcp4 '"%.1f" % (s["bits_per_second"] / 1e6)') || tcp4=fail
          fi ;;
        udp64)
          if iperf_json udp64 -u -l 64 -b 0; then
            pps=$(iperf_field udp64 '"%.0f" % ((s["packets"] - s["lost_packets"]) / s["seconds"])') || pps=fail
            loss=$(iperf_field udp64 '"%.1f" % s["lost_percent"]') || loss=fail
          fi ;;
      esac
      sleep 1  # let queues drain and the other namespace's iperf3 exit before the next test
    done
  fi
  [[ -n $pid1 ]] && { stop_daemon "$pid1" || log "$impl in $NS1 did not stop on SIGTERM"; }
  [[ -n $pid2 ]] && { stop_daemon "$pid2" || log "$impl in $NS2 did not stop on SIGTERM"; }
  log "round $round $impl: rtt $rtt ms, tcp1 $tcp1 Mbit/s, tcp4 $tcp4 Mbit/s, udp64 $pps pkt/s (loss $loss %)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$impl" "$rtt" "$tcp1" "$tcp4" "$pps" "$loss" >>"$TSV"
}

# Rows are keyed per slot (A, B) in the TSV via the implementation name; with IMPL_A ==
# IMPL_B the slot is appended so the harness check still separates the two columns.
NAME_A=$IMPL_A
NAME_B=$IMPL_B
if [[ $IMPL_A == "$IMPL_B" ]]; then NAME_A="$IMPL_A#A"; NAME_B="$IMPL_B#B"; fi

log "results in $OUT; $ROUNDS rounds of: $TESTS (SECS=$SECS)"
for ((round = 1; round <= ROUNDS; round++)); do
  if ((round % 2)); then order=(A B); else order=(B A); fi
  for slot in "${order[@]}"; do
    if [[ $slot == A ]]; then
      MESHWG=${MESHWG_A:-$MESHWG} run_round "$round" "$IMPL_A"
    else
      MESHWG=${MESHWG_B:-$MESHWG} run_round "$round" "$IMPL_B"
    fi
    # run_round logs the implementation name; rename the last row to the slot's name.
    if [[ $IMPL_A == "$IMPL_B" ]]; then
      if [[ $slot == A ]]; then n=$NAME_A; else n=$NAME_B; fi
      sed -i '$ s/^\([^\t]*\)\t[^\t]*\t/\1\t'"$n"'\t/' "$TSV"
    fi
  done
done

CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MACHINE="$(nproc) CPUs, ${CPU:-unknown CPU}, kernel $(uname -r)"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
OFFLOAD_NOTE=""
[[ -n ${MESHWG_NO_OFFLOAD:-} ]] && OFFLOAD_NOTE=" (MESHWG_NO_OFFLOAD=$MESHWG_NO_OFFLOAD)"

# Medians, table, medians.tsv and the gnuplot input, all from results.tsv.
rc=0
"$PY" - "$TSV" "$OUT" "$NAME_A" "$NAME_B$OFFLOAD_NOTE" "$NAME_B" "$SECS" "$ROUNDS" "$MACHINE" "$LOAD" <<'EOF' || rc=$?
import csv, statistics, sys
tsv, out, a, b_label, b, secs, rounds, machine, load = sys.argv[1:]
rows = list(csv.DictReader(open(tsv), delimiter="\t"))
# key, table label, chart label, unit, format, higher is better, on the chart
metrics = [
    ("tcp1_mbps", "TCP, 1 stream (Mbit/s)", "TCP 1 stream", "Mbit/s", "%.0f", True, True),
    ("tcp4_mbps", "TCP, 4 streams (Mbit/s)", "TCP 4 streams", "Mbit/s", "%.0f", True, True),
    ("udp64_pps", "UDP 64 B, received (pkt/s)", "UDP 64 B pkt/s", "pkt/s", "%.0f", True, True),
    ("udp64_loss_pct", "UDP 64 B, loss (%)", None, "%", "%.1f", False, False),
    ("rtt_ms", "ping RTT, idle (ms)", "ping RTT", "ms", "%.3f", False, True),
]
def med(impl, key):
    v = [float(r[key]) for r in rows if r["impl"] == impl and r[key] not in ("-", "fail", "")]
    return (statistics.median(v), len(v)) if v else (None, 0)
def nruns(impl, key):
    return sum(1 for r in rows if r["impl"] == impl and r[key] != "-")

print()
print("%s vs %s, same implementation on both ends of a veth; %s rounds, iperf3 %s s" % (b_label, a, rounds, secs))
print("machine: %s; load average at the end: %s" % (machine, load))
w = 30
print("%-*s %14s %14s %9s  %s" % (w, "metric (median)", a, b_label if len(b_label) <= 14 else b, "ratio", "note"))
med_rows, chart, failed = [], [], False
for key, label, clabel, unit, fmt, higher, on_chart in metrics:
    if all(r[key] == "-" for r in rows):
        continue
    ma, na = med(a, key)
    mb, nb = med(b, key)
    sa = fmt % ma if ma is not None else "n/a"
    sb = fmt % mb if mb is not None else "n/a"
    ratio = mb / ma if ma and mb is not None else None
    sr = "%.2f" % ratio if ratio is not None else "n/a"
    note = "higher is better" if higher else "lower is better"
    for impl, n in ((a, na), (b, nb)):
        if n < nruns(impl, key):
            note += "; %s: %d of %d runs failed" % (impl, nruns(impl, key) - n, nruns(impl, key))
            failed = True
    print("%-*s %14s %14s %9s  %s" % (w, label, sa, sb, sr, note))
    med_rows.append((key, sa, sb, sr))
    if on_chart and ma and mb is not None:
        chart.append((clabel + ("\\n(higher is better)" if higher else "\\n(lower is better)"),
                      1.0, ratio, "%s %s" % (sa, unit), "%s %s" % (sb, unit)))
print("ratio = %s / %s" % (b, a))
with open(out + "/medians.tsv", "w") as f:
    f.write("metric\t%s\t%s\tratio\n" % (a, b))
    for r in med_rows:
        f.write("\t".join(r) + "\n")
with open(out + "/chart.dat", "w") as f:
    for i, (cl, na_, nb_, la, lb) in enumerate(chart):
        f.write('%d\t"%s"\t%.4f\t%.4f\t"%s"\t"%s"\n' % (i, cl, na_, nb_, la, lb))
top = max([1.0] + [c[2] for c in chart]) * 1.25
with open(out + "/chart.gp", "w") as f:
    f.write('''set terminal pngcairo size 1100,620 font "sans,11"
set output "%(out)s/compare.png"
set title "%(b)s / %(a)s (%(a)s = 1.0), medians of %(rounds)s rounds, iperf3 %(secs)s s\\n%(machine)s" noenhanced
set style fill solid 0.85 border -1
set boxwidth 0.36
set bmargin 4.5
set yrange [0:%(top).3f]
set xrange [-0.6:%(xmax).1f]
set ylabel "relative to %(a)s" noenhanced
set grid ytics
set key top left noenhanced
set xtics nomirror noenhanced
set arrow from -0.6,1 to %(xmax).1f,1 nohead back dt 2 lc rgb "#555555"
plot "%(out)s/chart.dat" using ($1-0.19):3:xtic(2) with boxes lc rgb "#8c8c8c" title "%(a)s", \\
     "" using ($1+0.19):4 with boxes lc rgb "#2a7ab9" title "%(b)s", \\
     "" using ($1-0.19):3:5 with labels offset 0,0.8 font ",9" notitle noenhanced, \\
     "" using ($1+0.19):4:6 with labels offset 0,0.8 font ",9" notitle noenhanced
''' % dict(out=out, a=a, b=b_label, rounds=rounds, secs=secs, machine=machine, top=top,
           xmax=len(chart) - 0.4))
sys.exit(3 if failed or not chart else 0)
EOF
if command -v gnuplot >/dev/null; then
  if [[ -s $OUT/chart.dat ]] && timeout 30 gnuplot "$OUT/chart.gp" 2>>"$WORKDIR/gnuplot.log"; then
    echo "chart: $OUT/compare.png"
  else
    log "gnuplot failed: $(tail -n 5 "$WORKDIR/gnuplot.log" 2>/dev/null)"
  fi
else
  log "gnuplot not installed; no chart (apt-get install gnuplot-nox)"
fi
echo "raw values: $TSV"
if ((rc != 0)); then
  echo "some runs failed (KEEP_WORKDIR=1 keeps the daemon logs)"
  exit 1
fi
