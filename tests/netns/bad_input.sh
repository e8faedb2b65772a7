#!/usr/bin/env bash
# Hostile input against a running meshwg: junk UDP on its WireGuard port and junk on its UAPI
# socket must neither crash it nor break the tunnel; a rejected `set` must change nothing.
#
#   ns1 (mwg-PID-a)                                   ns2 (mwg-PID-b)
#   ┌────────────────────────────┐                    ┌────────────────────────────┐
#   │ $IMPL (default meshwg)     │                    │ $PEER_IMPL (wireguard-go)  │
#   │ wgPIDx0 192.168.241.1/24   │  WireGuard / UDP   │ wgPIDx1 192.168.241.2/24   │
#   │ veth0 10.0.0.1 :51821     ─┼────────────────────┼─ veth0 10.0.0.2 :51822     │
#   │       fd00::1              │ ◄── junk UDP ───── │  python3 (v4 and v6)       │
#   │ UAPI socket ◄── junk from python3 (AF_UNIX, host side)                       │
#   └────────────────────────────┘                    └────────────────────────────┘
#
# Junk UDP (BAD_INPUT_COUNT datagrams per kind, default 2000, seeded by BAD_INPUT_SEED):
# random lengths; type 1 (148 B) with random and with *valid* mac1 (so it reaches the DH),
# also with an all-zero (low-order) ephemeral; type 2 (92 B) with valid mac1; type 3 (64 B);
# type 4 (32 B keepalive size, and random sizes) with random receiver index and counter;
# every type at lengths one off; non-zero reserved bytes. Then UAPI junk: malformed lines,
# unknown keys, out-of-range values, binary, a 1 MB line, idle connections.
# Checks: the daemon still runs and answers `wg show`, the tunnel pings both ways, and
# "set=1\nlisten_port=99999\n\n" gets a non-zero errno with `wg showconf` unchanged.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMPL=${IMPL:-meshwg}
PEER_IMPL=${PEER_IMPL:-wireguard-go}
BAD_INPUT_COUNT=${BAD_INPUT_COUNT:-2000}
BAD_INPUT_SEED=${BAD_INPUT_SEED:-$$}
LP1=51821
LP2=51822

ns_create NS1 a
ns_create NS2 b
veth_pair "$NS1" "$NS2" || die "veth setup"
ifname_new IF1
ifname_new IF2
genkey k1
genkey k2
P1=$(pub k1)
P2=$(pub k2)

start_daemon "$IMPL" "$NS1" "$IF1" PID1 || die "start $IMPL"
start_daemon "$PEER_IMPL" "$NS2" "$IF2" PID2 || die "start $PEER_IMPL"
wgx "$NS1" set "$IF1" listen-port $LP1 private-key "$(keyfile k1)" \
  peer "$P2" allowed-ips 192.168.241.2/32 endpoint 10.0.0.2:$LP2 || die "configure $IMPL"
wgx "$NS2" set "$IF2" listen-port $LP2 private-key "$(keyfile k2)" \
  peer "$P1" allowed-ips 192.168.241.1/32 endpoint 10.0.0.1:$LP1 || die "configure $PEER_IMPL"
tunnel_addr "$NS1" "$IF1" 192.168.241.1/24 fd00:241::1/64 || die "addresses"
tunnel_addr "$NS2" "$IF2" 192.168.241.2/24 fd00:241::2/64 || die "addresses"
check "tunnel pings before the junk" ping_first "$NS1" 192.168.241.2
wgx "$NS1" showconf "$IF1" >"$WORKDIR/before.conf" || die "showconf"

# --- junk UDP ---------------------------------------------------------------------------
cat >"$WORKDIR/udp_junk.py" <<'EOF'
# Sends malformed and crafted WireGuard messages; prints how many were sent.
import base64, hashlib, os, random, socket, struct, sys
host, port, pub_b64, count, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
pub = base64.b64decode(pub_b64)
mac1_key = hashlib.blake2s(b"mac1----" + pub).digest()

def mac1(body):  # body = message up to (excluding) mac1
    return hashlib.blake2s(body, digest_size=16, key=mac1_key).digest()

