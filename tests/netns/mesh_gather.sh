#!/usr/bin/env bash
# Endpoint gathering in mesh mode: `meshwg -f --config FILE IFNAME` behind a plain
# (endpoint-independent) masquerade must set up its interface itself, gather its local, WG-STUN
# and plain-STUN candidates within 10 s with no UPnP / NAT-PMP gateway around, each mapping
# being exactly the one the router's conntrack chose for that flow, refresh the local ones
# when an interface comes and goes, list them in `meshwg status`, and stop cleanly on SIGTERM.
#
#   cli (mwg-PID-cli)              nat (mwg-PID-nat)                srv (mwg-PID-srv)
#   ┌──────────────────────────┐   ┌────────────────────────────┐   ┌────────────────────────────┐
#   │ meshwg -f --config       │   │ nft: plain masquerade      │   │ meshwg-server -f           │
#   │  cli.conf wgPIDx0 ("mw0")│   │ (keeps source ports)       │   │  Stun   203.0.113.2:3478   │
#   │  WireGuard :51000        │   │                            │   │  WGStun 203.0.113.2:51820  │
#   │  check socket :check_port│   │                            │   │ turnserver --stun-only     │
#   │  10.99.0.2/24, MTU 1380  │   │                            │   │  203.0.113.2:3479 (coturn) │
#   │  routes 100.100.100.100, │   │                            │   │                            │
#   │  fd6d:6573:6877::1 in it │   │                            │   │                            │
#   │ (later: dummy d0         │   │                            │   │                            │
#   │  10.0.7.2/24)            │   │                            │   │                            │
#   │ eth0 10.0.1.2/24 ────────┼───┤ lan0 10.0.1.1  wan0 ───────┼───┤ eth0 203.0.113.2/24       │
#   │ default via 10.0.1.1     │   │ (forwarding)   203.0.113.1 │   │ no route to 10.0.1.0/24    │
#   └──────────────────────────┘   └────────────────────────────┘   └────────────────────────────┘
#
# The public net is the one the other NAT tests use (lib.sh nat_topology: router 203.0.113.1,
# server 203.0.113.2). The interface is named by ifname_new (wgPIDx0), not "mw0": the UAPI
# socket directory is shared by every namespace and concurrent run.
#
# Client config (cli.conf):
#   [Interface] PrivateKey, ListenPort = 51000, Address = 10.99.0.2/24, MTU = 1380
#   [WGStun]    Endpoint = 203.0.113.2:51820, PublicKey = <server>,
#               Stun = 203.0.113.2:3478, Stun = 203.0.113.2:3479
#
# Checks (`meshwg status --json`, schema in control/status.h, plus "check_port": the UDP port
# of the control plane's check socket):
#   a. a "wg-stun" candidate within 10 s of the start;
#   b. it is 203.0.113.1:P, P = the NAT port conntrack holds for 10.0.1.2:51000 -> :51820
#      (checker self-tests: a port one off and the client's own address are refused);
#   c. check_port != 51000 (another flow) and a "stun" candidate 203.0.113.1:Q, Q = the NAT
#      port of 10.0.1.2:check_port -> :3478;
#   d. conntrack also holds 10.0.1.2:check_port -> :3479 (coturn) with the same NAT port Q, and
#      there is exactly one "stun" candidate (plain masquerade maps both the same way);
#   e. exactly one "local" candidate, 10.0.1.2:51000; none on 10.99.0.2, loopback, link-local;
#   f. meshwg set the interface up itself: 10.99.0.2/24, MTU 1380, up; 100.100.100.100 routed
#      via it; the server's peer has allowed IPs 100.100.100.100/32 and fd6d:6573:6877::1/128;
#      a handshake with the server happened;
#   g. a dummy interface d0 with 10.0.7.2/24 (a veth pair if the kernel lacks the dummy
#      driver) gives a "local" candidate 10.0.7.2:51000 within 5 s, which goes within 5 s of
#      deleting d0;
#   h. the first wg-stun candidate came within 10 s of the start (seconds are printed) and
#      there is no "upnp" / "nat-pmp" candidate;
#   i. `meshwg status IFNAME` (text) lists the wg-stun candidate;
#   j. SIGTERM: exit status 0 within 5 s, interface and UAPI socket gone.
# And before the lab: a config with `ListenPort = 99999` on line 3 makes meshwg exit non-zero
# with "bad.conf:3:" and "ListenPort" in its message.
# Binaries: $MESHWG, meshwg-server next to it ($MESHWG_SERVER), $TURNSERVER (coturn). Written
# ahead of mesh mode (meshwg --config, control-plane gathering): with a meshwg that lacks it,
# the bad-config check fails and the script stops at "meshwg -f --config exited".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TURNSERVER=${TURNSERVER:-$(command -v turnserver || echo /usr/bin/turnserver)}
STUN_PORT=3478
TURN_PORT=3479
WGSTUN_PORT=51820
LISTEN_PORT=51000
SERVER4=203.0.113.2
PUBLIC4=203.0.113.1
CLIENT4=10.0.1.2
GW4=10.0.1.1
TUN4=10.99.0.2
TUN_LEN=24
MTU=1380
RES4=100.100.100.100
RES6=fd6d:6573:6877::1
DUMMY4=10.0.7.2
DUMP_LINES=${DUMP_LINES:-80}  # of each daemon log on failure (KEEP_WORKDIR=1 keeps them whole)
GATHER_S=10  # a, h: candidates within this many seconds of the start
CHANGE_S=5   # g: a local candidate appears / goes within this many seconds

