#!/usr/bin/env bash
# Memory per idle peer: starts one meshwg inside a namespace (only lo, so nothing can leave
# it), reads its VmRSS, configures N peers over the UAPI socket in a few big `set=1`
# transactions (each peer: a random 32-byte public key, one /32 allowed IP, an endpoint),
# reads VmRSS again and prints (after - before) / N bytes per idle peer and the time the
# configuration took. `wg show IFNAME peers | wc -l` checks that all N peers are there.
#
# Usage (root): bash benchmarks/peer_memory.sh
#   env: N (100000 peers), BATCH (25000 peers per set transaction), MESHWG (meshwg binary,
#   default build/tools/meshwg), IMPL (meshwg; IMPL=wireguard-go measures that instead),
#   KEEP_WORKDIR=1 keeps the daemon log.
set -euo pipefail
# Benchmarks must not pay for logging; set before lib.sh, whose default is info.
LOG_LEVEL=${LOG_LEVEL:-error}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/netns/lib.sh"

N=${N:-100000}
BATCH=${BATCH:-25000}
IMPL=${IMPL:-meshwg}
((N >= 1 && N <= 16000000)) || die "N must be 1..16000000"
((BATCH >= 1)) || die "BATCH must be >= 1"

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# daemon_pid WRAPPER_PID: start_daemon's PID is `ip netns exec` -> timeout -> the daemon; the
# daemon is the process in the namespace whose command name is the binary's.
daemon_pid() {
  local ns=$1 comm=$2 pid
  for pid in $(timeout 5 ip netns pids "$ns"); do
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] && { echo "$pid"; return 0; }
  done
  return 1
}

ns_create NS p
ifname_new IFN
start_daemon "$IMPL" "$NS" "$IFN" WRAPPER || die "$IMPL did not start"
BIN=$(impl_bin "$IMPL")
COMM=$(basename "$BIN" | cut -c1-15)
wait_for 30 0.1 daemon_pid "$NS" "$COMM" || die "no $COMM process in $NS"
PID=$(daemon_pid "$NS" "$COMM")
genkey k
wgx "$NS" set "$IFN" listen-port 51820 private-key "$(keyfile k)" || die "wg set private key"
ip -n "$NS" link set "$IFN" up || die "link up"
sleep 1  # let start-up allocations settle
RSS0=$(rss_kb "$PID")
log "$IMPL pid $PID, $IFN in $NS: VmRSS $RSS0 kB before; adding $N peers, $BATCH per transaction"

# Writes the transactions straight to the UAPI socket; prints the seconds it took. Endpoints
# are in 10.0.0.0/8, which has no route in the namespace, and idle peers send nothing anyway.
SECS_TAKEN=$(timeout 600 "$PY" - "$WG_RUN_DIR/$IFN.sock" "$N" "$BATCH" <<'EOF'
import os, socket, sys, time
path, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ip(i):
    return "10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
# Build all requests first, so the time measured is the daemon's, not Python's.
reqs = []
for start in range(0, n, batch):
    lines = ["set=1"]
    for i in range(start, min(n, start + batch)):
        lines.append("public_key=" + os.urandom(32).hex())
        lines.append("allowed_ip=%s/32" % ip(i))
        lines.append("endpoint=%s:%d" % (ip(i + 1), 51820 + i % 1000))
    reqs.append(("\n".join(lines) + "\n\n").encode())
t0 = time.monotonic()
for k, req in enumerate(reqs):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)
    s.connect(path)
    s.sendall(req)
    reply = b""
    while not reply.endswith(b"\n\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    if reply != b"errno=0\n\n":
        sys.exit("transaction %d of %d: reply %r" % (k + 1, len(reqs), reply[:200]))
print("%.2f" % (time.monotonic() - t0))
EOF
) || die "configuring $N peers failed"
sleep 1
RSS1=$(rss_kb "$PID")
COUNT=$(wgx "$NS" show "$IFN" peers | wc -l)
# Time a full dump too: what `wg show` costs with this many peers.
T0=$(date +%s.%N)
wgx "$NS" show "$IFN" dump >/dev/null || log "wg show dump failed"
T1=$(date +%s.%N)

echo
echo "$IMPL, $N idle peers (one /32 allowed IP and an endpoint each), $BATCH per set transaction"
echo "machine: $(nproc) CPUs, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
printf 'VmRSS before:          %8d kB\n' "$RSS0"
printf 'VmRSS after:           %8d kB\n' "$RSS1"
printf 'bytes per idle peer:   %8d\n' "$(((RSS1 - RSS0) * 1024 / N))"
printf 'time to configure:     %8s s (%s peers/s)\n' "$SECS_TAKEN" \
  "$("$PY" -c "print('%.0f' % ($N / max($SECS_TAKEN, 1e-3)))")"
printf 'wg show dump:          %8s s\n' "$("$PY" -c "print('%.2f' % ($T1 - $T0))")"
printf 'wg show peers | wc -l: %8d\n' "$COUNT"
if ((COUNT != N)); then
  echo "FAIL: expected $N peers, wg show lists $COUNT"
  exit 1
fi
