#!/usr/bin/env bash
# The relayed data path of mesh mode: two meshwg peers behind separate symmetric NATs (a new
# random public port per destination, so no direct path can work and they must stay on the
# relay) that know only each other's public key and the server's relay talk at once through
# the relay (their WireGuard endpoints are loopback sockets of their control planes),
# `meshwg status` says "relayed", and when the relay restarts they reconnect and traffic
# resumes.
#
#   cli_a (mwg-PID-ca)          nat_a (mwg-PID-na)         inet (mwg-PID-in)
#   meshwg --config a.conf       masquerade random          router, no NAT
#   10.1.0.2/24 ── eth0 ──────── lan0 10.1.0.1             a0 198.51.100.254
#   tunnel 10.99.0.1/24          wan0 198.51.100.1 ──────── a0
#                                                           b0 198.51.101.254 ─┐
#   cli_b (mwg-PID-cb)          nat_b (mwg-PID-nb)                             │
#   meshwg --config b.conf       masquerade random                             │
#   10.2.0.2/24 ── eth0 ──────── lan0 10.2.0.1                                 │
#   tunnel 10.99.0.2/24          wan0 198.51.101.1 ─────────────────────────── b0
#                                                           s0 203.0.113.254 ──┐
#   srv (mwg-PID-sv)  meshwg-server: Relay 203.0.113.2:443 (TCP), WGStun :51820,  │
#                     Stun :3478        eth0 203.0.113.2/24 ─────────────────── s0
#
# Checks: both relay connections come up; ping both ways through the tunnel; each learns the
# other's candidates (sealed end to end: LAN 10.x.0.2:51000, WG-STUN at the other NAT's
# address, on a port the symmetric NAT picked) while a capture of the relay's TCP stream holds
# none of their addresses; path "relayed" and a loopback endpoint for the peer in
# `meshwg status --json`; a 2 MB transfer through the relay arrives intact; the relay server
# restarted: both clients reconnect (backoff) and ping works again within 20 s; still relayed
# at the end; the server's log shows no key material. The lab (mesh_lab) is in lib.sh.
# shellcheck disable=SC2317  # functions here run through check / wait_until
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mesh_lab natA=symmetric natB=symmetric || die "mesh lab setup"

# What the relay sees: every TCP payload byte to or from :443 on the server's interface, from
# before the clients start until their candidate lists have crossed (then the capture stops,
# before bulk traffic makes chance matches likely).
cat >"$WORKDIR/sniff.py" <<'EOF'
import socket, struct, sys, os, time
out, stop, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind(("eth0", 0)); s.settimeout(0.2)
open(out + ".ready", "w").close()  # capturing from here on: the peers may start
end = time.time() + limit; n = 0
with open(out, "wb") as f:
    while time.time() < end and not os.path.exists(stop):
        try: pkt = s.recv(70000)
        except socket.timeout: continue
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00": continue
        ihl = (pkt[14] & 15) * 4
        if pkt[23] != 6: continue
        tcp = 14 + ihl
        sport, dport = struct.unpack("!HH", pkt[tcp:tcp + 4])
        if 443 not in (sport, dport): continue
        total = struct.unpack("!H", pkt[16:18])[0]
        off = tcp + (pkt[tcp + 12] >> 4) * 4
        f.write(pkt[off:14 + total]); n += 1
print(n, "segments")
EOF
ip netns exec "$SRV" timeout 40 "$PY" "$WORKDIR/sniff.py" "$WORKDIR/relay.bin" "$WORKDIR/sniff.stop" 35 \
  >"$WORKDIR/sniff.log" 2>&1 &
SNIFF_PID=$!
track_pid "$SNIFF_PID"
wait_for 100 0.1 test -e "$WORKDIR/relay.bin.ready" || die "the capture did not start"

start_mesh_peers || die "meshwg peers did not start"

check "a's relay connection comes up" wait_for 50 0.2 relay_up "$CA" "$IFA"
check "b's relay connection comes up" wait_for 50 0.2 relay_up "$CB" "$IFB"
check "ping a -> b through the relay" ping_first "$CA" 10.99.0.2
check "ping b -> a through the relay" ping_ok "$CB" 10.99.0.1 3

path_is_relayed() { path_is "$1" "$2" relayed 127.0.0.1:; }
peer_candidates() {  # NS IFNAME: "kind address" lines of what the other peer told us
  status_json "$1" "$2" | "$PY" -c '
import json, sys
for p in json.load(sys.stdin)["peers"]:
    if p["public_key"] != sys.argv[1]:
        for c in p["candidates"]: print(c["kind"], c["address"])' "$(pub srv)"
}
learned() {  # NS IFNAME "kind address-glob"...: each glob matches a learned candidate
  local ns=$1 ifn=$2 got want line hit
  shift 2
  got=$(peer_candidates "$ns" "$ifn")
  echo "learned: $got"
  for want in "$@"; do
    hit=0
    while read -r line; do
      # shellcheck disable=SC2053  # $want is a glob on purpose
      [[ $line == $want ]] && hit=1
    done <<<"$got"
    ((hit)) || { echo "missing: $want"; return 1; }
  done
}
# Behind a symmetric NAT the WG-STUN mapping's port is random: the address is checked by IP.
check "a learned b's candidates (sealed, over the relay)" \
  wait_until 10 0.2 learned "$CA" "$IFA" "local 10.2.0.2:51000" "wg-stun 198.51.101.1:*"