def rb(n):
    return bytes(rnd.getrandbits(8) for _ in range(n))

def header(t, reserved=b"\0\0\0"):
    return bytes([t]) + reserved

def init_msg(valid_mac1, eph=None):
    body = header(1) + rb(4) + (eph if eph is not None else rb(32)) + rb(48) + rb(28)
    m = mac1(body) if valid_mac1 else rb(16)
    return body + m + bytes(16)

def resp_msg():
    body = header(2) + rb(4) + rb(4) + rb(32) + rb(16)
    return body + mac1(body) + bytes(16)

kinds = [
    lambda: rb(rnd.randrange(0, 1501)),
    lambda: init_msg(False),
    lambda: init_msg(True),
    lambda: init_msg(True, eph=bytes(32)),
    lambda: resp_msg(),
    lambda: header(3) + rb(60),
    lambda: header(4) + rb(28),
    lambda: header(4) + rb(rnd.randrange(0, 1500)),
    lambda: header(rnd.choice([1, 2, 3, 4])) + rb(rnd.choice([143, 144, 87, 88, 59, 60, 27, 11])),
    lambda: header(rnd.choice([1, 2, 3, 4]), reserved=rb(3)) + rb(rnd.choice([144, 88, 60, 28])),
    lambda: bytes([rnd.choice([0, 5, 255])]) + rb(rnd.randrange(0, 200)),
]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
socks = [socket.socket(fam, socket.SOCK_DGRAM) for _ in range(4)]
sent = 0
for k in kinds:
    for i in range(count):
        try:
            socks[i % len(socks)].sendto(k(), (host, port))
            sent += 1
        except OSError:
            pass  # ECONNREFUSED from an earlier ICMP error, ENOBUFS: keep going
print(f"sent {sent} datagrams to {host}:{port} (seed {seed})")
EOF
udp_junk() {  # ADDR: prints "sent N datagrams ..." (kept as a note)
  local out
  out=$(timeout 300 ip netns exec "$NS2" "$PY" "$WORKDIR/udp_junk.py" "$1" $LP1 "$P1" \
    "$BAD_INPUT_COUNT" "$BAD_INPUT_SEED") || return 1
  echo "$out"
  note "$out"
}
check "junk UDP to 10.0.0.1:$LP1 ($BAD_INPUT_COUNT per kind, seed $BAD_INPUT_SEED)" udp_junk 10.0.0.1
check "junk UDP to [fd00::1]:$LP1" udp_junk fd00::1
check "$IMPL still running after junk UDP" kill -0 "$PID1"
# The junk may have put the daemon under load (cookie replies); give it a few seconds.
check "tunnel pings ns1->ns2 after junk UDP" ping_first "$NS1" 192.168.241.2
check "tunnel pings ns2->ns1 after junk UDP" ping_first "$NS2" 192.168.241.1

# --- junk on the UAPI socket -------------------------------------------------------------
cat >"$WORKDIR/uapi_junk.py" <<'EOF'
# Sends malformed requests to a UAPI socket, one connection each, and reports the answers.
import os, random, socket, sys, time
path, mode = sys.argv[1], sys.argv[2]
rnd = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
hexkey = os.urandom(32).hex()

