# shellcheck shell=bash
# Shared helpers for the network-namespace tests (sourced, not run).
#
# What it gives a script:
#   - namespaces with names unique to this run (mwg-<pid>-<suffix>) and a veth pair between two
#     of them;
#   - WireGuard daemons started in the foreground inside a namespace, for either
#     implementation ("meshwg" = $MESHWG, "wireguard-go" = $WIREGUARD_GO), so every script can
#     run meshwg<->wireguard-go or wireguard-go<->wireguard-go (IMPL1/IMPL2);
#   - a cleanup trap on EXIT/INT/TERM that kills every process it started and every process
#     left in its namespaces (daemonized ones included), deletes the namespaces, the UAPI
#     sockets of the interfaces it named, and its temp dir, even when the script fails;
#   - a client behind an nftables masquerading router with a server on a "public" net
#     (nat_topology), two clients behind their own NATs and a server joined by an "internet"
#     router (two_nat_topology), and the NAT port conntrack chose for a UDP flow (ct_nat_ports);
#   - check/finish bookkeeping that prints PASS/FAIL per check and "N passed, M failed";
#   - mesh mode: meshwg-server (STUN, WG-STUN, relay) and two `meshwg --config` peers behind
#     the two-NAT topology (mesh_lab, start_mesh_peers), and their `meshwg status --json`
#     (peer_field, path_is, wait_both_path).
#
# Rules kept here: every loop is bounded in count and time; every external command that could
# hang runs under `timeout`. A userspace daemon's UDP socket lives in the namespace the process
# runs in, so each daemon runs inside its own namespace (ip netns exec). /var/run/wireguard is
# NOT per namespace, so interface names must be unique across namespaces and concurrent runs:
# use ifname_new.

