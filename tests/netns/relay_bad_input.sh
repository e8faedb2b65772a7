#!/usr/bin/env bash
# meshwg-server's relay under bad input: two good clients, written here in Python (X25519 from
# python3-cryptography, keyed BLAKE2s from hashlib: an implementation of the relay's proofs
# independent of control/relay_proto.cc), authenticate (the server must accept their proofs
# and prove its own key back) and exchange frames; then waves of junk, truncated frames,
# clients vanishing mid-frame (FIN and RST), wrong proofs (random, for another key, for a
# low-order key, replayed from another connection), oversized lengths, frames before
# authentication, a frame flood at a client that does not read, and hundreds of
# unauthenticated connections held open until the server is full. After every wave the good
# clients still reach each other; at the end a new client joins, meshwg-server is still
# running, exits 0 on SIGTERM, and its counters and rate-limited log show what it refused.
#
#   client (mwg-PID-c)                            server (mwg-PID-s)
#   ┌──────────────────────────────────────┐      ┌──────────────────────────────────────┐
#   │ python3 relay.py                     │      │ meshwg-server -f                     │
#   │   good A (IPv4), good B (IPv6)       │      │   Relay [::]:443 (TCP, dual stack)   │
#   │   attackers: junk, truncated, wrong  │      │   --relay-max-clients 300            │
#   │   auth, oversized, before auth,      │      │   --relay-queue-kib 64               │
#   │   flood, unauthenticated hold        │      │                                      │
#   │ veth0 10.0.0.2 fd00::2 ──────────────┼──────┤ veth0 10.0.0.1 fd00::1               │
#   └──────────────────────────────────────┘      └──────────────────────────────────────┘
#
# Checks: a Relay address that cannot be bound exits 1 naming Relay; the server listens on
# 443; A (over IPv4) and B (over IPv6) authenticate and forward both ways with the source
# key; PeerAbsent for an unknown key; every wave's bad connections are closed by the server
# and A and B still forward afterwards (and A's key cannot be taken over); the held
# unauthenticated connections fill the server (a new client is refused while they are held)
# and are closed after the 5 s auth timeout, after which a new client joins and is served;
# meshwg-server still runs, exits 0 on SIGTERM; its counters show authentications, auth
# failures, malformed frames, mid-frame closes, drops at the flooded client's full queue,
# server-full refusals and auth timeouts; its "relay: closed" lines are rate-limited (at most
# about one a second) and no private key is in any log.
# Binaries: $MESHWG (tests use the build's tools/meshwg), meshwg-server next to it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RELAY_PORT=443
MAX_CLIENTS=300
QUEUE_KIB=64
SEED=${RELAY_SEED:-$$}

[[ -x $MESHWG_SERVER ]] || die "meshwg-server binary '$MESHWG_SERVER' not executable"
"$PY" -c 'import cryptography.hazmat.primitives.asymmetric.x25519' 2>/dev/null ||
  die "$PY lacks the cryptography module (apt-get install python3-cryptography)"

genkey srv
SRV_PUB=$(pub srv)

# --- topology and server ---------------------------------------------------------------------
ns_create NSS s
ns_create NSC c

# A Relay address that cannot be bound: tried in the server's namespace (which has no such
# address), so it could never listen on the host's even if the host had it.
bind_error() {
  local rc=0 f="$WORKDIR/bad.conf"
  printf '[Server]\nPrivateKey = %s\nRelay = 192.0.2.77:443\n' "$(cat "$(keyfile srv)")" >"$f"
  nsx "$NSS" "$MESHWG_SERVER" -f --config "$f" >"$WORKDIR/bad.out" 2>&1 || rc=$?
  echo "exit $rc: $(cat "$WORKDIR/bad.out")"
  rm -f "$f"
  ((rc == 1)) && grep -q "Relay: cannot listen on TCP 192.0.2.77:443" "$WORKDIR/bad.out"
}
check "a Relay address that cannot be bound: exit 1, message names Relay" bind_error
veth_pair "$NSS" "$NSC" || die "veth pair"