def talk(req, wait=2.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(wait)
    s.connect(path)
    out = b""
    try:
        if req:
            s.sendall(req)
        s.shutdown(socket.SHUT_WR)
        while len(out) < 1 << 20:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError as e:  # EPIPE/ECONNRESET when the server gives up on us: fine
        out += f"<{e.__class__.__name__}>".encode()
    finally:
        s.close()
    return out

if mode == "bad-set":
    r = talk(b"set=1\nlisten_port=99999\n\n")
    print("answer:", r)
    line = r.split(b"\n")[0]
    sys.exit(0 if line.startswith(b"errno=") and line != b"errno=0" else 1)

if mode == "idle":
    # Connections that never send: the server must time them out rather than hang for ever.
    held = []
    for _ in range(8):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        held.append(s)
    time.sleep(1)
    for s in held:
        s.close()
    sys.exit(0)

cases = [
    b"", b"\n", b"\n\n", b"get=1\n", b"get=2\n\n", b"get=1\x00\n\n", b"GET=1\n\n", b"set=1\n",
    b"set=1\nfoo=bar\n\n", b"set=1\n=\n\n", b"set=1\nprivate_key\n\n", b"set=1\n==\n\n",
    b"set=1\nprivate_key=" + b"zz" * 32 + b"\n\n",
    b"set=1\nprivate_key=" + b"a" * 63 + b"\n\n",
    b"set=1\nprivate_key=" + b"a" * 66 + b"\n\n",
    b"set=1\nlisten_port=-1\n\n", b"set=1\nlisten_port=65536\n\n", b"set=1\nlisten_port=0x10\n\n",
    b"set=1\nfwmark=4294967296\n\n", b"set=1\nfwmark=-1\n\n",
    b"set=1\nallowed_ip=10.0.0.0/8\n\n", b"set=1\nendpoint=1.2.3.4:5\n\n",
    b"set=1\nreplace_peers=maybe\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\nallowed_ip=10.0.0.0/33\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\nallowed_ip=::/129\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\nallowed_ip=300.1.1.1/32\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\nendpoint=[::1\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\nendpoint=1.2.3.4:99999\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\npersistent_keepalive_interval=70000\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\nprotocol_version=2\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\nremove=maybe\n\n",
    b"set=1\npublic_key=" + hexkey.encode() + b"\npreshared_key=xyz\n\n",
    b"set=1\n" + b"x" * 100000 + b"=1\n\n",
    b"set=1\nprivate_key=" + b"0" * 100000 + b"\n\n",
    b"A" * (1 << 20),
    os.urandom(4096),
]
cases += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 512))) for _ in range(50)]
cases += [b"set=1\n" + bytes(rnd.choice(b"=\n_abcdefglnprstuvwxyz0123456789:./[]") for _ in range(rnd.randrange(1, 300))) + b"\n\n" for _ in range(100)]
for i, c in enumerate(cases):
    r = talk(c)
    print(i, repr(c[:40]), "->", repr(r[:60]))
EOF
SOCK="$WG_RUN_DIR/$IF1.sock"
check "junk requests on the UAPI socket" timeout 120 "$PY" "$WORKDIR/uapi_junk.py" "$SOCK" junk "$BAD_INPUT_SEED"
check "idle UAPI connections" timeout 60 "$PY" "$WORKDIR/uapi_junk.py" "$SOCK" idle
check "$IMPL still running after UAPI junk" kill -0 "$PID1"
check "wg show answers after UAPI junk" wait_for 20 0.5 ip netns exec "$NS1" wg show "$IF1"
wgx "$NS1" showconf "$IF1" >"$WORKDIR/after-junk.conf" || true
# The daemon applies a set atomically or not at all, so all-invalid junk changes nothing.
# wireguard-go applies lines as it parses them (a peer can appear before a later bad line).
ATOMIC_SET=${ATOMIC_SET:-$([[ $IMPL == meshwg ]] && echo 1 || echo 0)}
if [[ $ATOMIC_SET == 1 ]]; then
  check "config unchanged by UAPI junk" diff "$WORKDIR/before.conf" "$WORKDIR/after-junk.conf"
fi
check "tunnel pings ns1->ns2 after UAPI junk" ping_first "$NS1" 192.168.241.2
check "tunnel pings ns2->ns1 after UAPI junk" ping_first "$NS2" 192.168.241.1

# --- a rejected set --------------------------------------------------------------------
wgx "$NS1" showconf "$IF1" >"$WORKDIR/before-bad-set.conf" || true
check "set listen_port=99999 answers a non-zero errno" timeout 20 "$PY" "$WORKDIR/uapi_junk.py" "$SOCK" bad-set
wgx "$NS1" showconf "$IF1" >"$WORKDIR/after-bad-set.conf" || true
check "wg showconf unchanged by the rejected set" diff "$WORKDIR/before-bad-set.conf" "$WORKDIR/after-bad-set.conf"
check "$IMPL still running at the end" kill -0 "$PID1"
check "tunnel pings at the end" ping_ok "$NS1" 192.168.241.2 3

finish
