#!/usr/bin/env bash
# meshwg-server's WG-STUN and plain STUN through a NAT: a meshwg client behind a masquerading
# router asks the server, inside its WireGuard tunnel, for its mapping (`meshwg stun
# 100.100.100.100:3478`, an ordinary UDP socket the kernel routes into the TUN) and must get
# the router's public address with the port conntrack chose for the WireGuard socket's flow;
# plain STUN from another socket must show another port. Then junk and a flood of real
# handshake initiations from random keys (python3 + cryptography) must leave the client
# answered, with the server's client table within --max-clients.
#
#   client (mwg-PID-c)             router (mwg-PID-r)                server (mwg-PID-s)
#   ┌─────────────────────────┐    ┌───────────────────────────┐    ┌──────────────────────────┐
#   │ meshwg -f wgPIDx0       │    │ nft: masquerade UDP to    │    │ meshwg-server -f         │
#   │  :51000, keepalive 1 s  │    │ :40000-40999              │    │  Stun   203.0.113.2:3478 │
#   │  100.64.7.2 fd00:77::2  │    │ lan0 10.0.0.1             │    │  WGStun 203.0.113.2:51820│
#   │  routes 100.100.100.100 │    │ wan0 203.0.113.1 ─────────┼────┤ eth0 203.0.113.2         │
#   │  and fd6d:6573:6877::1  │    │ python3: junk + flood ────┼──► │ no route to 10.0.0.0/24  │
#   │  into the tunnel        │    │ (from 203.0.113.1)        │    │                          │
#   │ eth0 10.0.0.2 ──────────┼────┤                           │    │                          │
#   │ default via 10.0.0.1    │    │ (forwarding)              │    │                          │
#   └─────────────────────────┘    └───────────────────────────┘    └──────────────────────────┘
#
# Checks: config errors exit 1 with FILE:LINE: KEY; the server listens on its relay TCP port
# and runs; the client's handshake completes; `meshwg stun` to 100.100.100.100:3478 and
# to [fd6d:6573:6877::1]:3478 print PUBLIC:PORT with PORT = the NAT port of the WireGuard flow
# (51000 -> 51820) in conntrack (the checker refuses a port one off and the client's own
# address and port); plain STUN to 203.0.113.2:3478 prints PUBLIC with a different port (its
# own flow's); pings to both reserved addresses; after the junk and the flood (responses and,
# past --load-threshold, cookie replies seen by the flooder; no answer to junk) the server
# still runs, the client still gets its mapping and pings; SIGTERM ends the server with status
# 0 and counters in its log showing the table bound held.
# Binaries: $MESHWG (tests use the build's tools/meshwg), meshwg-server next to it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STUN_PORT=3478
WGSTUN_PORT=51820
CLIENT_PORT=51000
NAT_PORTS=40000-40999
SERVER4=203.0.113.2
PUBLIC4=203.0.113.1
CLIENT4=10.0.0.2
RES4=100.100.100.100
RES6=fd6d:6573:6877::1
MAX_CLIENTS=32
LOAD_THRESHOLD=100
FLOOD_INITS=${FLOOD_INITS:-400}
FLOOD_JUNK=${FLOOD_JUNK:-2000}
FLOOD_SEED=${FLOOD_SEED:-$$}

[[ -x $MESHWG ]] || die "meshwg binary '$MESHWG' not executable (set MESHWG)"
[[ -x $MESHWG_SERVER ]] || die "meshwg-server binary '$MESHWG_SERVER' not executable"
"$PY" -c 'import cryptography.hazmat.primitives.asymmetric.x25519' 2>/dev/null ||
  die "$PY lacks the cryptography module (apt-get install python3-cryptography)"

not() { ! "$@"; }

