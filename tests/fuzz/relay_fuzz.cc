// libFuzzer target for the relay: control/relay_proto.cc's framing and body parsers, and
// control/relay_server.cc fed the same bytes over a real loopback TCP connection. The first
// byte picks a mode and a read chunk size; the rest is the byte stream.
//   even: sans-I/O. The stream goes through a RelayFrameReader (limit kRelayMaxBody, or the
//         pre-authentication kRelayHelloBody) in chunks; the frames and the first error must
//         match a deliberately naive model written here; every frame passes relay_check_header,
//         parses with its own type's parser (hello/auth only with version 1) and re-encodes
//         to exactly the bytes it was read from (encode(parse(x)) == x); every parser is also
//         run on the raw stream (no crash, sizes exact); memory stays within the bound.
//   odd:  the server. One in-process RelayServer on 127.0.0.1 with two authenticated clients
//         A and B, made once. Each input opens a connection (authenticated first when bit 1
//         is set, as a fixed fuzz key), writes the stream, and closes (half the time with a
//         reset). Then A must still reach B with an exact payload and B reach A, the fuzz
//         connection must be gone, and the connection counts must add up.
// Invariants beyond those: no crash, no UB, no leak (ASan), no fd left behind.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "control/relay_proto.h"
#include "control/relay_server.h"
#include "crypto/primitives.h"
#include "fuzz_check.h"

using namespace meshwg;
using namespace meshwg::control;

namespace {

using Bytes = std::vector<uint8_t>;
using Frames = std::vector<std::pair<uint8_t, Bytes>>;

// ---- the naive model: one pass over the whole stream ----

size_t model_fixed(uint8_t t) {  // 0: variable (Send, Recv)
  static const size_t sizes[9] = {0, 65, 65, 32, 0, 0, 32, 8, 8};
  return sizes[t];
}

struct Model {
  Frames frames;
  RelayMalformed error = RelayMalformed::kOk;
  size_t consumed = 0;
};

Model model(const uint8_t* d, size_t n, size_t max_body) {
  Model m;
  size_t pos = 0;
  while (pos + 4 <= n) {
    const uint8_t type = d[pos], reserved = d[pos + 1];
    const size_t len = size_t(d[pos + 2]) * 256 + d[pos + 3];
    if (type == 0 || type > 8) {
      m.error = RelayMalformed::kUnknownType;
      break;
    }
    if (reserved != 0) {
      m.error = RelayMalformed::kReserved;
      break;
    }
    const size_t fixed = model_fixed(type);
    if (fixed != 0 && len != fixed) {
      m.error = RelayMalformed::kBadLength;
      break;
    }
    if (fixed == 0 && len < 32) {
      m.error = RelayMalformed::kTooShort;
      break;
    }
    if (len > max_body) {
      m.error = RelayMalformed::kOversized;
      break;
    }
    if (pos + 4 + len > n) break;
    m.frames.emplace_back(type, Bytes(d + pos + 4, d + pos + 4 + len));
    pos += 4 + len;
  }
  m.consumed = pos;
  return m;
}

// encode(parse(body)) for the frame's own type; nullopt when the parser refuses.
std::optional<Bytes> reencode(RelayFrameType t, std::span<const uint8_t> body) {
  switch (t) {
    case RelayFrameType::kServerHello: {
      const auto h = parse_server_hello(body);
      if (!h) return std::nullopt;
      return relay_encode_server_hello(h->server_public, h->challenge);
    }
    case RelayFrameType::kClientAuth: {
      const auto a = parse_client_auth(body);
      if (!a) return std::nullopt;
      return relay_encode_client_auth(a->client_public, a->proof);
    }
    case RelayFrameType::kAuthOk: {
      const auto p = parse_auth_ok(body);
      if (!p) return std::nullopt;
      return relay_encode_auth_ok(*p);
    }
    case RelayFrameType::kSend: {
      const auto s = parse_send(body);
      if (!s) return std::nullopt;
      return relay_encode_send(s->dst, s->payload);
    }
    case RelayFrameType::kRecv: {
      const auto r = parse_recv(body);
      if (!r) return std::nullopt;
      return relay_encode_recv(r->src, r->payload);
    }
    case RelayFrameType::kPeerAbsent: {
      const auto k = parse_peer_absent(body);
      if (!k) return std::nullopt;
      return relay_encode_peer_absent(*k);
    }
    case RelayFrameType::kPing:
    case RelayFrameType::kPong: {
      const auto p = parse_ping(body);
      if (!p) return std::nullopt;
      return t == RelayFrameType::kPing ? relay_encode_ping(*p) : relay_encode_pong(*p);
    }
  }
  return std::nullopt;
}

void check_frame(uint8_t type, const Bytes& body, size_t max_body) {
  CHECK(body.size() <= max_body);
  CHECK(relay_check_header(type, 0, body.size()) == RelayMalformed::kOk);
  const auto t = RelayFrameType(type);
  Bytes whole = {type, 0, uint8_t(body.size() >> 8), uint8_t(body.size())};
  whole.insert(whole.end(), body.begin(), body.end());
  CHECK(relay_encode(t, body) == whole);
  const auto again = reencode(t, body);
  const bool versioned = t == RelayFrameType::kServerHello || t == RelayFrameType::kClientAuth;
  // Only the version can make a well-framed body unparseable.
  CHECK(again.has_value() == (!versioned || body[0] == kRelayVersion));
  if (again) CHECK(*again == whole);
}

// Every parser on arbitrary bytes: accepts exactly the sizes its type allows.
void check_parsers(std::span<const uint8_t> d) {
  const size_t n = d.size();
  CHECK(parse_server_hello(d).has_value() == (n == 65 && d[0] == 1));
  CHECK(parse_client_auth(d).has_value() == (n == 65 && d[0] == 1));
  CHECK(parse_auth_ok(d).has_value() == (n == 32));
  CHECK(parse_send(d).has_value() == (n >= 32 && n <= kRelayMaxBody));
  CHECK(parse_recv(d).has_value() == (n >= 32 && n <= kRelayMaxBody));
  CHECK(parse_peer_absent(d).has_value() == (n == 32));
  CHECK(parse_ping(d).has_value() == (n == 8));
  if (const auto s = parse_send(d)) {
    CHECK(s->payload.size() == n - 32);
    CHECK(std::equal(s->dst.begin(), s->dst.end(), d.begin()));
  }
}

void run_reader(const uint8_t* d, size_t n, size_t chunk, size_t max_body) {
  const Model m = model(d, n, max_body);
  RelayFrameReader r(max_body);
  Frames got;
  size_t off = 0;
  RelayFrameReader::Result last = RelayFrameReader::Result::kNeedMore;
  // Bounded: each round takes bytes or (at the end) stops.
  for (size_t round = 0; round <= n + 1; ++round) {
    const size_t took = r.feed({d + off, std::min(chunk, n - off)});
    off += took;
    CHECK(r.memory() <= RelayFrameReader::kCapacity);
    for (;;) {
      RelayFrame f;
      last = r.next(f);
      if (last != RelayFrameReader::Result::kFrame) break;
      got.emplace_back(uint8_t(f.type), Bytes(f.body.begin(), f.body.end()));
    }
    if (last == RelayFrameReader::Result::kMalformed || off == n) break;
    CHECK(took > 0);  // drained after every feed, the reader always has room
  }
  CHECK(got == m.frames);
  if (m.error != RelayMalformed::kOk) {
    CHECK(last == RelayFrameReader::Result::kMalformed);
    CHECK(r.error() == m.error);
    CHECK(r.feed({d, n}) == 0);  // sticky
  } else {
    CHECK(last == RelayFrameReader::Result::kNeedMore);
    CHECK(r.error() == RelayMalformed::kOk);
    CHECK(off == n);
    CHECK(r.buffered() == n - m.consumed);
  }
  for (const auto& [type, body] : got) check_frame(type, body, max_body);
  r.trim();
}

// ---- the server over loopback ----

struct Peer {
  crypto::Key priv;
  crypto::PublicKey pub{};
  int fd = -1;
  RelayFrameReader reader;
};

struct World {
  std::unique_ptr<RelayServer> server;
  crypto::PublicKey server_pub{};
  Peer a, b, fuzz;  // fuzz: the key the fuzz connection authenticates with (fd per input)
  uint64_t inputs = 0;

