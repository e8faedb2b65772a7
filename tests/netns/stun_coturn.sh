#!/usr/bin/env bash
# `meshwg stun` through a NAT against coturn's turnserver as a plain STUN server: the mapped
# address it prints must be the router's public address with the port the router's conntrack
# chose for the flow (the masquerade maps to 40000-40999, so a client port passed through
# unchanged would show), for IPv4 and IPv6.
#
#   client (mwg-PID-c)          router (mwg-PID-r)                     server (mwg-PID-s)
#   ┌──────────────────┐        ┌──────────────────────────────┐       ┌──────────────────────────┐
#   │ meshwg stun      │        │ nft: masquerade to           │       │ turnserver --stun-only   │
#   │ eth0 10.0.0.2    ├────────┤ lan0 10.0.0.1   wan0         ├───────┤ eth0 203.0.113.2 :3478   │
#   │      fd00:1::2   │        │      fd00:1::1   203.0.113.1 │       │      fd00:2::2    :3478  │
#   │ default via .1   │        │ (forwarding)     fd00:2::1   │       │ no route to 10.0.0.0/24  │
#   └──────────────────┘        └──────────────────────────────┘       └──────────────────────────┘
#
# Checks: the v4 and v6 answers equal ROUTER_PUBLIC:PORT where PORT is the reply-direction
# destination port of the one conntrack entry for the flow; the checker itself rejects a
# wrong port and the client's private address (so those checks can fail); a closed server
# port and a silent server make `meshwg stun` exit non-zero with a message on stderr.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TURNSERVER=${TURNSERVER:-$(command -v turnserver || echo /usr/bin/turnserver)}
STUN_PORT=3478
NAT_PORTS=40000-40999
SERVER4=203.0.113.2
SERVER6=fd00:2::2
PUBLIC4=203.0.113.1
PUBLIC6=fd00:2::1
CLIENT4=10.0.0.2

[[ -x $MESHWG ]] || die "meshwg binary '$MESHWG' not executable (set MESHWG)"
[[ -x $TURNSERVER ]] || die "turnserver not found (apt-get install coturn)"

ns_create NSC c
ns_create NSR r
ns_create NSS s

nat_topology "$NSC" "$NSR" "$NSS" ipv6=1 ports=$NAT_PORTS \
  client4=$CLIENT4/24 public4=$PUBLIC4/24 server4=$SERVER4/24 \
  public6=$PUBLIC6/64 server6=$SERVER6/64 || die "NAT topology"

# --- the STUN server ------------------------------------------------------------------------
TURN_LOG="$WORKDIR/turnserver.log"
ip netns exec "$NSS" timeout -k 5 "$DAEMON_MAX_S" "$TURNSERVER" -n --stun-only \
  --listening-ip $SERVER4 --listening-ip $SERVER6 --listening-port $STUN_PORT \
  --no-cli --no-tls --no-dtls --log-file stdout --simple-log \
  --pidfile "$WORKDIR/turnserver.pid" >"$TURN_LOG" 2>&1 &
TURN_PID=$!
track_pid $TURN_PID
wait_for 100 0.1 udp_listening "$NSS" $STUN_PORT || die "turnserver did not listen on UDP $STUN_PORT"
log "turnserver listens on $SERVER4 and [$SERVER6] port $STUN_PORT"

# --- helpers -------------------------------------------------------------------------------

# stun_query FAMILY TARGET [meshwg stun options...]: flushes the router's conntrack table,
# runs `meshwg stun` in the client namespace; stdout to $WORKDIR/stunFAMILY.out, stderr to
# .err. Returns meshwg's exit status.
stun_query() {
  local fam=$1 target=$2
  shift 2
  nsx "$NSR" conntrack -F -f "ipv$fam" >/dev/null 2>&1 || true
  nsx "$NSC" "$MESHWG" stun "$@" "$target" >"$WORKDIR/stun$fam.out" 2>"$WORKDIR/stun$fam.err"
}

# nat_ports FAMILY: the translated source port of every UDP flow to the STUN port, i.e. the
# destination port of the reply direction ("src=.. dst=.. sport=.. dport=.." twice per line).
nat_ports() { ct_nat_ports "$NSR" -f "ipv$1" --orig-port-dst $STUN_PORT; }