# Paths. Scripts live in tests/netns/, tools/ or benchmarks/, all one level below the root.
REPO_ROOT=${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
MESHWG=${MESHWG:-$REPO_ROOT/build/tools/meshwg}
WIREGUARD_GO=${WIREGUARD_GO:-$(command -v wireguard-go || echo /usr/bin/wireguard-go)}
PY=${PY:-$(command -v /usr/bin/python3 || command -v python3)}
# Daemon log level: meshwg understands error|info|debug; wireguard-go maps debug to verbose
# and anything else it does not know to error.
LOG_LEVEL=${LOG_LEVEL:-info}
CMD_TIMEOUT=${CMD_TIMEOUT:-20}       # seconds for an ordinary command in a namespace
DAEMON_MAX_S=${DAEMON_MAX_S:-1800}   # hard lifetime of a daemon even if cleanup never runs
WG_RUN_DIR=/var/run/wireguard

_LIB_PIDS=()
_LIB_NETNS=()
_LIB_IFNAMES=()
_LIB_NEXT_IF=0
PASSED=0
FAILED=0
WORKDIR=$(mktemp -d /tmp/meshwg-netns.XXXXXX)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
# die TEXT: a setup step failed; counts one failure, prints the summary and exits 1.
die() {
  echo "FAIL: $*"
  FAILED=$((FAILED + 1))
  finish
}

# --- cleanup -------------------------------------------------------------------------------

_lib_kill_all() {
  local sig=$1 pid ns
  for pid in "${_LIB_PIDS[@]}"; do kill "-$sig" "$pid" 2>/dev/null || true; done
  # Anything still running inside our namespaces is ours too (daemonized children, iperf3).
  for ns in "${_LIB_NETNS[@]}"; do
    for pid in $(timeout 5 ip netns pids "$ns" 2>/dev/null); do kill "-$sig" "$pid" 2>/dev/null || true; done
  done
}

_lib_alive() {
  local pid ns
  for pid in "${_LIB_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done
  for ns in "${_LIB_NETNS[@]}"; do
    [[ -n $(timeout 5 ip netns pids "$ns" 2>/dev/null) ]] && return 0
  done
  return 1
}

_lib_cleanup() {
  local rc=$? i ns ifn
  set +e
  trap - EXIT INT TERM
  _lib_kill_all TERM
  for ((i = 0; i < 50; i++)); do _lib_alive || break; sleep 0.1; done
  _lib_kill_all KILL
  for ((i = 0; i < 20; i++)); do _lib_alive || break; sleep 0.1; done
  for ns in "${_LIB_NETNS[@]}"; do timeout 10 ip netns del "$ns" 2>/dev/null; done
  for ifn in "${_LIB_IFNAMES[@]}"; do rm -f "$WG_RUN_DIR/$ifn.sock" "$WG_RUN_DIR/$ifn.mesh"; done
  if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "kept $WORKDIR"; else rm -rf "$WORKDIR"; fi
  exit "$rc"
}
trap _lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

track_pid() { _LIB_PIDS+=("$1"); }

# --- bounded waiting -----------------------------------------------------------------------

# wait_for TRIES INTERVAL CMD...: runs CMD up to TRIES times, INTERVAL seconds apart, each
# attempt under $CMD_TIMEOUT (shell functions, which timeout cannot run, must bound themselves;
# the helpers here all do). Returns 0 as soon as CMD succeeds.
wait_for() {
  local tries=$1 interval=$2 i
  shift 2
  for ((i = 0; i < tries; i++)); do
    if declare -F "$1" >/dev/null; then
      "$@" >/dev/null 2>&1 && return 0
    else
      timeout "$CMD_TIMEOUT" "$@" >/dev/null 2>&1 && return 0
    fi
    sleep "$interval"
  done
  return 1
}

# wait_until SECONDS INTERVAL CMD...: runs CMD every INTERVAL seconds until it succeeds or
# SECONDS (an integer) have passed; each attempt is bounded like in wait_for. It prints what
# the last attempt printed (on failure after a line saying so), so a `check` shows why and a
# caller may keep what was seen. Safe to run in the background (its scratch file is its own).
wait_until() {
  local secs=$1 interval=$2 deadline out="$WORKDIR/wait_until.$BASHPID.out"
  shift 2
  deadline=$(($(now_us) + secs * 1000000))
  while :; do
    if declare -F "$1" >/dev/null; then
      "$@" >"$out" 2>&1 && { cat "$out"; return 0; }
    else
      timeout "$CMD_TIMEOUT" "$@" >"$out" 2>&1 && { cat "$out"; return 0; }
    fi
    (($(now_us) < deadline)) || break
    sleep "$interval"
  done
  echo "not within $secs s; the last attempt said:"
  cat "$out"
  return 1
}

# now_us: wall clock in microseconds; now_s: in seconds with a fraction (as date +%s.%N).
now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
now_s() { echo "${EPOCHREALTIME/,/.}"; }
# elapsed_since T0: seconds (two decimals) since T0, a now_s reading.
elapsed_since() { LC_ALL=C awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.2f\n", b - a }'; }

# save_out NAME CMD...: runs CMD, its stdout also kept in $WORKDIR/NAME (for a value measured
# inside a `check`: read it afterwards with saved NAME).
save_out() {
  local name=$1
  shift
  "$@" | tee "$WORKDIR/$name"
  return "${PIPESTATUS[0]}"
}
# saved NAME: what save_out kept ("?" if nothing).
saved() { if [[ -s $WORKDIR/$1 ]]; then tail -n 1 "$WORKDIR/$1"; else echo "?"; fi; }

# wait_gone PID [TRIES]: waits (0.1 s steps) until PID has exited.
wait_gone() {
  local pid=$1 tries=${2:-50} i
  for ((i = 0; i < tries; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# --- checks --------------------------------------------------------------------------------

# check DESCRIPTION CMD...: runs CMD (errexit does not apply inside it), prints PASS/FAIL and
# counts. On failure the command's output is shown.
check() {
  local desc=$1 out
  shift
  out="$WORKDIR/check.out"
  if "$@" >"$out" 2>&1; then
    echo "PASS: $desc"
    PASSED=$((PASSED + 1))
  else
    echo "FAIL: $desc"
    sed 's/^/    | /' "$out" | tail -n 20
    FAILED=$((FAILED + 1))
  fi
  return 0
}

skip() { echo "SKIP: $*"; }

# note TEXT: a result worth showing (rates, counters); printed just before the summary.
note() { echo "$*" >>"$WORKDIR/notes"; }

# dump_logs: the last $DUMP_LINES (default 30) lines of every $WORKDIR/*.log.
dump_logs() {
  local f
  for f in "$WORKDIR"/*.log; do
    [[ -s $f ]] || continue
    echo "---- last lines of $(basename "$f") ----"
    tail -n "${DUMP_LINES:-30}" "$f"
  done
}

# finish: prints the summary and exits 0 only if nothing failed.
finish() {
  [[ $FAILED == 0 ]] || dump_logs
  [[ -s $WORKDIR/notes ]] && cat "$WORKDIR/notes"
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED == 0 ]] && exit 0
  exit 1
}

# --- namespaces ----------------------------------------------------------------------------

# ns_create VAR SUFFIX: creates namespace mwg-<pid>-SUFFIX with lo up, stores its name in VAR.
# Call it in the main shell (not in $(...)) so the namespace is registered for cleanup.
ns_create() {
  local -n _var=$1
  local name="mwg-$$-$2"
  timeout "$CMD_TIMEOUT" ip netns add "$name" || return 1
  _LIB_NETNS+=("$name")
  timeout "$CMD_TIMEOUT" ip -n "$name" link set lo up
  _var=$name
}

# nsx NS CMD...: runs CMD inside NS under $CMD_TIMEOUT.
nsx() {
  local ns=$1
  shift
  timeout "$CMD_TIMEOUT" ip netns exec "$ns" "$@"
}

# wgx NS ARGS...: wg(8) inside NS.
wgx() {
  local ns=$1
  shift
  timeout "$CMD_TIMEOUT" ip netns exec "$ns" wg "$@"
}

# veth_pair NS1 NS2: veth between them; NS1 gets 10.0.0.1/24 + fd00::1/64, NS2 .2 / ::2
# (nodad, so IPv6 works at once). Created directly inside the namespaces, so no name is ever
# taken in the host namespace.
veth_pair() {
  local a=$1 b=$2
  timeout "$CMD_TIMEOUT" ip -n "$a" link add veth0 type veth peer name veth0 netns "$b" || return 1
  ip -n "$a" addr add 10.0.0.1/24 dev veth0
  ip -n "$a" addr add fd00::1/64 dev veth0 nodad
  ip -n "$b" addr add 10.0.0.2/24 dev veth0
  ip -n "$b" addr add fd00::2/64 dev veth0 nodad
  ip -n "$a" link set veth0 up
  ip -n "$b" link set veth0 up
}

# veth_link NS1 IF1 NS2 IF2: a veth pair IF1 (in NS1) - IF2 (in NS2), both up, made inside the
# namespaces (no host-side names).
veth_link() {
  timeout "$CMD_TIMEOUT" ip -n "$1" link add "$2" type veth peer name "$4" netns "$3" &&
    ip -n "$1" link set "$2" up && ip -n "$3" link set "$4" up
}

# udp_listening NS PORT: a UDP socket is bound to PORT in NS.
udp_listening() { [[ -n $(nsx "$1" ss -Huln "sport = :$2") ]]; }

# --- a client behind a NAT -----------------------------------------------------------------

# nat_topology NSC NSR NSS [KEY=VALUE...]: wires three namespaces (made with ns_create) into a
# client behind an nftables masquerading router, with a server on the "public" side:
#
#   client NSC              router NSR                                 server NSS
#   eth0 client4 ────────── lan0 lan4              wan0 public4 ────────── eth0 server4
#   default via lan4        forwarding; nft table mwgnat masquerades       no route to the LAN
#                           what leaves wan0
#
# KEY=VALUE, defaults in brackets (addresses with their prefix length):
#   client4= [10.0.0.2/24]  lan4= [10.0.0.1/24]
#   public4= [203.0.113.1/24]  server4= [203.0.113.2/24]
#   ipv6=1   also IPv6 (nodad): client6= [fd00:1::2/64] lan6= [fd00:1::1/64] public6=
#            [fd00:2::1/64] server6= [fd00:2::2/64], the client's default route, v6 forwarding
#            and an ip6 masquerade table  [0: IPv4 only]
#   ports=LO-HI   UDP leaving wan0 is masqueraded to source ports LO-HI, so a port passed
#                 through unchanged would show  [empty: plain masquerade, which keeps the
#                 source port when it can, so without port clashes one socket gets one
#                 mapping whatever the destination]
# Returns non-zero, with a message on stderr, if a step fails (errexit does not apply to a
# function called with ||, so every step is checked here).
nat_topology() {
  local nsc=$1 nsr=$2 nss=$3 kv fam
  shift 3
  local client4=10.0.0.2/24 lan4=10.0.0.1/24 public4=203.0.113.1/24 server4=203.0.113.2/24
  local client6=fd00:1::2/64 lan6=fd00:1::1/64 public6=fd00:2::1/64 server6=fd00:2::2/64
  local ipv6=0 ports=""
  for kv in "$@"; do
    case $kv in
      client4=* | lan4=* | public4=* | server4=* | client6=* | lan6=* | public6=* | server6=* | \
        ipv6=* | ports=*)
        local "$kv" ;;
      *) echo "nat_topology: unknown option '$kv'" >&2; return 1 ;;
    esac
  done
  veth_link "$nsc" eth0 "$nsr" lan0 || { echo "nat_topology: client-router link" >&2; return 1; }
  veth_link "$nsr" wan0 "$nss" eth0 || { echo "nat_topology: router-server link" >&2; return 1; }
  if ! { ip -n "$nsc" addr add "$client4" dev eth0 &&
    ip -n "$nsr" addr add "$lan4" dev lan0 &&
    ip -n "$nsr" addr add "$public4" dev wan0 &&
    ip -n "$nss" addr add "$server4" dev eth0 &&
    ip -n "$nsc" route add default via "${lan4%/*}"; }; then
    echo "nat_topology: IPv4 addresses and route" >&2
    return 1
  fi
  if [[ $ipv6 == 1 ]]; then
    if ! { ip -n "$nsc" addr add "$client6" dev eth0 nodad &&
      ip -n "$nsr" addr add "$lan6" dev lan0 nodad &&
      ip -n "$nsr" addr add "$public6" dev wan0 nodad &&
      ip -n "$nss" addr add "$server6" dev eth0 nodad &&
      ip -n "$nsc" -6 route add default via "${lan6%/*}"; }; then
      echo "nat_topology: IPv6 addresses and route" >&2
      return 1
    fi
    nsx "$nsr" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 ||
      { echo "nat_topology: forwarding" >&2; return 1; }
  else
    nsx "$nsr" sysctl -qw net.ipv4.ip_forward=1 ||
      { echo "nat_topology: forwarding" >&2; return 1; }
  fi
  # A port range on masquerade needs a transport protocol match; other traffic (ICMP errors
  # are NATed with their flow anyway) keeps its port.
  local rules="oifname \"wan0\" masquerade"
  [[ -z $ports ]] || rules="oifname \"wan0\" meta l4proto udp masquerade to :$ports
    $rules"
  for fam in ip ip6; do
    [[ $fam == ip || $ipv6 == 1 ]] || continue
    nsx "$nsr" nft -f - <<EOF || { echo "nat_topology: nftables masquerade ($fam)" >&2; return 1; }
table $fam mwgnat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    $rules
  }
}
EOF
  done
}

# two_nat_topology CLI_A NAT_A CLI_B NAT_B INET SRV [natA=plain|symmetric] [natB=...]
# [same_nat=1]: two clients, each behind its own nftables masquerade router, and a server, all
# joined by an "internet" router:
#
#   CLI_A 10.1.0.2/24 ── lan0 NAT_A wan0 198.51.100.1/24 ──┐
#                                                         INET (.254 on each net)
#   CLI_B 10.2.0.2/24 ── lan0 NAT_B wan0 198.51.101.1/24 ──┤   forwards, no NAT
#                                SRV eth0 203.0.113.2/24 ──┘
#
# plain: masquerade (keeps ports when it can: endpoint-independent mapping); symmetric:
# masquerade random (a random port per flow: endpoint-dependent mapping). Like a home router
# (OpenWrt's wan zone), each NAT refuses new flows from its WAN, to itself and through it.
# That matters: a refused packet leaves no conntrack entry, while one the router accepted
# (an unanswered packet to a closed port of its own) would hold the public address:port pair
# and make the NAT pick another port for the client's own flow to that peer later. With same_nat=1,
# CLI_B hangs off NAT_A's LAN too (10.1.0.3/24, through a bridge in NAT_A) and NAT_B is unused.
# The routers' nft tables are named mwgnat; INET gets an empty "ip mwgcut" table with a
# forward chain "cut" that tests may add drop rules to.
# shellcheck disable=SC2015  # "a && b || { message; return 1; }" is meant: any step failing
two_nat_topology() {
  local ca=$1 na=$2 cb=$3 nb=$4 inet=$5 srv=$6 kv natA=plain natB=plain same_nat=0
  shift 6
  for kv in "$@"; do
    case $kv in
      natA=* | natB=* | same_nat=*) local "$kv" ;;
      *) echo "two_nat_topology: unknown option '$kv'" >&2; return 1 ;;
    esac
  done
  veth_link "$na" wan0 "$inet" a0 && veth_link "$inet" s0 "$srv" eth0 &&
    ip -n "$na" addr add 198.51.100.1/24 dev wan0 &&
    ip -n "$inet" addr add 198.51.100.254/24 dev a0 &&
    ip -n "$inet" addr add 203.0.113.254/24 dev s0 &&
    ip -n "$srv" addr add 203.0.113.2/24 dev eth0 &&
    ip -n "$na" route add default via 198.51.100.254 &&
    ip -n "$srv" route add default via 203.0.113.254 ||
    { echo "two_nat_topology: internet links" >&2; return 1; }
  if [[ $same_nat == 1 ]]; then
    ip -n "$na" link add br0 type bridge && ip -n "$na" link set br0 up &&
      ip -n "$na" addr add 10.1.0.1/24 dev br0 &&
      veth_link "$ca" eth0 "$na" lan0 && veth_link "$cb" eth0 "$na" lan1 &&
      ip -n "$na" link set lan0 master br0 && ip -n "$na" link set lan1 master br0 &&
      ip -n "$ca" addr add 10.1.0.2/24 dev eth0 && ip -n "$cb" addr add 10.1.0.3/24 dev eth0 &&
      ip -n "$ca" route add default via 10.1.0.1 && ip -n "$cb" route add default via 10.1.0.1 ||
      { echo "two_nat_topology: shared LAN" >&2; return 1; }
  else
    veth_link "$ca" eth0 "$na" lan0 && veth_link "$cb" eth0 "$nb" lan0 &&
      veth_link "$nb" wan0 "$inet" b0 &&
      ip -n "$ca" addr add 10.1.0.2/24 dev eth0 && ip -n "$na" addr add 10.1.0.1/24 dev lan0 &&
      ip -n "$cb" addr add 10.2.0.2/24 dev eth0 && ip -n "$nb" addr add 10.2.0.1/24 dev lan0 &&
      ip -n "$nb" addr add 198.51.101.1/24 dev wan0 &&
      ip -n "$inet" addr add 198.51.101.254/24 dev b0 &&
      ip -n "$ca" route add default via 10.1.0.1 && ip -n "$cb" route add default via 10.2.0.1 &&
      ip -n "$nb" route add default via 198.51.101.254 ||
      { echo "two_nat_topology: client links" >&2; return 1; }
  fi
  local r kind rule
  for r in "$na" "$nb" "$inet"; do
    [[ $same_nat == 1 && $r == "$nb" ]] && continue
    nsx "$r" sysctl -qw net.ipv4.ip_forward=1 || { echo "two_nat_topology: forwarding" >&2; return 1; }
  done
  for r in "$na" "$nb"; do
    [[ $same_nat == 1 && $r == "$nb" ]] && continue
    kind=$natA
    [[ $r == "$nb" ]] && kind=$natB
    rule='oifname "wan0" masquerade'
    [[ $kind == symmetric ]] && rule='oifname "wan0" masquerade random'
    nsx "$r" nft -f - <<EOF || { echo "two_nat_topology: masquerade" >&2; return 1; }
table ip mwgnat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    $rule
  }
  chain in {
    type filter hook input priority filter; policy accept;
    iifname "wan0" ct state new drop
  }
  chain through {
    type filter hook forward priority filter; policy accept;
    iifname "wan0" ct state new drop
  }
}
EOF
  done
  nsx "$inet" nft -f - <<EOF || { echo "two_nat_topology: cut table" >&2; return 1; }
table ip mwgcut {
  chain cut {
    type filter hook forward priority filter; policy accept;
  }
}
EOF
}

# ct_nat_ports NS [FILTER...]: for each UDP flow in NS's conntrack table that matches FILTER
# (conntrack -L -p udp FILTER..., e.g. --orig-port-src 51000 --orig-port-dst 51820), the
# source port the NAT translated it to, i.e. the destination port of the reply direction
# (conntrack prints "src= dst= sport= dport=" for the original, then for the reply). One per
# line; nothing if no flow matches.
ct_nat_ports() {
  local ns=$1
  shift
  nsx "$ns" conntrack -L -p udp "$@" 2>/dev/null |
    awk '{ n = 0
      for (i = 1; i <= NF; i++) if ($i ~ /^dport=/ && ++n == 2) { sub("dport=", "", $i); print $i } }'
}

# --- WireGuard daemons ---------------------------------------------------------------------

# ifname_new VAR: a WireGuard interface name unique to this run (registered for socket cleanup).
ifname_new() {
  local -n _ifv=$1
  _ifv="wg$$x$_LIB_NEXT_IF"
  _LIB_NEXT_IF=$((_LIB_NEXT_IF + 1))
  _LIB_IFNAMES+=("$_ifv")
}

impl_bin() {
  case $1 in
    meshwg) echo "$MESHWG" ;;
    wireguard-go) echo "$WIREGUARD_GO" ;;
    *) echo "unknown implementation '$1'" >&2; return 1 ;;
  esac
}

# start_daemon IMPL NS IFNAME PIDVAR: runs IMPL in the foreground inside NS (so its UDP socket
# lives there), waits until its UAPI socket and interface exist, stores the PID in PIDVAR.
start_daemon() {
  local impl=$1 ns=$2 ifn=$3 bin logf
  local -n _pidv=$4
  bin=$(impl_bin "$impl") || return 1
  [[ -x $bin ]] || { echo "$impl binary '$bin' not executable" >&2; return 1; }
  logf="$WORKDIR/$impl-$ifn.log"
  echo "==== start $(date +%T)" >>"$logf"
  ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL="$LOG_LEVEL" \
    timeout -k 5 "$DAEMON_MAX_S" "$bin" -f "$ifn" >>"$logf" 2>&1 &
  _pidv=$!
  track_pid "$_pidv"
  local i
  for ((i = 0; i < 150; i++)); do
    if [[ -S $WG_RUN_DIR/$ifn.sock ]] && ip -n "$ns" link show "$ifn" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$_pidv" 2>/dev/null; then
      wait "$_pidv" 2>/dev/null && i=0 || i=$?
      echo "$impl exited (status $i) before creating $ifn and its UAPI socket" >&2
      tail -n 20 "$logf" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$impl did not create $ifn and its UAPI socket within 15 s" >&2
  tail -n 20 "$logf" >&2
  return 1
}

# stop_daemon PID: SIGTERM and wait (5 s) for it to exit. Returns non-zero if it did not.
stop_daemon() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 50 || return 1
  wait "$pid" 2>/dev/null || true
}

# exits_0_on_term PID: SIGTERM to PID (a child of this shell); it must be gone within 5 s with
# exit status 0. Unlike stop_daemon, the status counts.
exits_0_on_term() {
  local pid=$1 rc=0
  kill -TERM "$pid"
  wait_gone "$pid" 50 || { echo "still running 5 s after SIGTERM"; return 1; }
  wait "$pid" || rc=$?
  echo "exit status $rc"
  ((rc == 0))
}

# genkey PREFIX: writes $WORKDIR/PREFIX.key and .pub.
genkey() {
  umask 077
  wg genkey >"$WORKDIR/$1.key"
  wg pubkey <"$WORKDIR/$1.key" >"$WORKDIR/$1.pub"
}
pub() { cat "$WORKDIR/$1.pub"; }
keyfile() { echo "$WORKDIR/$1.key"; }

# tunnel_addr NS IFNAME V4CIDR V6CIDR: addresses + link up on the WireGuard interface.
tunnel_addr() {
  local ns=$1 ifn=$2
  ip -n "$ns" addr add "$3" dev "$ifn" &&
    ip -n "$ns" addr add "$4" dev "$ifn" nodad &&
    ip -n "$ns" link set "$ifn" up
}

# ping_ok NS ADDR [COUNT] [SIZE]: COUNT (default 3) pings with SIZE payload bytes (default
# 56), all must be answered. -6/-4 is chosen from the address.
ping_ok() {
  local ns=$1 addr=$2 count=${3:-3} size=${4:-56} fam=-4
  [[ $addr == *:* ]] && fam=-6
  nsx "$ns" ping "$fam" -n -q -c "$count" -s "$size" -i 0.2 -W 2 "$addr"
}

# ping_first NS ADDR: the first ping of a fresh session (handshake first): up to 10 tries.
ping_first() {
  local ns=$1 addr=$2 fam=-4
  [[ $addr == *:* ]] && fam=-6
  wait_for 10 0.2 ip netns exec "$ns" ping "$fam" -n -q -c 1 -W 2 "$addr"
}

# endpoint_of NS IFNAME PUBKEY: prints the peer's current endpoint as wg shows it.
endpoint_of() {
  wgx "$1" show "$2" endpoints | awk -v k="$3" '$1 == k { print $2 }'
}

# expect_endpoint NS IFNAME PUBKEY ENDPOINT
expect_endpoint() {
  local got
  got=$(endpoint_of "$1" "$2" "$3")
  echo "endpoint: got '$got', want '$4'"
  [[ $got == "$4" ]]
}

# listening NS PORT: a TCP socket listens on PORT in NS.
listening() { [[ -n $(nsx "$1" ss -Hltn "sport = :$2") ]]; }

# iperf_mbps SERVER_NS SERVER_ADDR CLIENT_NS SECONDS [iperf3 client args...]: one TCP stream;
# prints the receiver's rate in Mbit/s. Uses a one-shot server on port 5201.
iperf_mbps() {
  local sns=$1 saddr=$2 cns=$3 secs=$4 spid json
  shift 4
  json="$WORKDIR/iperf.json"
  ip netns exec "$sns" timeout $((secs + 30)) iperf3 -s -1 -B "$saddr" -p 5201 \
    >>"$WORKDIR/iperf3-server.log" 2>&1 &
  spid=$!
  track_pid "$spid"
  wait_for 50 0.1 listening "$sns" 5201 || true
  if ! timeout $((secs + 20)) ip netns exec "$cns" iperf3 -c "$saddr" -p 5201 -t "$secs" -f m -J "$@" \
      >"$json" 2>>"$WORKDIR/iperf3-client.log"; then
    echo "iperf3 client failed" >&2
    head -c 2000 "$json" >&2
    kill "$spid" 2>/dev/null || true
    return 1
  fi
  wait_gone "$spid" 50 || kill "$spid" 2>/dev/null || true
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"]/1e6))' "$json"
}

# --- mesh mode: meshwg-server and two `meshwg --config` peers behind NATs --------------------
#
# mesh_lab [natA=plain|symmetric] [natB=...] [same_nat=1]: the lab every mesh test shares.
# Namespaces CA NA CB NB INET SRV (globals) wired by two_nat_topology (options passed on), keys
# srv/a/b, configs a.conf/b.conf (mesh_conf), and meshwg-server running in SRV (SRV_PID):
#
#   CA 10.1.0.2 ── NA 198.51.100.1 ──┐
#   (meshwg a, tunnel 10.99.0.1)    INET ── SRV 203.0.113.2: meshwg-server
#   CB 10.2.0.2 ── NB 198.51.101.1 ──┘        Stun :3478, WGStun :51820 (UDP), Relay :443 (TCP)
#   (meshwg b, tunnel 10.99.0.2)    (same_nat=1: CB is 10.1.0.3 on NA's LAN)
#
# Both peers: ListenPort 51000, a [Peer] without Endpoint (so they start relayed), the server
# as WG-STUN peer (it shows in `meshwg status` under the server's public key) and relay.

MESHWG_SERVER=${MESHWG_SERVER:-$(dirname "$MESHWG")/meshwg-server}
SRV_PID=""

# mesh_keys: keys srv, a and b (kept if they exist).
mesh_keys() {
  local k
  for k in srv a b; do [[ -s $WORKDIR/$k.key ]] || genkey "$k"; done
}

# mesh_server_conf: $WORKDIR/srv.conf, every service on 203.0.113.2.
mesh_server_conf() {
  cat >"$WORKDIR/srv.conf" <<EOF
[Server]
PrivateKey = $(cat "$(keyfile srv)")
Stun = 203.0.113.2:3478
WGStun = 203.0.113.2:51820
Relay = 203.0.113.2:443
EOF
}

# start_mesh_server NS: meshwg-server -f in NS (log meshwg-server.log), PID in SRV_PID; waits
# (5 s) until the relay listens on 443.
start_mesh_server() {
  [[ -x $MESHWG_SERVER ]] || { echo "meshwg-server '$MESHWG_SERVER' not executable" >&2; return 1; }
  ip netns exec "$1" env LOG_LEVEL="$LOG_LEVEL" timeout -k 5 "$DAEMON_MAX_S" "$MESHWG_SERVER" -f \
    --config "$WORKDIR/srv.conf" \
    >>"$WORKDIR/meshwg-server.log" 2>&1 &
  SRV_PID=$!
  track_pid "$SRV_PID"
  wait_for 50 0.1 listening "$1" 443
}

# stop_mesh_server: SIGTERM to the server and wait (5 s) for it to go.
stop_mesh_server() {
  [[ -n $SRV_PID ]] || return 0
  stop_daemon "$SRV_PID" || return 1
  SRV_PID=""
}

# mesh_conf NAME MY_ADDR PEER PEER_ADDR: $WORKDIR/NAME.conf for a peer with tunnel address
# MY_ADDR/24 whose one peer PEER (no Endpoint: reached over the relay first) has PEER_ADDR.
mesh_conf() {
  cat >"$WORKDIR/$1.conf" <<EOF
[Interface]
PrivateKey = $(cat "$(keyfile "$1")")
ListenPort = 51000
Address = $2/24

[Peer]
PublicKey = $(pub "$3")
AllowedIPs = $4/32
PersistentKeepalive = 25

[WGStun]
Endpoint = 203.0.113.2:51820
PublicKey = $(pub srv)
Stun = 203.0.113.2:3478

[Relay]
Endpoint = 203.0.113.2:443
PublicKey = $(pub srv)
EOF
}

mesh_lab() {
  [[ -x $MESHWG ]] || { echo "mesh_lab: meshwg '$MESHWG' not executable" >&2; return 1; }
  [[ -x $MESHWG_SERVER ]] || { echo "mesh_lab: meshwg-server '$MESHWG_SERVER' not executable" >&2; return 1; }
  if ! { ns_create CA ca && ns_create NA na && ns_create CB cb && ns_create NB nb &&
    ns_create INET in && ns_create SRV sv; }; then
    echo "mesh_lab: namespaces" >&2
    return 1
  fi
  # shellcheck disable=SC2153  # set by ns_create (nameref)
  two_nat_topology "$CA" "$NA" "$CB" "$NB" "$INET" "$SRV" "$@" || return 1
  mesh_keys
  mesh_server_conf
  mesh_conf a 10.99.0.1 b 10.99.0.2
  mesh_conf b 10.99.0.2 a 10.99.0.1
  start_mesh_server "$SRV" || { echo "mesh_lab: meshwg-server did not listen on 443" >&2; return 1; }
}

# spawn_mesh NS IFNAME CONF PIDVAR: meshwg -f --config $WORKDIR/CONF.conf IFNAME in NS (UPnP /
# NAT-PMP off: no gateway offers them here), log meshwg-CONF.log; does not wait.
spawn_mesh() {
  local -n _p=$4
  echo "==== start $(date +%T.%N)" >>"$WORKDIR/meshwg-$3.log"
  ip netns exec "$1" env MESHWG_NO_PORTMAP=1 LOG_LEVEL="$LOG_LEVEL" timeout -k 5 "$DAEMON_MAX_S" \
    "$MESHWG" -f --config "$WORKDIR/$3.conf" "$2" >>"$WORKDIR/meshwg-$3.log" 2>&1 &
  _p=$!
  track_pid "$_p"
}

# mesh_ready IFNAME PID CONF: waits (10 s) for the control plane's status socket; fails at once
# if the daemon exits, with its log's tail.
mesh_ready() {
  local ifn=$1 pid=$2 i
  for ((i = 0; i < 100; i++)); do
    [[ -S $WG_RUN_DIR/$ifn.mesh ]] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "meshwg ($3) exited before serving $ifn.mesh" >&2
      tail -n 20 "$WORKDIR/meshwg-$3.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "meshwg ($3) did not serve $ifn.mesh within 10 s" >&2
  return 1
}

# start_mesh_peers: peer a in CA and b in CB started together on fresh interface names (IFA,
# IFB; PIDs PA, PB), MESH_T0 = the moment before (now_s); waits until both serve their status.
start_mesh_peers() {
  ifname_new IFA
  ifname_new IFB
  # shellcheck disable=SC2034  # for the caller
  MESH_T0=$(now_s)
  spawn_mesh "$CA" "$IFA" a PA
  spawn_mesh "$CB" "$IFB" b PB
  mesh_ready "$IFA" "$PA" a && mesh_ready "$IFB" "$PB" b
}

# stop_mesh_peers: SIGTERM to both peers, each waited for (5 s).
stop_mesh_peers() {
  local rc=0
  stop_daemon "$PA" || rc=1
  stop_daemon "$PB" || rc=1
  return "$rc"
}

# status_json NS IFNAME: `meshwg status --json IFNAME`.
status_json() { nsx "$1" "$MESHWG" status --json "$2"; }

# relay_state NS IFNAME: "up", "down" or "None" (no relay configured).
relay_state() { status_json "$1" "$2" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["relay"])'; }
relay_up() { [[ $(relay_state "$1" "$2") == up ]]; }
relay_down() { [[ $(relay_state "$1" "$2") == down ]]; }

# peer_field NS IFNAME FIELD...: the FIELDs of the one mesh peer (every peer but the WG-STUN
# server, whose key is srv's), space separated: strings as they are, anything else as compact
# JSON ("null" for null or absent). Fails if the status cannot be read or has no such peer.
peer_field() {
  local ns=$1 ifn=$2 js
  shift 2
  js=$(status_json "$ns" "$ifn") || return 1
  "$PY" -c '
import json, sys
srv, fields = sys.argv[1], sys.argv[2:]
for p in json.loads(sys.stdin.read())["peers"]:
    if p["public_key"] != srv:
        vals = [p.get(f) for f in fields]
        print(" ".join(v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
                       for v in vals))
        sys.exit(0)
sys.exit("no mesh peer in the status")' "$(pub srv)" "$@" <<<"$js"
}

# path_is NS IFNAME PATH [ENDPOINT_PREFIX]: the mesh peer's path is PATH (and its endpoint
# starts with ENDPOINT_PREFIX). "direct" also needs the control plane's state to be "direct"
# (a confirmed switch, not one being tried) when the status carries a state. Prints what it saw.
path_is() {
  local got path ep state
  got=$(peer_field "$1" "$2" path endpoint state) || return 1
  read -r path ep state <<<"$got"
  echo "$1 $2: path $path, endpoint $ep, state $state (want $3${4:+, endpoint $4*})"
  [[ $path == "$3" ]] || return 1
  [[ -z ${4:-} || $ep == "$4"* ]] || return 1
  [[ $3 != direct || $state == direct || $state == null ]]
}

# wait_both_path T0 SECONDS PATH NS1 IF1 [NS2 IF2...]: polls every side's status every 50 ms
# until all show PATH in the same round (as path_is, without endpoint), at most until T0 +
# SECONDS (T0 a now_s reading); prints the seconds since T0 then. On failure it prints what
# each side showed last, on stderr.
wait_both_path() {
  local t0=$1 secs=$2 want=$3
  shift 3
  timeout $((${secs%.*} + 30)) "$PY" - "$t0" "$secs" "$want" "$MESHWG" "$(pub srv)" "$@" <<'EOF'
import json, subprocess, sys, time
t0, secs, want, meshwg, srv = float(sys.argv[1]), float(sys.argv[2]), *sys.argv[3:6]
sides = list(zip(sys.argv[6::2], sys.argv[7::2]))
last = {}
def shows(ns, ifn):
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, meshwg, "status", "--json", ifn],
                           capture_output=True, text=True, timeout=2)
        peers = json.loads(r.stdout)["peers"]
    except Exception as e:
        last[ns] = "status unreadable: %s" % e
        return False
    for p in peers:
        if p["public_key"] != srv:
            path, state = p.get("path"), p.get("state")
            last[ns] = "path %s, endpoint %s, state %s" % (path, p.get("endpoint"), state)
            return path == want and (want != "direct" or state in (None, "direct"))
    last[ns] = "no mesh peer"
    return False
while True:
    if all([shows(ns, ifn) for ns, ifn in sides]):
        print("%.2f" % (time.time() - t0))
        sys.exit(0)
    if time.time() >= t0 + secs:
        break
    time.sleep(0.05)
print("not all %s within %s s:" % (want, secs), file=sys.stderr)
for ns, _ in sides:
    print("  %s: %s" % (ns, last.get(ns)), file=sys.stderr)
sys.exit(1)
EOF
}

# mesh_peers_alive: both peers' daemons still run (says which one is gone).
mesh_peers_alive() {
  local rc=0
  kill -0 "$PA" 2>/dev/null || { echo "meshwg a (pid $PA) is gone"; rc=1; }
  kill -0 "$PB" 2>/dev/null || { echo "meshwg b (pid $PB) is gone"; rc=1; }
  return "$rc"
}