  static void make_key(Peer& p, uint8_t seed) {
    for (size_t i = 0; i < 32; ++i) p.priv.b[i] = uint8_t(seed + i * 7);
    CHECK(crypto::x25519_public(p.pub, p.priv.span()));
  }

  void pump() {
    // Loopback delivers within the send() call: what the clients wrote is readable now.
    for (int i = 0; i < 64; ++i)
      if (server->on_readable(std::chrono::steady_clock::now()) == 0) break;
  }

  int connect_nb() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    const auto& to = server->local();
    const int rc = ::connect(fd, &to.addr.sa, to.socklen());
    CHECK(rc == 0 || errno == EINPROGRESS);
    pump();
    return fd;
  }

  // Reads what is there (non-blocking) and returns the frames.
  std::vector<std::pair<RelayFrameType, Bytes>> drain(Peer& p) {
    std::vector<std::pair<RelayFrameType, Bytes>> out;
    uint8_t buf[kRelayReadChunk];
    for (int i = 0; i < 1024; ++i) {
      const ssize_t n = ::recv(p.fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n <= 0) break;
      CHECK(p.reader.feed({buf, size_t(n)}) == size_t(n));
      RelayFrame f;
      RelayFrameReader::Result r;
      while ((r = p.reader.next(f)) == RelayFrameReader::Result::kFrame)
        out.emplace_back(f.type, Bytes(f.body.begin(), f.body.end()));
      CHECK(r == RelayFrameReader::Result::kNeedMore);  // the server only sends good frames
    }
    return out;
  }