# expect_mapped FAMILY PUBLIC_ADDR GOT: GOT is PUBLIC_ADDR:PORT ([PUBLIC_ADDR]:PORT for v6)
# where PORT is the one NAT port conntrack holds for the flow.
expect_mapped() {
  local fam=$1 addr=$2 got=$3 ports port want
  ports=$(nat_ports "$fam")
  echo "conntrack NAT ports for UDP to :$STUN_PORT: '${ports//$'\n'/ }'"
  [[ -n $ports && $(wc -l <<<"$ports") == 1 ]] || { echo "want exactly one flow"; return 1; }
  port=$ports
  [[ $fam == 6 ]] && addr="[$addr]"
  want="$addr:$port"
  echo "meshwg stun printed '$got', conntrack says '$want'"
  [[ $got == "$want" ]]
}

not() { ! "$@"; }

# stun_ok FAMILY TARGET: the query succeeds and prints exactly one line.
stun_ok() {
  if ! stun_query "$1" "$2"; then
    cat "$WORKDIR/stun$1.err"
    return 1
  fi
  cat "$WORKDIR/stun$1.out"
  [[ $(wc -l <"$WORKDIR/stun$1.out") == 1 && ! -s $WORKDIR/stun$1.err ]]
}

# stun_fails FAMILY TARGET TEXT [options...]: non-zero exit, nothing on stdout, TEXT in stderr.
stun_fails() {
  local fam=$1 target=$2 text=$3 rc=0
  shift 3
  stun_query "$fam" "$target" "$@" || rc=$?
  echo "exit $rc; stderr: $(cat "$WORKDIR/stun$fam.err")"
  ((rc != 0)) && [[ ! -s $WORKDIR/stun$fam.out ]] && grep -q -- "$text" "$WORKDIR/stun$fam.err"
}

# --- IPv4 ----------------------------------------------------------------------------------
check "meshwg stun $SERVER4:$STUN_PORT succeeds (IPv4)" stun_ok 4 "$SERVER4:$STUN_PORT"
GOT4=$(cat "$WORKDIR/stun4.out")
check "IPv4 mapped address is $PUBLIC4 with the port conntrack shows" \
  expect_mapped 4 "$PUBLIC4" "$GOT4"
note "IPv4: meshwg stun printed $GOT4"
# The checker must be able to say no: a port one off, and the client's own private address.
if [[ $GOT4 =~ ^(.*):([0-9]+)$ ]]; then
  check "checker rejects a wrong port" not expect_mapped 4 "$PUBLIC4" "$PUBLIC4:$((BASH_REMATCH[2] + 1))"
  check "checker rejects the private address" not expect_mapped 4 "$PUBLIC4" "$CLIENT4:${BASH_REMATCH[2]}"
  check "NAT port is in the masquerade range $NAT_PORTS" \
    test "${BASH_REMATCH[2]}" -ge 40000 -a "${BASH_REMATCH[2]}" -le 40999
else
  check "IPv4 answer has the form ADDR:PORT ('$GOT4')" false
fi

# --- IPv6 ----------------------------------------------------------------------------------
check "meshwg stun [$SERVER6]:$STUN_PORT succeeds (IPv6)" stun_ok 6 "[$SERVER6]:$STUN_PORT"
GOT6=$(cat "$WORKDIR/stun6.out")
check "IPv6 mapped address is [$PUBLIC6] with the port conntrack shows" \
  expect_mapped 6 "$PUBLIC6" "$GOT6"
note "IPv6: meshwg stun printed $GOT6"

# --- failures ------------------------------------------------------------------------------
check "closed server port: non-zero exit, 'unreachable' on stderr" \
  stun_fails 4 "$SERVER4:3999" unreachable --rto 50 --requests 3
# Silence from the server: its nftables drops the requests, so only the schedule ends it.
nsx "$NSS" nft -f - <<EOF || die "server drop rule"
table inet mwgdrop {
  chain in {
    type filter hook input priority filter; policy accept;
    udp dport $STUN_PORT drop
  }
}
EOF
check "silent server: non-zero exit, 'no response' on stderr" \
  stun_fails 4 "$SERVER4:$STUN_PORT" "no response" --rto 20 --requests 3
check "silent server (IPv6): non-zero exit, 'no response' on stderr" \
  stun_fails 6 "[$SERVER6]:$STUN_PORT" "no response" --rto 20 --requests 3
check "turnserver still running" kill -0 "$TURN_PID"

finish