cat >"$WORKDIR/server.conf" <<EOF
# meshwg-server for $0
[Server]
PrivateKey = $(cat "$(keyfile srv)")
Relay = [::]:$RELAY_PORT
EOF
SERVER_LOG="$WORKDIR/meshwg-server.log"
ip netns exec "$NSS" env LOG_LEVEL="$LOG_LEVEL" timeout -k 5 "$DAEMON_MAX_S" "$MESHWG_SERVER" -f \
  --config "$WORKDIR/server.conf" --relay-max-clients $MAX_CLIENTS --relay-queue-kib $QUEUE_KIB \
  >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
track_pid $SERVER_PID
wait_for 100 0.1 listening "$NSS" $RELAY_PORT || die "meshwg-server did not listen on TCP $RELAY_PORT"
# The line is written just after listen(), so the socket can be seen first.
check "server logs that the relay listens" \
  wait_for 20 0.1 grep -q "relay: listening on TCP \[::\]:$RELAY_PORT" "$SERVER_LOG"

# --- the Python side -------------------------------------------------------------------------
cat >"$WORKDIR/relay.py" <<'EOF'
# Relay clients and attackers (control/relay_proto.h, implemented again from its text).
# Prints "ok <phase> [details]" per phase; exits 1 (with the reason) at the first failure.
import base64, hashlib, os, random, resource, socket, struct, sys, time
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

HOST4, HOST6, PORT, SPUB, MAX_CLIENTS, SEED = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    base64.b64decode(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
HELLO, AUTH, AUTHOK, SEND, RECV, ABSENT, PING, PONG = range(1, 9)
rnd = random.Random(SEED)

def raw(k):
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

def frame(t, body, reserved=0):
    return struct.pack(">BBH", t, reserved, len(body)) + body

def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)