# --- config errors (no namespace needed) -----------------------------------------------------
genkey srv
SRV_PUB=$(pub srv)
# config_error TEXT [CONTENT]: meshwg-server exits 1 and prints TEXT (FILE:LINE: KEY: ...);
# without CONTENT the file does not exist.
config_error() {
  local want=$1 rc=0 f="$WORKDIR/bad.conf"
  rm -f "$f"
  (($# < 2)) || printf '%s' "$2" >"$f"
  timeout "$CMD_TIMEOUT" "$MESHWG_SERVER" -f --config "$f" >"$WORKDIR/bad.out" 2>&1 || rc=$?
  echo "exit $rc: $(cat "$WORKDIR/bad.out")"
  ((rc == 1)) && grep -qF -- "$want" "$WORKDIR/bad.out"
}
check "config error: bad port names file, line and key" \
  config_error "$WORKDIR/bad.conf:3: Stun:" "[Server]
PrivateKey = $(cat "$(keyfile srv)")
Stun = 127.0.0.1:99999
"
check "config error: missing PrivateKey" \
  config_error "$WORKDIR/bad.conf:1: PrivateKey:" "[Server]
Stun = 127.0.0.1:3478
"
check "config error: missing file" config_error "$WORKDIR/bad.conf:0: file:"
check "config error: checker refuses a wrong line number" \
  not config_error "$WORKDIR/bad.conf:2: Stun:" "[Server]
PrivateKey = $(cat "$(keyfile srv)")
Stun = 127.0.0.1:99999
"
rm -f "$WORKDIR/bad.conf"

# --- topology --------------------------------------------------------------------------------
ns_create NSC c
ns_create NSR r
ns_create NSS s

nat_topology "$NSC" "$NSR" "$NSS" ports=$NAT_PORTS \
  client4=$CLIENT4/24 public4=$PUBLIC4/24 server4=$SERVER4/24 || die "NAT topology"

# --- the server ------------------------------------------------------------------------------
cat >"$WORKDIR/server.conf" <<EOF
# meshwg-server for $0
[Server]
PrivateKey = $(cat "$(keyfile srv)")
Stun = $SERVER4:$STUN_PORT
WGStun = $SERVER4:$WGSTUN_PORT
Relay = $SERVER4:443
EOF
SERVER_LOG="$WORKDIR/meshwg-server.log"
ip netns exec "$NSS" env LOG_LEVEL="$LOG_LEVEL" timeout -k 5 "$DAEMON_MAX_S" "$MESHWG_SERVER" -f \
  --config "$WORKDIR/server.conf" --max-clients $MAX_CLIENTS --load-threshold $LOAD_THRESHOLD \
  >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
track_pid $SERVER_PID
wait_for 100 0.1 udp_listening "$NSS" $STUN_PORT || die "meshwg-server did not listen on UDP $STUN_PORT"
wait_for 100 0.1 udp_listening "$NSS" $WGSTUN_PORT || die "meshwg-server did not listen on UDP $WGSTUN_PORT"
# The relay's line can trail the UDP sockets by a few milliseconds: give it 2 s.
wait_for 20 0.1 grep -q "relay: listening on TCP $SERVER4:443" "$SERVER_LOG" || true
check "server logs its relay listening on TCP $SERVER4:443, and runs" \
  bash -c "grep -q 'relay: listening on TCP $SERVER4:443' '$SERVER_LOG' && kill -0 $SERVER_PID"

# --- the client ------------------------------------------------------------------------------
genkey cli
ifname_new IFC
start_daemon meshwg "$NSC" "$IFC" CLIENT_PID || die "start meshwg"
wgx "$NSC" set "$IFC" listen-port $CLIENT_PORT private-key "$(keyfile cli)" \
  peer "$SRV_PUB" endpoint $SERVER4:$WGSTUN_PORT allowed-ips $RES4/32,$RES6/128 \
  persistent-keepalive 1 || die "configure the client"
tunnel_addr "$NSC" "$IFC" 100.64.7.2/32 fd00:77::2/128 || die "client tunnel addresses"
ip -n "$NSC" route add $RES4/32 dev "$IFC" || die "route to $RES4"
ip -n "$NSC" -6 route add $RES6/128 dev "$IFC" || die "route to $RES6"

handshake_done() {
  wgx "$NSC" show "$IFC" latest-handshakes | awk -v k="$SRV_PUB" '$1 == k && $2 > 0 { ok = 1 } END { exit !ok }'
}
check "client completes a handshake with the server (persistent keepalive)" wait_for 50 0.2 handshake_done

# --- checks ----------------------------------------------------------------------------------

# nat_port ORIG_SPORT ORIG_DPORT: the translated source port of that UDP flow, i.e. the
# destination port of the reply direction (the second dport= of the conntrack line).
nat_port() { ct_nat_ports "$NSR" --orig-port-src "$1" --orig-port-dst "$2"; }

# expect_mapped GOT PORT: GOT is PUBLIC4:PORT.
expect_mapped() {
  echo "meshwg stun printed '$1', conntrack says '$PUBLIC4:$2'"
  [[ -n $2 && $1 == "$PUBLIC4:$2" ]]
}

# stun_out TARGET FILE: `meshwg stun TARGET` in the client namespace; exactly one line out.
stun_out() {
  nsx "$NSC" "$MESHWG" stun --rto 200 --requests 6 "$1" >"$2" 2>"$2.err" || { cat "$2.err"; return 1; }
  cat "$2"
  [[ $(wc -l <"$2") == 1 && ! -s $2.err ]]
}

wg_flow_port() {
  local p
  p=$(nat_port $CLIENT_PORT $WGSTUN_PORT)
  [[ -n $p && $(wc -l <<<"$p") == 1 ]] || { echo "want one conntrack flow $CLIENT_PORT -> $WGSTUN_PORT, got '$p'" >&2; return 1; }
  echo "$p"
}

check "WG-STUN: meshwg stun $RES4:$STUN_PORT succeeds" stun_out "$RES4:$STUN_PORT" "$WORKDIR/wg4.out"
GOT4=$(cat "$WORKDIR/wg4.out" 2>/dev/null || true)
WGPORT=$(wg_flow_port || true)
note "WG-STUN (inner IPv4): $GOT4; conntrack port of the WireGuard flow: $WGPORT"
check "WG-STUN mapping is $PUBLIC4 with the WireGuard flow's NAT port" expect_mapped "$GOT4" "$WGPORT"
check "checker rejects a port one off" not expect_mapped "$GOT4" "$((${WGPORT:-0} + 1))"
check "checker rejects the client's own address and port" \
  not expect_mapped "$CLIENT4:$CLIENT_PORT" "$CLIENT_PORT"
check "the WireGuard flow's NAT port is in $NAT_PORTS (so a passed-through port would show)" \
  test "${WGPORT:-0}" -ge 40000 -a "${WGPORT:-0}" -le 40999

check "WG-STUN: meshwg stun [$RES6]:$STUN_PORT succeeds (inner IPv6)" \
  stun_out "[$RES6]:$STUN_PORT" "$WORKDIR/wg6.out"
check "inner IPv6 query reports the same outer mapping" \
  expect_mapped "$(cat "$WORKDIR/wg6.out" 2>/dev/null)" "$WGPORT"

# Plain STUN from a fresh socket: its own flow, its own NAT port.
nsx "$NSR" conntrack -D -p udp --orig-port-dst $STUN_PORT >/dev/null 2>&1 || true
check "plain STUN: meshwg stun $SERVER4:$STUN_PORT succeeds" stun_out "$SERVER4:$STUN_PORT" "$WORKDIR/plain.out"
GOTP=$(cat "$WORKDIR/plain.out" 2>/dev/null || true)
plain_ok() {
  local ports port
  ports=$(ct_nat_ports "$NSR" --orig-port-dst $STUN_PORT)
  echo "conntrack NAT ports for UDP to :$STUN_PORT: '${ports//$'\n'/ }'"
  [[ -n $ports && $(wc -l <<<"$ports") == 1 ]] || return 1
  port=$ports
  expect_mapped "$GOTP" "$port" && [[ $port != "$WGPORT" ]]
}
check "plain STUN mapping is $PUBLIC4 with its own flow's (different) port" plain_ok
note "plain STUN: $GOTP"

check "ping $RES4 through the tunnel" ping_ok "$NSC" $RES4
check "ping $RES6 through the tunnel" ping_ok "$NSC" $RES6

# --- junk and a flood of initiations from random keys -----------------------------------------
cat >"$WORKDIR/flood.py" <<'EOF'
# Junk and real Noise_IKpsk2 initiations from fresh random static keys to a WG-STUN server.
# Prints "responses=R cookies=C garbage_cookies=G junk_replies=J bad_replies=B".
import base64, hashlib, hmac, random, socket, struct, sys, time
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

host, port, pub_b64, n_init, n_junk, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rnd = random.Random(seed)
spub_r = base64.b64decode(pub_b64)
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"

def hsh(*parts):
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()

def kdf(ck, data, n):
    t0 = hmac.new(ck, data, hashlib.blake2s).digest()
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = hmac.new(t0, prev + bytes([i]), hashlib.blake2s).digest()
        out.append(prev)
    return out

def aead(key, pt, ad):
    return ChaCha20Poly1305(key).encrypt(bytes(12), pt, ad)  # counter 0

def raw(k):
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

mac1_key = hsh(b"mac1----", spub_r)
def mac1(body):
    return hashlib.blake2s(body, digest_size=16, key=mac1_key).digest()

def initiation():
    s, e = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    server = X25519PublicKey.from_public_bytes(spub_r)
    ck = hsh(CONSTRUCTION)
    h = hsh(hsh(ck, IDENTIFIER), spub_r)
    epub = raw(e)
    (ck,) = kdf(ck, epub, 1)
    h = hsh(h, epub)
    ck, k = kdf(ck, e.exchange(server), 2)
    enc_static = aead(k, raw(s), h)
    h = hsh(h, enc_static)
    ck, k = kdf(ck, s.exchange(server), 2)
    t = time.time()
    ts = struct.pack(">QI", 2**62 + 10 + int(t), int((t % 1) * 1e9))
    body = struct.pack("<II", 1, rnd.getrandbits(32)) + epub + enc_static + aead(k, ts, h)
    return body + mac1(body) + bytes(16)

def rb(n):
    return bytes(rnd.getrandbits(8) for _ in range(n))

# Junk that must never be answered: random bytes, bad mac1, unknown indices, responses,
# cookie replies, reserved bytes set, wrong sizes.
junk_kinds = [
    lambda: rb(rnd.randrange(0, 1400)),
    lambda: b"\x01\0\0\0" + rb(144),
    lambda: b"\x04\0\0\0" + rb(rnd.randrange(28, 1400)),
    lambda: b"\x02\0\0\0" + rb(88),
    lambda: b"\x03\0\0\0" + rb(60),
    lambda: bytes([rnd.choice([1, 2, 3, 4])]) + rb(3) + rb(rnd.choice([144, 88, 60, 28])),
    lambda: bytes([rnd.choice([1, 2, 3])]) + b"\0\0\0" + rb(rnd.choice([143, 145, 87, 89, 59, 61])),
]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
junk_sock, init_sock, garbage_sock = (socket.socket(fam, socket.SOCK_DGRAM) for _ in range(3))
for s in (junk_sock, init_sock, garbage_sock):
    s.setblocking(False)

inits = [initiation() for _ in range(n_init)]  # built first so they go out as one burst
garbage = []
for _ in range(n_init // 4):  # valid mac1, random content: DH work, then handshake_failed
    body = b"\x01\0\0\0" + rb(112)
    garbage.append(body + mac1(body) + bytes(16))

def send(sock, d):
    try:
        sock.sendto(d, (host, port))
    except OSError:
        pass  # ENOBUFS and the like: keep going

counts = {"responses": 0, "cookies": 0, "garbage_cookies": 0, "junk_replies": 0, "bad_replies": 0}
def drain():
    for sock, name in ((init_sock, None), (garbage_sock, "garbage"), (junk_sock, "junk")):
        while True:
            try:
                d = sock.recv(2048)
            except BlockingIOError:
                break
            if name == "junk":
                counts["junk_replies"] += 1
            elif len(d) == 64 and d[:4] == b"\x03\0\0\0":
                counts["garbage_cookies" if name else "cookies"] += 1
            elif len(d) == 92 and d[:4] == b"\x02\0\0\0" and not name:
                counts["responses"] += 1
            else:
                counts["bad_replies"] += 1

def settle(secs):
    deadline = time.time() + secs
    while time.time() < deadline:
        drain()
        time.sleep(0.05)

for i in range(n_junk):
    send(junk_sock, junk_kinds[i % len(junk_kinds)]())
    if i % 100 == 0:
        drain()
# The junk must not still fill the server's socket buffer when the initiations arrive (on a
# loaded machine the kernel would drop them there, unseen by the server and its counters).
settle(0.5)
# Bursts of 50, 20 ms apart: far above the load threshold (per second), yet small enough for
# the server's socket buffer while it waits for a CPU.
for i, d in enumerate(inits):
    send(init_sock, d)
    if i % 4 == 0 and garbage:
        send(garbage_sock, garbage.pop())
    if i % 50 == 49:
        drain()
        time.sleep(0.02)
settle(2)
print(" ".join(f"{k}={v}" for k, v in counts.items()))
EOF

flood() {
  local out
  out=$(timeout 300 ip netns exec "$NSR" "$PY" "$WORKDIR/flood.py" $SERVER4 $WGSTUN_PORT "$SRV_PUB" \
    "$FLOOD_INITS" "$FLOOD_JUNK" "$FLOOD_SEED") || return 1
  echo "$out" | tee "$WORKDIR/flood.out"
  note "flood from the router ($FLOOD_JUNK junk, $FLOOD_INITS random-key initiations, seed $FLOOD_SEED): $out"
}
count_of() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" "$2" | tail -n 1; }
check "junk and $FLOOD_INITS random-key initiations sent from the router" flood
flood_ok() {
  local r c j b
  r=$(count_of responses "$WORKDIR/flood.out")
  c=$(count_of cookies "$WORKDIR/flood.out")
  j=$(count_of junk_replies "$WORKDIR/flood.out")
  b=$(count_of bad_replies "$WORKDIR/flood.out")
  echo "responses=$r cookies=$c junk_replies=$j bad_replies=$b"
  # More responses than the table holds (so clients were evicted), cookies once over the
  # load threshold, nothing for junk.
  ((${r:-0} > MAX_CLIENTS && ${c:-0} > 0 && ${j:-1} == 0 && ${b:-1} == 0))
}
check "flood: > $MAX_CLIENTS handshake responses, cookie replies under load, no answer to junk" flood_ok
check "meshwg-server still running after the flood" kill -0 $SERVER_PID
stun_again() {
  stun_out "$RES4:$STUN_PORT" "$WORKDIR/wg4b.out" && expect_mapped "$(cat "$WORKDIR/wg4b.out")" "$WGPORT"
}
check "WG-STUN after the flood: the same mapping" stun_again
check "ping $RES4 after the flood" ping_first "$NSC" $RES4
check "ping $RES6 after the flood" ping_ok "$NSC" $RES6

# --- shutdown --------------------------------------------------------------------------------
check "meshwg-server exits 0 on SIGTERM" exits_0_on_term "$SERVER_PID"
counters_ok() {
  local clients evicted cookie malformed
  grep -E 'wgstun (counters|drops):|stun counters:' "$SERVER_LOG" | tail -n 3
  clients=$(count_of clients "$SERVER_LOG")
  evicted=$(count_of clients_evicted "$SERVER_LOG")
  cookie=$(count_of cookie_sent "$SERVER_LOG")
  malformed=$(count_of malformed "$SERVER_LOG")
  ((${clients:-999} <= MAX_CLIENTS && ${evicted:-0} > 0 && ${cookie:-0} > 0 && ${malformed:-0} > 0))
}
check "server counters: clients <= $MAX_CLIENTS, evictions, cookies, malformed drops" counters_ok

finish