  // Connects p (fd kept) and authenticates it; false if the server did not accept.
  bool authenticate(Peer& p, int fd) {
    p.fd = fd;
    p.reader = RelayFrameReader{};
    auto fs = drain(p);
    if (fs.size() != 1 || fs[0].first != RelayFrameType::kServerHello) return false;
    const auto h = parse_server_hello(fs[0].second);
    CHECK(h && h->server_public == server_pub);
    RelayProof proof{};
    CHECK(relay_client_proof(p.priv, server_pub, h->challenge, p.pub, proof));
    const Bytes auth = relay_encode_client_auth(p.pub, proof);
    CHECK(::send(fd, auth.data(), auth.size(), MSG_NOSIGNAL) == ssize_t(auth.size()));
    pump();
    fs = drain(p);
    if (fs.size() != 1 || fs[0].first != RelayFrameType::kAuthOk) return false;
    const auto ok = parse_auth_ok(fs[0].second);
    return ok && relay_verify_server(p.priv, server_pub, h->challenge, p.pub, *ok);
  }

  World() {
    CHECK(crypto::init());
    crypto::Key k;
    for (size_t i = 0; i < 32; ++i) k.b[i] = uint8_t(200 - i);
    RelayServerOptions opt;
    opt.max_clients = 8;
    server = std::make_unique<RelayServer>(k.span(), opt);
    std::string err;
    CHECK(server->open(*dataplane::Endpoint::parse("127.0.0.1:0"), err));
    server_pub = server->public_key();
    make_key(a, 1);
    make_key(b, 2);
    make_key(fuzz, 3);
    CHECK(authenticate(a, connect_nb()));
    CHECK(authenticate(b, connect_nb()));
  }

  // x reaches y with an exact payload (after whatever the fuzz connection sent them).
  void check_forward(Peer& x, Peer& y) {
    (void)drain(y);
    Bytes payload(40);
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = uint8_t(inputs + i);
    const Bytes f = relay_encode_send(y.pub, payload);
    CHECK(::send(x.fd, f.data(), f.size(), MSG_NOSIGNAL) == ssize_t(f.size()));
    pump();
    const auto fs = drain(y);
    CHECK(fs.size() == 1 && fs[0].first == RelayFrameType::kRecv);
    const auto r = parse_recv(fs[0].second);
    CHECK(r && r->src == x.pub);
    CHECK(Bytes(r->payload.begin(), r->payload.end()) == payload);
  }

  void one(const uint8_t* d, size_t n, bool auth_first, bool reset) {
    ++inputs;
    const int fd = connect_nb();
    if (auth_first) CHECK(authenticate(fuzz, fd));
    // Write what the socket takes; the server reads as we go.
    size_t off = 0;
    for (int i = 0; i < 256 && off < n; ++i) {
      const ssize_t w = ::send(fd, d + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) off += size_t(w);
      pump();
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;  // the server closed it
    }
    if (reset) {
      const linger l{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    ::close(fd);
    pump();
    CHECK(server->clients() == 2);
    CHECK(server->authenticated() == 2);
    check_forward(a, b);
    check_forward(b, a);
    // Every connection accepted is either still open (A, B) or was closed for one reason.
    uint64_t closed = 0;
    for (auto c : {RelayServerCounter::kRejectedFull, RelayServerCounter::kPendingEvicted,
                   RelayServerCounter::kAuthFailed, RelayServerCounter::kAuthTimeout,
                   RelayServerCounter::kIdleTimeout, RelayServerCounter::kReplaced,
                   RelayServerCounter::kMalformed, RelayServerCounter::kClosedByClient,
                   RelayServerCounter::kClosedMidFrame, RelayServerCounter::kClosedError})
      closed += server->count(c);
    CHECK(server->count(RelayServerCounter::kAccepted) == closed + 2);
    uint64_t by_reason = 0;
    for (size_t i = 0; i < size_t(RelayMalformed::kCount); ++i)
      by_reason += server->malformed(RelayMalformed(i));
    CHECK(by_reason == server->count(RelayServerCounter::kMalformed));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const uint8_t* d = data + 1;
  const size_t n = size - 1;
  if ((mode & 1) == 0) {
    // Chunk sizes from 1 byte to a full read chunk, so splits land everywhere.
    static const size_t chunks[8] = {1, 2, 3, 5, 64, 1000, kRelayReadChunk, 7};
    const size_t chunk = chunks[(mode >> 1) & 7];
    run_reader(d, n, chunk, kRelayMaxBody);
    run_reader(d, n, chunk, kRelayHelloBody);
    run_reader(d, n, n == 0 ? 1 : n, kRelayMaxBody);
    check_parsers({d, n});
    return 0;
  }
  static World* world = new World();  // lives for the process, like the fuzzer
  world->one(d, n, (mode & 2) != 0, (mode & 4) != 0);
  return 0;
}