[[ -x $MESHWG ]] || die "meshwg binary '$MESHWG' not executable (set MESHWG)"
[[ -x $MESHWG_SERVER ]] || die "meshwg-server binary '$MESHWG_SERVER' not executable"
[[ -x $TURNSERVER ]] || die "turnserver not found (apt-get install coturn)"
command -v conntrack >/dev/null || die "conntrack not found (apt-get install conntrack)"
command -v wg >/dev/null || die "wg not found (apt-get install wireguard-tools)"

not() { ! "$@"; }

# now_ms: milliseconds on the monotonic-enough wall clock (for elapsed times only).
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# poll_until DEADLINE_MS CMD...: runs CMD every 0.1 s until it succeeds (0) or the clock
# passes DEADLINE_MS (1); at most 600 attempts. CMD is a function here that bounds itself.
poll_until() {
  local deadline=$1 i
  shift
  for ((i = 0; i < 600; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    (($(now_ms) < deadline)) || return 1
    sleep 0.1
  done
  return 1
}

# json_flat FILE: every scalar of a JSON document as "PATH<TAB>VALUE" (PATH like
# candidates.0.kind; null as "null"). jq if installed, else python3.
if command -v jq >/dev/null; then
  json_flat() {
    jq -r 'paths(type != "object" and type != "array") as $p
      | [($p | map(tostring) | join(".")), (getpath($p) | tostring)] | @tsv' "$1"
  }
else
  json_flat() {
    "$PY" -c '
import json, sys
def walk(p, v):
    if isinstance(v, dict):
        for k, x in v.items(): walk(p + [str(k)], x)
    elif isinstance(v, list):
        for i, x in enumerate(v): walk(p + [str(i)], x)
    else:
        s = "null" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
        print(".".join(p) + "\t" + s)
walk([], json.load(open(sys.argv[1])))' "$1"
  }
fi

# --- bad config (inside a namespace, so a wrongly accepted one creates nothing outside) ------
ns_create NSC cli
ns_create NSR nat
ns_create NSS srv
genkey srv
genkey cli
SRV_PUB=$(pub srv)

ifname_new IFC    # the mesh client's interface (wgPIDx0), below
ifname_new IFBAD  # never created unless meshwg wrongly accepts bad.conf
# bad_config WANT...: meshwg exits non-zero on bad.conf and its output contains every WANT.
bad_config() {
  local rc=0 w
  ip netns exec "$NSC" timeout -k 2 5 "$MESHWG" -f --config "$WORKDIR/bad.conf" "$IFBAD" \
    >"$WORKDIR/bad.out" 2>&1 || rc=$?
  echo "exit $rc: $(head -c 2000 "$WORKDIR/bad.out")"
  ((rc != 0 && rc != 124 && rc != 137)) || return 1
  for w in "$@"; do grep -qF -- "$w" "$WORKDIR/bad.out" || { echo "no '$w' in the output"; return 1; }; done
}
cat >"$WORKDIR/bad.conf" <<EOF
[Interface]
PrivateKey = $(cat "$(keyfile cli)")
ListenPort = 99999
EOF
check "bad config: ListenPort = 99999 exits non-zero with 'bad.conf:3:' and 'ListenPort'" \
  bad_config "bad.conf:3:" ListenPort
check "bad config: checker refuses a wrong line number" not bad_config "bad.conf:2:" ListenPort
ip -n "$NSC" link del "$IFBAD" 2>/dev/null || true

# --- topology --------------------------------------------------------------------------------
nat_topology "$NSC" "$NSR" "$NSS" client4=$CLIENT4/24 lan4=$GW4/24 \
  public4=$PUBLIC4/24 server4=$SERVER4/24 || die "NAT topology"

# --- the servers -----------------------------------------------------------------------------
cat >"$WORKDIR/srv.conf" <<EOF
# meshwg-server for $0
[Server]
PrivateKey = $(cat "$(keyfile srv)")
Stun = $SERVER4:$STUN_PORT
WGStun = $SERVER4:$WGSTUN_PORT
EOF
ip netns exec "$NSS" env LOG_LEVEL="$LOG_LEVEL" timeout -k 5 "$DAEMON_MAX_S" "$MESHWG_SERVER" -f \
  --config "$WORKDIR/srv.conf" >"$WORKDIR/meshwg-server.log" 2>&1 &
SERVER_PID=$!
track_pid $SERVER_PID
ip netns exec "$NSS" timeout -k 5 "$DAEMON_MAX_S" "$TURNSERVER" -n --stun-only \
  --listening-ip $SERVER4 --listening-port $TURN_PORT \
  --no-cli --no-tls --no-dtls --log-file stdout --simple-log \
  --pidfile "$WORKDIR/turnserver.pid" >"$WORKDIR/turnserver.log" 2>&1 &
TURN_PID=$!
track_pid $TURN_PID
wait_for 100 0.1 udp_listening "$NSS" $STUN_PORT || die "meshwg-server did not listen on UDP $STUN_PORT"
wait_for 100 0.1 udp_listening "$NSS" $WGSTUN_PORT || die "meshwg-server did not listen on UDP $WGSTUN_PORT"
wait_for 100 0.1 udp_listening "$NSS" $TURN_PORT || die "turnserver did not listen on UDP $TURN_PORT"
log "meshwg-server on $SERVER4 :$STUN_PORT (STUN) :$WGSTUN_PORT (WG-STUN), coturn on :$TURN_PORT"

# --- the client (mesh mode) ------------------------------------------------------------------
cat >"$WORKDIR/cli.conf" <<EOF
[Interface]
PrivateKey = $(cat "$(keyfile cli)")
ListenPort = $LISTEN_PORT
Address = $TUN4/$TUN_LEN
MTU = $MTU

[WGStun]
Endpoint = $SERVER4:$WGSTUN_PORT
PublicKey = $SRV_PUB
Stun = $SERVER4:$STUN_PORT
Stun = $SERVER4:$TURN_PORT
EOF
CLIENT_LOG="$WORKDIR/meshwg-$IFC.log"
START_MS=$(now_ms)
ip netns exec "$NSC" env LOG_LEVEL="$LOG_LEVEL" timeout -k 5 "$DAEMON_MAX_S" "$MESHWG" -f \
  --config "$WORKDIR/cli.conf" "$IFC" >"$CLIENT_LOG" 2>&1 &
CLIENT_PID=$!
track_pid $CLIENT_PID
client_up() {
  [[ -S $WG_RUN_DIR/$IFC.sock ]] && ip -n "$NSC" link show "$IFC" >/dev/null 2>&1
}
for ((i = 0; i < 150; i++)); do
  client_up && break
  if ! kill -0 $CLIENT_PID 2>/dev/null; then
    rc=0
    wait "$CLIENT_PID" || rc=$?
    die "meshwg -f --config exited (status $rc) before creating $IFC and its UAPI socket"
  fi
  sleep 0.1
done
client_up || die "meshwg did not create $IFC and its UAPI socket within 15 s"
log "meshwg up as $IFC after $(($(now_ms) - START_MS)) ms"

# --- status helpers --------------------------------------------------------------------------
STATUS_JSON="$WORKDIR/status.json"
# status: `meshwg status --json IFC` into $STATUS_JSON and its flat form into .flat.
status() {
  nsx "$NSC" "$MESHWG" status --json "$IFC" >"$STATUS_JSON" 2>"$STATUS_JSON.err" || {
    cat "$STATUS_JSON.err"
    return 1
  }
  json_flat "$STATUS_JSON" >"$STATUS_JSON.flat"
}
# cands: candidates of the last status, "KIND ADDRESS" per line, in list order.
cands() {
  awk -F'\t' '$1 ~ /^candidates\.[0-9]+\.(kind|address)$/ {
      split($1, p, "."); i = p[2] + 0; if (i > n) n = i; seen[i] = 1
      if (p[3] == "kind") k[i] = $2; else a[i] = $2 }
    END { for (i = 0; i <= n; i++) if (seen[i]) print k[i], a[i] }' "$STATUS_JSON.flat"
}
# addrs_of KIND: addresses of the last status's candidates of that kind.
addrs_of() { cands | awk -v k="$1" '$1 == k { print $2 }'; }
# have KIND [ADDRESS]: a fresh status lists such a candidate.
have() {
  status || return 1
  if (($# == 1)); then
    [[ -n $(addrs_of "$1") ]]
  else
    addrs_of "$1" | grep -qxF -- "$2"
  fi
}
lacks() { status && ! addrs_of "$1" | grep -qxF -- "$2"; }
show_cands() { echo "candidates:"; cands | sed 's/^/  /'; }

# flow_port SPORT DPORT: the NAT port of the one UDP flow CLIENT4:SPORT -> SERVER4:DPORT.
flow_port() {
  local p
  p=$(ct_nat_ports "$NSR" -s "$CLIENT4" -d "$SERVER4" --orig-port-src "$1" --orig-port-dst "$2")
  [[ -n $p && $(wc -l <<<"$p") == 1 ]] || {
    echo "want one conntrack flow $CLIENT4:$1 -> $SERVER4:$2, got '${p//$'\n'/ }'" >&2
    return 1
  }
  echo "$p"
}

# --- a, h: gathering -------------------------------------------------------------------------
WGSTUN_MS=""
first_wgstun() {
  if poll_until $((START_MS + GATHER_S * 1000)) have wg-stun; then
    WGSTUN_MS=$(($(now_ms) - START_MS))
    show_cands
    return 0
  fi
  status || true
  show_cands
  return 1
}
# check runs its command in this shell, so WGSTUN_MS is kept for h.
check "a. a wg-stun candidate within $GATHER_S s of the start" first_wgstun

# --- b-d: each mapping is its flow's ---------------------------------------------------------

# mapped_ok GOT PORT: GOT (a candidate list, one per line) is exactly PUBLIC4:PORT.
mapped_ok() {
  echo "candidate(s) '${1//$'\n'/ }', conntrack says '$PUBLIC4:$2'"
  [[ -n $2 && $1 == "$PUBLIC4:$2" ]]
}
WGPORT=""
wgstun_mapped() {
  status || return 1
  show_cands
  WGPORT=$(flow_port "$LISTEN_PORT" "$WGSTUN_PORT") || return 1
  mapped_ok "$(addrs_of wg-stun)" "$WGPORT"
}
check "b. the wg-stun candidate is $PUBLIC4 with the NAT port of $CLIENT4:$LISTEN_PORT -> :$WGSTUN_PORT" \
  wgstun_mapped
note "wg-stun: $(addrs_of wg-stun | tr '\n' ' ')(conntrack NAT port of the WireGuard flow: ${WGPORT:-none})"
# The checker must be able to say no: a port one off, and the client's own address and port
# (what a gatherer that reported its socket address would show).
check "b. checker rejects a port one off" not mapped_ok "$(addrs_of wg-stun)" "$((${WGPORT:-0} + 1))"
check "b. checker rejects the client's own address and port" \
  not mapped_ok "$CLIENT4:$LISTEN_PORT" "$LISTEN_PORT"

CHECK_PORT=""
STUNPORT=""
stun_mapped() {
  # The stun candidate may come a little after the wg-stun one; same deadline from the start.
  poll_until $((START_MS + GATHER_S * 1000)) have stun || status || return 1
  show_cands
  CHECK_PORT=$(awk -F'\t' '$1 == "check_port" { print $2 }' "$STATUS_JSON.flat")
  echo "check_port: '$CHECK_PORT'"
  if ! [[ $CHECK_PORT =~ ^[0-9]+$ ]] || ((CHECK_PORT < 1 || CHECK_PORT > 65535 || CHECK_PORT == LISTEN_PORT)); then
    echo "check_port must be a UDP port other than the WireGuard port $LISTEN_PORT"
    return 1
  fi
  STUNPORT=$(flow_port "$CHECK_PORT" "$STUN_PORT") || return 1
  echo "conntrack: $CLIENT4:$CHECK_PORT -> $SERVER4:$STUN_PORT is NATed to $PUBLIC4:$STUNPORT"
  addrs_of stun | grep -qxF -- "$PUBLIC4:$STUNPORT"
}
check "c. check_port != $LISTEN_PORT and a stun candidate is $PUBLIC4 with the NAT port of $CLIENT4:check_port -> :$STUN_PORT" \
  stun_mapped
note "stun: $(addrs_of stun | tr '\n' ' ')(check_port ${CHECK_PORT:-none}, conntrack NAT port ${STUNPORT:-none})"

coturn_agrees() {
  local p n
  p=$(flow_port "${CHECK_PORT:-0}" "$TURN_PORT") || return 1
  echo "conntrack: $CLIENT4:$CHECK_PORT -> $SERVER4:$TURN_PORT is NATed to port $p (to :$STUN_PORT: ${STUNPORT:-none})"
  [[ -n $STUNPORT && $p == "$STUNPORT" ]] || return 1
  status || return 1
  n=$(addrs_of stun | wc -l)
  echo "$n stun candidate(s): $(addrs_of stun | tr '\n' ' ')"
  ((n == 1))
}
check "d. the check socket's flow to coturn (:$TURN_PORT) has the same NAT port, and there is exactly one stun candidate" \
  coturn_agrees

# --- e: local candidates ---------------------------------------------------------------------
locals_ok() {
  local l bad
  status || return 1
  show_cands
  l=$(addrs_of local)
  [[ $l == "$CLIENT4:$LISTEN_PORT" ]] ||
    { echo "want exactly one local candidate, $CLIENT4:$LISTEN_PORT"; return 1; }
  bad=$(cands | awk -v t="$TUN4" '{ a = $2; sub(/:[0-9]+$/, "", a); gsub(/[][]/, "", a); a = tolower(a)
      if (a == t || a ~ /^127\./ || a == "::1" || a ~ /^169\.254\./ || a ~ /^fe[89ab][0-9a-f]:/) print }')
  [[ -z $bad ]] || { echo "candidates on the tunnel, loopback or link-local: $bad"; return 1; }
}
check "e. exactly one local candidate ($CLIENT4:$LISTEN_PORT); none on $TUN4, loopback or link-local" locals_ok

# --- f: interface set up by meshwg itself ----------------------------------------------------
link_ok() {
  local flat="$WORKDIR/link.flat"
  nsx "$NSC" ip -j addr show dev "$IFC" >"$WORKDIR/link.json" || return 1
  json_flat "$WORKDIR/link.json" >"$flat" || return 1
  grep -E $'^0\\.(mtu|flags\\.[0-9]+|addr_info\\.[0-9]+\\.(local|prefixlen|family))\t' "$flat"
  awk -F'\t' -v a="$TUN4" -v len="$TUN_LEN" -v mtu="$MTU" '
    $1 == "0.mtu" && $2 == mtu { m = 1 }
    $1 ~ /^0\.flags\.[0-9]+$/ && $2 == "UP" { u = 1 }
    $1 ~ /^0\.addr_info\.[0-9]+\.local$/ { split($1, p, "."); loc[p[3]] = $2 }
    $1 ~ /^0\.addr_info\.[0-9]+\.prefixlen$/ { split($1, p, "."); pl[p[3]] = $2 }
    END { for (i in loc) if (loc[i] == a && pl[i] == len) ok = 1
          if (!m) print "mtu is not " mtu; if (!u) print "not UP"; if (!ok) print "no " a "/" len
          exit !(m && u && ok) }' "$flat"
}
check "f. $IFC has $TUN4/$TUN_LEN, MTU $MTU and is up" link_ok
route_ok() {
  local r
  r=$(nsx "$NSC" ip route get "$RES4") || return 1
  echo "$r"
  [[ " $r " == *" dev $IFC "* ]]
}
check "f. ip route get $RES4 goes via $IFC" route_ok
allowed_ok() {
  local line
  # wg prints "KEY<TAB>PREFIX PREFIX..."; $1 = $1 makes that one space each.
  line=$(wgx "$NSC" show "$IFC" allowed-ips | awk -v k="$SRV_PUB" '$1 == k { $1 = $1; print }')
  echo "wg show $IFC allowed-ips: '$line' (server $SRV_PUB)"
  [[ " $line " == *" $RES4/32 "* && " $line " == *" $RES6/128 "* ]]
}
check "f. the server's peer has allowed IPs $RES4/32 and $RES6/128" allowed_ok
handshake_done() {
  wgx "$NSC" show "$IFC" latest-handshakes | awk -v k="$SRV_PUB" '$1 == k && $2 > 0 { ok = 1 } END { exit !ok }'
}
check "f. a handshake with the server happened (latest handshake != 0)" wait_for 25 0.2 handshake_done

# --- g: refresh on interface changes ---------------------------------------------------------
DUMMY_CAND="$DUMMY4:$LISTEN_PORT"
# d0 is a dummy interface; on a kernel without the dummy driver ("Unknown device type") it is
# one end of a veth pair d0 - d0p, both in cli and up (so d0 has carrier, as a dummy has).
# Deleting d0 deletes the pair.
dummy_appears() {
  local t0
  if ! nsx "$NSC" ip link add d0 type dummy 2>/dev/null; then
    echo "no dummy driver: d0 is a veth (peer d0p)"
    nsx "$NSC" ip link add d0 type veth peer name d0p && nsx "$NSC" ip link set d0p up || return 1
  fi
  nsx "$NSC" ip addr add "$DUMMY4/24" dev d0 && nsx "$NSC" ip link set d0 up || return 1
  t0=$(now_ms)
  if poll_until $((t0 + CHANGE_S * 1000)) have local "$DUMMY_CAND"; then
    echo "local candidate $DUMMY_CAND after $(($(now_ms) - t0)) ms"
    note "dummy interface: local candidate $DUMMY_CAND after $(($(now_ms) - t0)) ms"
    return 0
  fi
  show_cands
  return 1
}
check "g. dummy interface d0 $DUMMY4/24: local candidate $DUMMY_CAND within $CHANGE_S s" dummy_appears
dummy_goes() {
  local t0
  nsx "$NSC" ip link del d0 || return 1
  t0=$(now_ms)
  if poll_until $((t0 + CHANGE_S * 1000)) lacks local "$DUMMY_CAND"; then
    echo "gone after $(($(now_ms) - t0)) ms"
    return 0
  fi
  show_cands
  return 1
}
check "g. d0 deleted: $DUMMY_CAND gone within $CHANGE_S s" dummy_goes

# --- h: no gateway, no waiting on one --------------------------------------------------------
no_gateway_ok() {
  local secs=never
  [[ -n $WGSTUN_MS ]] && secs=$(printf '%d.%03d' $((WGSTUN_MS / 1000)) $((WGSTUN_MS % 1000)))
  echo "first wg-stun candidate $secs s after the start"
  note "first wg-stun candidate $secs s after meshwg started"
  status || return 1
  show_cands
  [[ -n $WGSTUN_MS ]] && ((WGSTUN_MS <= GATHER_S * 1000)) || return 1
  [[ -z $(cands | awk '$1 == "upnp" || $1 == "nat-pmp"') ]] || { echo "upnp / nat-pmp candidate in a lab without a gateway"; return 1; }
}
check "h. no UPnP/NAT-PMP gateway: wg-stun within $GATHER_S s anyway, no upnp/nat-pmp candidate" no_gateway_ok

# --- i: text status --------------------------------------------------------------------------
text_ok() {
  nsx "$NSC" "$MESHWG" status "$IFC" >"$WORKDIR/status.txt" 2>&1 || { cat "$WORKDIR/status.txt"; return 1; }
  cat "$WORKDIR/status.txt"
  grep -q wg-stun "$WORKDIR/status.txt"
}
check "i. meshwg status $IFC (text) lists the wg-stun candidate" text_ok

# --- j: shutdown -----------------------------------------------------------------------------
client_stops() {
  local rc=0
  kill -TERM "$CLIENT_PID"
  wait_gone "$CLIENT_PID" 50 || { echo "still running 5 s after SIGTERM"; return 1; }
  wait "$CLIENT_PID" || rc=$?
  echo "exit status $rc"
  ((rc == 0)) || return 1
  if ip -n "$NSC" link show "$IFC" >/dev/null 2>&1; then echo "$IFC still exists"; return 1; fi
  if [[ -e $WG_RUN_DIR/$IFC.sock ]]; then echo "$WG_RUN_DIR/$IFC.sock still exists"; return 1; fi
}
check "j. SIGTERM: meshwg exits 0 within 5 s and removes $IFC and its UAPI socket" client_stops
check "meshwg-server and turnserver still running" kill -0 $SERVER_PID $TURN_PID

finish