check "b learned a's candidates" \
  wait_until 10 0.2 learned "$CB" "$IFB" "local 10.1.0.2:51000" "wg-stun 198.51.100.1:*"
touch "$WORKDIR/sniff.stop"
wait "$SNIFF_PID" || true
# found FILE HEXES...: whether any of the byte strings occurs in FILE.
found() {
  "$PY" -c '
import sys
data = open(sys.argv[1], "rb").read()
sys.exit(0 if any(bytes.fromhex(h) in data for h in sys.argv[2:]) else 1)' "$@"
}
relay_saw_nothing() {
  local size pats
  size=$(stat -c %s "$WORKDIR/relay.bin")
  echo "relay stream captured: $size bytes ($(cat "$WORKDIR/sniff.log"))"
  ((size > 1000)) || return 1
  # Both peers' LAN and public addresses, in binary and as text; the check must be able to
  # see one: a planted copy is found.
  pats=(0a020002 c6336501 0a010002 c6336401)
  for t in 10.2.0.2 198.51.101.1 10.1.0.2 198.51.100.1; do
    pats+=("$(printf '%s' "$t" | od -An -tx1 | tr -d ' \n')")
  done
  cp "$WORKDIR/relay.bin" "$WORKDIR/planted.bin" && printf '\x0a\x02\x00\x02' >>"$WORKDIR/planted.bin"
  found "$WORKDIR/planted.bin" "${pats[@]}" || { echo "self-check: planted address not found"; return 1; }
  ! found "$WORKDIR/relay.bin" "${pats[@]}"
}
check "the relay's byte stream holds no candidate address (binary or text)" relay_saw_nothing
check "status: a reaches b relayed, through a loopback endpoint" path_is_relayed "$CA" "$IFA"
check "status: b reaches a relayed" path_is_relayed "$CB" "$IFB"

transfer_ok() {
  head -c 2000000 /dev/urandom >"$WORKDIR/blob"
  ip netns exec "$CB" timeout 30 "$PY" -c '
import socket, sys, hashlib
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.99.0.2", 5555)); s.listen(1); s.settimeout(25)
c, _ = s.accept(); c.settimeout(25); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest())' >"$WORKDIR/recv.out" 2>&1 &
  local rpid=$!
  wait_for 50 0.1 listening "$CB" 5555 || return 1
  ip netns exec "$CA" timeout 30 "$PY" -c '
import socket, sys
d = open(sys.argv[1], "rb").read()
s = socket.create_connection(("10.99.0.2", 5555), timeout=25); s.sendall(d); s.close()' \
    "$WORKDIR/blob" || return 1
  wait "$rpid" || return 1
  local want
  want="2000000 $(sha256sum "$WORKDIR/blob" | cut -d' ' -f1)"
  echo "received: $(cat "$WORKDIR/recv.out"), want: $want"
  [[ $(cat "$WORKDIR/recv.out") == "$want" ]]
}
check "2 MB over TCP through the relayed tunnel arrive intact" transfer_ok

# The relay restarts: clients see the connection drop, back off, reconnect, and relayed
# traffic resumes.
stop_mesh_server || true
check "a notices the relay is gone" wait_for 50 0.2 relay_down "$CA" "$IFA"
start_mesh_server "$SRV" || die "meshwg-server did not restart"
t0=$(now_s)
check "a reconnects to the restarted relay" wait_for 100 0.2 relay_up "$CA" "$IFA"
check "b reconnects to the restarted relay" wait_for 100 0.2 relay_up "$CB" "$IFB"
check "ping a -> b resumes after the relay restart" wait_for 20 0.5 ping_ok "$CA" 10.99.0.2 1
note "relay restart: traffic back $(elapsed_since "$t0") s after the server came back"
check "status: a still reaches b relayed (symmetric NATs)" path_is_relayed "$CA" "$IFA"
check "status: b still reaches a relayed" path_is_relayed "$CB" "$IFB"

no_keys_in_log() {
  local k
  for k in srv a b; do
    if grep -qF "$(cat "$(keyfile "$k")")" "$WORKDIR"/*.log; then
      echo "private key of $k in a log"
      return 1
    fi
  done
}
check "no private key in any log" no_keys_in_log

stop_mesh_peers || true
finish
