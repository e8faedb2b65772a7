#!/usr/bin/env bash
# No direct path through a symmetric NAT: peer a sits behind a symmetric NAT (a new random
# public port for every destination, so the mapping b learns from WG-STUN or STUN is never the
# one a's packets to b would use, and Linux conntrack lets nothing in that a did not send to
# first), b behind a plain one. The peers must stay on the relay, keep traffic flowing, and
# not churn: few switch attempts, bans whose lifetime grows with the failures.
#
#   cli_a (mwg-PID-ca)          nat_a (mwg-PID-na)         inet (mwg-PID-in)
#   meshwg --config a.conf       masquerade random          router, no NAT
#   10.1.0.2/24 ── eth0 ──────── lan0 10.1.0.1             a0 198.51.100.254
#   tunnel 10.99.0.1/24          wan0 198.51.100.1 ──────── a0
#                                (port per destination)     b0 198.51.101.254 ─┐
#   cli_b (mwg-PID-cb)          nat_b (mwg-PID-nb)                             │
#   meshwg --config b.conf       masquerade (keeps ports)                      │
#   10.2.0.2/24 ── eth0 ──────── lan0 10.2.0.1                                 │
#   tunnel 10.99.0.2/24          wan0 198.51.101.1 ─────────────────────────── b0
#                                                           s0 203.0.113.254 ──┐
#   srv (mwg-PID-sv)  meshwg-server: Relay 203.0.113.2:443 (TCP), WGStun :51820,  │
#                     Stun :3478        eth0 203.0.113.2/24 ─────────────────── s0
#
# Checks, over a window of $WINDOW s (default 20) with a ping a -> b every 0.2 s and both
# statuses sampled every second: the path is "relayed" on both sides in every sample (a sample
# taken while a switch is being tried, state "switching", is excused) and at the end; at least
# 90% of the pings come back; both daemons still run; each side made at most 4 switch attempts
# (upgrades); for every banned pair, the ban's TTL is longer after more failures. The final
# bans go to the notes.
# shellcheck disable=SC2317  # functions here run through check / wait_until
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WINDOW=${WINDOW:-20}
MAX_UPGRADES=4

mesh_lab natA=symmetric natB=plain || die "mesh lab setup"
start_mesh_peers || die "meshwg peers did not start"

check "a's relay connection comes up" wait_until 10 0.1 relay_up "$CA" "$IFA"
check "b's relay connection comes up" wait_until 10 0.1 relay_up "$CB" "$IFB"
check "ping a -> b through the relay" ping_first "$CA" 10.99.0.2
check "ping b -> a through the relay" ping_ok "$CB" 10.99.0.1 3

# The window: a steady ping, and one status sample per side per second.
PINGS=$((WINDOW * 5))
ip netns exec "$CA" timeout $((WINDOW + 15)) ping -n -q -c "$PINGS" -i 0.2 -W 2 10.99.0.2 \
  >"$WORKDIR/ping-window.out" 2>&1 &
PING_PID=$!
track_pid "$PING_PID"
SAMPLES="$WORKDIR/samples.txt"
: >"$SAMPLES"
for ((i = 0; i < WINDOW; i++)); do
  for side in a b; do
    if [[ $side == a ]]; then ns=$CA ifn=$IFA; else ns=$CB ifn=$IFB; fi
    # "side path state upgrades fallbacks bans-json", or "side unreadable"
    echo "$side $(peer_field "$ns" "$ifn" path state upgrades fallbacks bans 2>/dev/null || echo unreadable)" \
      >>"$SAMPLES"
  done
  sleep 1
done

# analyse WHAT: reads the samples; WHAT = relayed | upgrades | bans.
analyse() {
  "$PY" - "$1" "$MAX_UPGRADES" "$SAMPLES" <<'EOF'
import json, sys
what, max_up, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for line in open(path):
    f = line.split(" ", 5)
    if len(f) < 6:
        rows.append({"side": f[0], "path": "unreadable", "state": None, "upgrades": None, "bans": []})
        continue
    rows.append({"side": f[0], "path": f[1], "state": json.loads(f[2]) if f[2] == "null" else f[2],
                 "upgrades": json.loads(f[3]), "bans": json.loads(f[5]) or []})
print("%d samples" % len(rows))
bad = 0
if what == "relayed":
    for i, r in enumerate(rows):
        if r["path"] != "relayed" and r["state"] != "switching":
            print("sample %d (%s): path %s, state %s" % (i // 2, r["side"], r["path"], r["state"]))
            bad += 1
elif what == "upgrades":
    for side in "ab":
        ups = [r["upgrades"] for r in rows if r["side"] == side and r["upgrades"] is not None]
        last = ups[-1] if ups else None
        print("%s: upgrades %s (first sample %s)" % (side, last, ups[0] if ups else None))
        if last is None or last > max_up:
            bad += 1
elif what == "bans":
    # For each side and pair: the longest TTL seen at each failure count. A pair banned again
    # must be banned for longer: the TTL at more failures exceeds the TTL at fewer.
    seen = {}
    for r in rows:
        for b in r["bans"]:
            key = (r["side"], b.get("pair"))
            ttl, fails = b.get("ttl_s"), b.get("failures")
            if not isinstance(ttl, (int, float)) or not isinstance(fails, int):
                print("%s: ban without ttl_s/failures: %s" % (r["side"], b))
                bad += 1
                continue
            d = seen.setdefault(key, {})
            d[fails] = max(d.get(fails, ttl), ttl)
    if not seen:
        print("no bans in the window")
    for (side, pair), d in sorted(seen.items()):
        steps = sorted(d.items())
        print("%s %s: failures -> longest ttl_s seen: %s" % (side, pair, steps))
        for (f1, t1), (f2, t2) in zip(steps, steps[1:]):
            if t2 <= t1:
                print("  ttl did not grow from %d to %d failures" % (f1, f2))
                bad += 1
sys.exit(1 if bad else 0)
EOF
}

check "path relayed on both sides through the ${WINDOW} s window (switch attempts excused)" \
  analyse relayed
check "a still relayed at the end, loopback endpoint" path_is "$CA" "$IFA" relayed 127.0.0.1:
check "b still relayed at the end, loopback endpoint" path_is "$CB" "$IFB" relayed 127.0.0.1:
ping_mostly_back() {
  wait "$PING_PID" || true
  cat "$WORKDIR/ping-window.out"
  local got
  got=$(awk '/packets transmitted/ { print $4 }' "$WORKDIR/ping-window.out")
  echo "received ${got:-0} of $PINGS"
  ((${got:-0} * 10 >= PINGS * 9))
}
check "traffic flows over the relay: >= 90% of $PINGS pings a -> b come back" ping_mostly_back
check "both daemons still running" mesh_peers_alive
check "no churn: at most $MAX_UPGRADES switch attempts per side in the window" analyse upgrades
check "bans (if any): the TTL grows with the failures" analyse bans

for side in a b; do
  if [[ $side == a ]]; then ns=$CA ifn=$IFA; else ns=$CB ifn=$IFB; fi
  note "$side: $(peer_field "$ns" "$ifn" state upgrades fallbacks bans 2>/dev/null |
    awk '{ printf "state %s, upgrades %s, fallbacks %s, bans %s", $1, $2, $3, $4 }')"
done

stop_mesh_peers || true
finish