class Conn:
    def __init__(self, host=HOST4, timeout=5.0, rcvbuf=0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.s = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect((host, PORT))
        self.buf = b""

    def send(self, data):
        """False when the server already closed the connection."""
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False

    def read_frame(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                t, res, n = struct.unpack(">BBH", self.buf[:4])
                if res != 0 or not 1 <= t <= 8:
                    raise ValueError("malformed frame from the server: %r" % self.buf[:4])
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return t, body
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame within %.1f s" % timeout)
            self.s.settimeout(left)
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed by the server")
            self.buf += d

    def closed_by_server(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.s.settimeout(left)
            try:
                if not self.s.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False

    def reset(self):
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.s.close()

    def close(self):
        self.s.close()

class Client(Conn):
    """Connects and reads the ServerHello (whose key must be the configured one)."""
    def __init__(self, host=HOST4, priv=None, rcvbuf=0):
        super().__init__(host, rcvbuf=rcvbuf)
        self.priv = priv or X25519PrivateKey.generate()
        self.pub = raw(self.priv)
        t, body = self.read_frame()
        if t != HELLO or len(body) != 65 or body[0] != 1:
            fail("bad server hello %d %r" % (t, body[:8]))
        if body[1:33] != SPUB:
            fail("server hello carries another key")
        self.challenge = body[33:65]

    def key(self):
        # K = BLAKE2s-256(X25519(client_private, server_public))
        return hashlib.blake2s(self.priv.exchange(X25519PublicKey.from_public_bytes(SPUB))).digest()

    def proof(self, claimed=None):
        msg = b"meshwg relay client v1" + SPUB + self.challenge + (claimed or self.pub)
        return hashlib.blake2s(msg, key=self.key()).digest()

    def authenticate(self):
        if not self.send(frame(AUTH, b"\x01" + self.pub + self.proof())):
            fail("could not send ClientAuth")
        t, body = self.read_frame()
        if t != AUTHOK:
            fail("expected AuthOk, got type %d" % t)
        want = hashlib.blake2s(b"meshwg relay server v1" + self.challenge + self.pub,
                               key=self.key()).digest()
        if body != want:
            fail("the server's proof does not verify")
        return self

    def recv_from(self, src, payload, timeout=5.0, skip_others=False, max_frames=100000):
        """Reads until the Recv of `payload` from `src` (other Recv frames skipped if allowed)."""
        for _ in range(max_frames):
            t, body = self.read_frame(timeout)
            if t == RECV and body[:32] == src and body[32:] == payload:
                return
            if not (skip_others and t in (RECV, PONG, ABSENT)):
                fail("unexpected frame type %d (%d bytes)" % (t, len(body)))
        fail("payload not seen within %d frames" % max_frames)

def exchange(a, b, tag):
    pa = os.urandom(rnd.randrange(1, 1400))
    pb = os.urandom(rnd.randrange(0, 60000))
    if not a.send(frame(SEND, b.pub + pa)):
        fail(tag + ": A could not send")
    b.recv_from(a.pub, pa)
    if not b.send(frame(SEND, a.pub + pb)):
        fail(tag + ": B could not send")
    a.recv_from(b.pub, pb)

def expect_closed(conns, tag):
    n = sum(1 for c in conns if c.closed_by_server())
    for c in conns:
        c.close()
    if n != len(conns):
        fail("%s: the server closed %d of %d connections" % (tag, n, len(conns)))
    return n

resource.setrlimit(resource.RLIMIT_NOFILE, (4096, max(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))

# --- good clients ---
a = Client(HOST4).authenticate()
b = Client(HOST6).authenticate()
exchange(a, b, "start")
nobody = os.urandom(32)
a.send(frame(SEND, nobody + b"anyone?"))
t, body = a.read_frame()
if t != ABSENT or body != nobody:
    fail("expected PeerAbsent for an unknown key, got %d" % t)
tok = os.urandom(8)
a.send(frame(PING, tok))
t, body = a.read_frame()
if t != PONG or body != tok:
    fail("ping")
print("ok good clients: A over IPv4 and B over IPv6 authenticated and forward both ways", flush=True)

# --- waves of bad input; A and B must keep working after each ---
def junk(n):
    cs = []
    for _ in range(n):
        c = Client()
        first = bytes([rnd.choice([0, 9, 0x47, 0xff, rnd.randrange(9, 256)])])
        c.send(first + os.urandom(rnd.randrange(3, 2000)))
        cs.append(c)
    return expect_closed(cs, "junk")

def before_auth(n):
    cs = []
    for i in range(n):
        c = Client()
        kind = i % 3
        if kind == 0:
            c.send(frame(PING, os.urandom(8)))
        elif kind == 1:
            c.send(frame(SEND, a.pub + b"x" * 20))
        else:
            c.send(frame(RECV, a.pub))
        cs.append(c)
    return expect_closed(cs, "frames before auth")

def oversized(n):
    cs = []
    for i in range(n):
        c = Client()
        # A lying length: no body follows; the server must not wait for it.
        c.send([b"\x04\x00\xff\xff", b"\x02\x00\x00\x42", b"\x02\x00\xff\xff"][i % 3])
        cs.append(c)
    closed = expect_closed(cs, "oversized lengths")
    # After authentication: a Ping whose length lies, a reserved byte set.
    cs = []
    for i in range(10):
        c = Client().authenticate()
        c.send([b"\x07\x00\x10\x00", frame(PING, b"12345678", 1)][i % 2])
        cs.append(c)
    return closed + expect_closed(cs, "bad frames after auth")

def wrong_auth(n):
    cs = []
    for i in range(n):
        c = Client()
        kind = i % 4
        if kind == 0:    # random proof
            c.send(frame(AUTH, b"\x01" + c.pub + os.urandom(32)))
        elif kind == 1:  # claims A's key, proof made with another private key
            c.send(frame(AUTH, b"\x01" + a.pub + c.proof(claimed=a.pub)))
        elif kind == 2:  # a low-order key (all zero)
            c.send(frame(AUTH, b"\x01" + bytes(32) + os.urandom(32)))
        else:            # replay: a proof for another connection's challenge
            other = Client()
            c.send(frame(AUTH, b"\x01" + other.pub + other.proof()))
            other.close()
        cs.append(c)
    bad_version = Client()
    bad_version.send(frame(AUTH, b"\x02" + bad_version.pub + bad_version.proof()))
    cs.append(bad_version)
    return expect_closed(cs, "wrong auth")

def truncated(n):
    for i in range(n):
        c = Client()
        if i % 2:
            c = c.authenticate()
            whole = frame(SEND, b.pub + os.urandom(3000))
        else:
            whole = frame(AUTH, b"\x01" + c.pub + c.proof())
        c.send(whole[:rnd.randrange(1, len(whole))])
        time.sleep(0.002)
        if i % 3 == 0:
            c.reset()   # RST mid-frame
        else:
            c.close()   # FIN mid-frame
    return n

def flood():
    """A client that does not read gets 12 MB in 1 KiB frames: the server must drop (its queue
    is 64 KiB), keep reading the flooder, and keep serving B."""
    victim = Client(HOST4, rcvbuf=16384).authenticate()
    f = Client().authenticate()
    blob = b"".join(frame(SEND, victim.pub + os.urandom(1024)) for _ in range(64))
    t0 = time.monotonic()
    for _ in range(192):
        if not f.send(blob):
            fail("the flooder was cut off")
    pings = b"".join(frame(PING, os.urandom(8)) for _ in range(2000))
    f.send(pings)  # and never reads the Pongs
    exchange(a, b, "during the flood")
    # The victim drains what reached it; then it is served again.
    got = 0
    try:
        while True:
            t, body = victim.read_frame(1.0)
            got += 1
    except TimeoutError:
        pass
    p = os.urandom(100)
    b.send(frame(SEND, victim.pub + p))
    # A stall of over 1 s on a loaded machine can leave flood frames queued ahead of it.
    victim.recv_from(b.pub, p, skip_others=True)
    victim.close()
    f.close()
    return "%d of %d frames reached the victim, %.1f s" % (got, 192 * 64, time.monotonic() - t0)

for name, fn, arg in [("junk", junk, 150), ("frames before auth", before_auth, 60),
                      ("oversized lengths", oversized, 60), ("wrong auth", wrong_auth, 80),
                      ("truncated frames", truncated, 100)]:
    r = fn(arg)
    exchange(a, b, "after " + name)
    print("ok %s: %s; A and B still forward" % (name, r), flush=True)

r = flood()
exchange(a, b, "after the flood")
print("ok flood: %s; A and B still forward" % r, flush=True)

# --- many unauthenticated connections: held until the server is full ---
held, refused = [], 0
t_held = time.monotonic()
for i in range(MAX_CLIENTS + 100):
    try:
        c = Conn(HOST4 if i % 2 else HOST6, timeout=2.0)
    except OSError:
        refused += 1
        continue
    held.append(c)
# At once: the first held connections reach the auth timeout (5 s) and free slots after that.
try:
    Client(HOST4).authenticate()
    if time.monotonic() - t_held < 4.5:
        fail("a new client got in while the server was full")
except (ConnectionError, ConnectionResetError, TimeoutError, OSError):
    pass
exchange(a, b, "while the server is full")
# The ones beyond the bound were closed without a hello.
full = 0
for c in held[MAX_CLIENTS:]:
    try:
        c.read_frame(2.0)
    except (ConnectionError, ConnectionResetError):
        full += 1
    except TimeoutError:
        pass
if full < 90:
    fail("only %d of the connections beyond --relay-max-clients were refused" % full)
# The held ones are closed by the server after the auth timeout (5 s).
t0 = time.monotonic()
timed_out = sum(1 for c in held[:MAX_CLIENTS - 2] if c.closed_by_server(timeout=9.0 - (time.monotonic() - t0)))
for c in held:
    c.close()
if timed_out < MAX_CLIENTS - 2 - 5:
    fail("only %d of %d unauthenticated connections were closed by the auth timeout" % (timed_out, MAX_CLIENTS - 2))
exchange(a, b, "after the unauthenticated hold")
c = Client(HOST6).authenticate()
exchange(a, c, "new client")
print("ok unauthenticated hold: %d held, %d refused as full, %d closed by the auth timeout; a new client joins" %
      (len(held), full, timed_out), flush=True)

# A's key was never taken over: a fresh connection with A's private key replaces A.
a2 = Client(HOST6, priv=a.priv).authenticate()
if not a.closed_by_server():
    fail("the old connection of A was not closed when A reconnected")
exchange(a2, b, "A reconnected")
print("ok A reconnects and replaces its old connection", flush=True)
EOF

relay_py() {
  timeout 600 ip netns exec "$NSC" "$PY" "$WORKDIR/relay.py" 10.0.0.1 fd00::1 $RELAY_PORT "$SRV_PUB" \
    $MAX_CLIENTS "$SEED" 2>&1 | tee "$WORKDIR/relay.out"
  return "${PIPESTATUS[0]}"
}
check "python clients and attackers (seed $SEED)" relay_py
phase_ok() { grep -q "^ok $1" "$WORKDIR/relay.out"; }
check "A (IPv4) and B (IPv6) authenticate with the Python proofs and forward" phase_ok "good clients"
for phase in junk "frames before auth" "oversized lengths" "wrong auth" "truncated frames" flood; do
  check "after $phase: bad connections closed, A and B still forward" phase_ok "$phase"
done
check "unauthenticated hold: server full, auth timeout, then a new client joins" phase_ok "unauthenticated hold"
check "A reconnecting replaces its old connection" phase_ok "A reconnects"
sed -n 's/^ok //p' "$WORKDIR/relay.out" | while read -r l; do note "relay: $l"; done

check "meshwg-server still running" kill -0 $SERVER_PID

# --- shutdown and what the server saw ---------------------------------------------------------
check "meshwg-server exits 0 on SIGTERM" exits_0_on_term "$SERVER_PID"

count_of() { sed -n "s/.*[ :]$1=\([0-9]*\).*/\1/p" "$SERVER_LOG" | tail -n 1; }
counters_ok() {
  local k v ok=0
  grep 'relay counters:' "$SERVER_LOG" | tail -n 1
  for k in authenticated auth_failed malformed closed_mid_frame dropped_queue_full rejected_full \
    auth_timeout frames_forwarded replaced malformed:unknown_type malformed:oversized \
    malformed:not_authenticated malformed:bad_version malformed:bad_length; do
    v=$(count_of "$k")
    if ((${v:-0} == 0)); then
      echo "counter $k is ${v:-missing}"
      ok=1
    fi
  done
  return $ok
}
check "server counters: auth failures, malformed by reason, mid-frame, queue drops, full, timeouts" counters_ok
note "$(grep 'relay counters:' "$SERVER_LOG" | tail -n 1 | sed 's/.*relay counters:/relay counters:/')"

log_limited() {
  local lines secs
  lines=$(grep -c 'relay: closed\|relay: .* went away mid-frame' "$SERVER_LOG" || true)
  secs=$(($(date +%s) - START_S + 1))
  echo "$lines rejection lines in about $secs s"
  ((lines >= 3 && lines <= secs + 3)) && grep -q 'not logged' "$SERVER_LOG"
}
START_S=$(stat -c %Y "$WORKDIR/server.conf")
check "rejections logged with address and reason, at most about one a second" log_limited
check "a rejection line names the address and the reason" \
  grep -qE 'relay: closed (\[?[0-9a-f:.]+\]?:[0-9]+).*(malformed frame|authentication failed|not authenticated within|server full)' "$SERVER_LOG"
no_key_in_log() { ! grep -qF "$(cat "$(keyfile srv)")" "$SERVER_LOG"; }
check "no private key in the server log" no_key_in_log

finish
