// Tests for control/relay_proto.cc: every frame's bytes written out by hand, encode → read →
// parse round trips, one case per RelayMalformed reason the reader finds (caught on the
// header, before the body), the reader's bounds and sticky errors, a stream split at every
// byte boundary and fed byte by byte, and the proofs: a known-answer vector computed with
// Python's hashlib and cryptography (an independent implementation), both sides agreeing,
// and a wrong key, challenge, server, proof bit or a low-order key failing.
#include "control/relay_proto.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "crypto/primitives.h"
#include "tests/control/test_keys.h"
#include "tests/vectors.h"

namespace meshwg::control {
namespace {

using Bytes = std::vector<uint8_t>;
using testing::hex_array32;

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
Bytes bytes_of(std::span<const uint8_t> s) { return Bytes(s.begin(), s.end()); }
Bytes filled(size_t n, uint8_t v) { return Bytes(n, v); }
crypto::PublicKey key_of(uint8_t v) {
  crypto::PublicKey k;
  k.fill(v);
  return k;
}

// All frames in `stream`, read by a fresh reader fed in the given chunk sizes (cycled) and
// drained after every feed. A chunk larger than the reader takes is fed over several rounds.
struct ReadResult {
  std::vector<std::pair<RelayFrameType, Bytes>> frames;
  RelayFrameReader::Result last = RelayFrameReader::Result::kNeedMore;
  RelayMalformed error = RelayMalformed::kOk;
};
ReadResult read_all(const Bytes& stream, const std::vector<size_t>& chunks,
                    size_t max_body = kRelayMaxBody) {
  RelayFrameReader r(max_body);
  ReadResult out;
  size_t off = 0;
  for (size_t i = 0; off < stream.size(); ++i) {
    const size_t n = std::min(chunks[i % chunks.size()], stream.size() - off);
    const size_t took = r.feed({stream.data() + off, n});
    off += took;
    size_t got = 0;
    for (;; ++got) {
      RelayFrame f;
      out.last = r.next(f);
      if (out.last != RelayFrameReader::Result::kFrame) break;
      out.frames.emplace_back(f.type, bytes_of(f.body));
    }
    if (out.last == RelayFrameReader::Result::kMalformed) break;
    if (took == 0 && got == 0) {
      ADD_FAILURE() << "reader stuck at offset " << off;
      break;
    }
  }
  out.error = r.error();
  return out;
}

// ---- encoding: bytes by hand ----

TEST(RelayProto, EncodersWriteTheDocumentedBytes) {
  const auto a = key_of(0xaa), b = key_of(0xbb);
  RelayChallenge ch;
  ch.fill(0xcc);
  RelayProof pr;
  pr.fill(0xdd);
  EXPECT_EQ(relay_encode_server_hello(a, ch),
            cat({{0x01, 0x00, 0x00, 65, 0x01}, filled(32, 0xaa), filled(32, 0xcc)}));
  EXPECT_EQ(relay_encode_client_auth(b, pr),
            cat({{0x02, 0x00, 0x00, 65, 0x01}, filled(32, 0xbb), filled(32, 0xdd)}));
  EXPECT_EQ(relay_encode_auth_ok(pr), cat({{0x03, 0x00, 0x00, 32}, filled(32, 0xdd)}));
  EXPECT_EQ(relay_encode_send(a, Bytes{1, 2, 3}), cat({{0x04, 0x00, 0x00, 35}, filled(32, 0xaa), {1, 2, 3}}));
  EXPECT_EQ(relay_encode_recv(b, Bytes{}), cat({{0x05, 0x00, 0x00, 32}, filled(32, 0xbb)}));
  EXPECT_EQ(relay_encode_peer_absent(a), cat({{0x06, 0x00, 0x00, 32}, filled(32, 0xaa)}));
  const RelayPingToken t = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(relay_encode_ping(t), (Bytes{0x07, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(relay_encode_pong(t), (Bytes{0x08, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}));
  // The length is big-endian.
  const Bytes big(300, 0x11);
  const Bytes f = relay_encode_send(a, big);
  ASSERT_EQ(f.size(), 4u + 32 + 300);
  EXPECT_EQ(f[2], (332 >> 8));
  EXPECT_EQ(f[3], (332 & 0xff));
  EXPECT_EQ(relay_header(RelayFrameType::kRecv, 65535),
            (std::array<uint8_t, 4>{0x05, 0, 0xff, 0xff}));
}

TEST(RelayProto, EncodeRefusesWhatTheReaderWouldRefuse) {
  const auto a = key_of(1);
  EXPECT_TRUE(relay_encode(RelayFrameType::kSend, Bytes(kRelayMaxBody + 1, 0)).empty());
  EXPECT_TRUE(relay_encode(RelayFrameType::kSend, Bytes(31, 0)).empty());
  EXPECT_TRUE(relay_encode(RelayFrameType::kPing, Bytes(7, 0)).empty());
  EXPECT_TRUE(relay_encode(RelayFrameType::kPong, Bytes(9, 0)).empty());
  EXPECT_TRUE(relay_encode(RelayFrameType::kAuthOk, Bytes(31, 0)).empty());
  EXPECT_TRUE(relay_encode(RelayFrameType::kServerHello, Bytes(64, 0)).empty());
  EXPECT_TRUE(relay_encode(RelayFrameType::kPeerAbsent, Bytes(33, 0)).empty());
  EXPECT_TRUE(relay_encode(RelayFrameType(0), Bytes(8, 0)).empty());
  EXPECT_TRUE(relay_encode(RelayFrameType(9), Bytes(8, 0)).empty());
  EXPECT_TRUE(relay_encode_send(a, Bytes(kRelayMaxPayload + 1, 0)).empty());
  EXPECT_TRUE(relay_encode_recv(a, Bytes(kRelayMaxPayload + 1, 0)).empty());
  EXPECT_EQ(relay_encode_send(a, Bytes(kRelayMaxPayload, 0)).size(), kRelayMaxFrame);
  EXPECT_EQ(relay_encode(RelayFrameType::kPing, Bytes(8, 0)).size(), 12u);
}

// ---- round trips ----

TEST(RelayProto, RoundTripsEveryType) {
  const auto a = key_of(0x5a), b = key_of(0xa5);
  RelayChallenge ch;
  for (size_t i = 0; i < ch.size(); ++i) ch[i] = uint8_t(i * 7);
  RelayProof pr;
  for (size_t i = 0; i < pr.size(); ++i) pr[i] = uint8_t(255 - i);
  const RelayPingToken tok = {9, 8, 7, 6, 5, 4, 3, 2};
  Bytes payload(kRelayMaxPayload);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = uint8_t(i * 31 + 7);
  const Bytes stream = cat({relay_encode_server_hello(a, ch), relay_encode_client_auth(b, pr),
                            relay_encode_auth_ok(pr), relay_encode_send(b, payload),
                            relay_encode_send(b, Bytes{}), relay_encode_recv(a, Bytes{42}),
                            relay_encode_peer_absent(b), relay_encode_ping(tok),
                            relay_encode_pong(tok)});
  const ReadResult r = read_all(stream, {kRelayReadChunk});
  EXPECT_EQ(r.last, RelayFrameReader::Result::kNeedMore);
  ASSERT_EQ(r.frames.size(), 9u);

  const auto hello = parse_server_hello(r.frames[0].second);
  ASSERT_TRUE(hello);
  EXPECT_EQ(r.frames[0].first, RelayFrameType::kServerHello);
  EXPECT_EQ(hello->server_public, a);
  EXPECT_EQ(hello->challenge, ch);
  const auto auth = parse_client_auth(r.frames[1].second);
  ASSERT_TRUE(auth);
  EXPECT_EQ(auth->client_public, b);
  EXPECT_EQ(auth->proof, pr);
  EXPECT_EQ(parse_auth_ok(r.frames[2].second), pr);
  const auto send = parse_send(r.frames[3].second);
  ASSERT_TRUE(send);
  EXPECT_EQ(send->dst, b);
  EXPECT_EQ(bytes_of(send->payload), payload);
  const auto empty = parse_send(r.frames[4].second);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->payload.empty());
  const auto recv = parse_recv(r.frames[5].second);
  ASSERT_TRUE(recv);
  EXPECT_EQ(recv->src, a);
  EXPECT_EQ(bytes_of(recv->payload), Bytes{42});
  EXPECT_EQ(parse_peer_absent(r.frames[6].second), b);
  EXPECT_EQ(r.frames[7].first, RelayFrameType::kPing);
  EXPECT_EQ(parse_ping(r.frames[7].second), tok);
  EXPECT_EQ(r.frames[8].first, RelayFrameType::kPong);
  EXPECT_EQ(parse_ping(r.frames[8].second), tok);
}

TEST(RelayProto, ParsersRefuseWrongSizesAndVersions) {
  EXPECT_FALSE(parse_server_hello(Bytes(64, 1)));
  EXPECT_FALSE(parse_server_hello(Bytes(66, 1)));
  Bytes hello(65, 0);
  hello[0] = 2;
  EXPECT_FALSE(parse_server_hello(hello));
  EXPECT_FALSE(parse_client_auth(hello));
  hello[0] = 0;
  EXPECT_FALSE(parse_client_auth(hello));
  hello[0] = 1;
  EXPECT_TRUE(parse_server_hello(hello));
  EXPECT_TRUE(parse_client_auth(hello));
  EXPECT_FALSE(parse_auth_ok(Bytes(31, 0)));
  EXPECT_FALSE(parse_auth_ok(Bytes(33, 0)));
  EXPECT_FALSE(parse_send(Bytes(31, 0)));
  EXPECT_FALSE(parse_recv(Bytes{}));
  EXPECT_FALSE(parse_send(Bytes(kRelayMaxBody + 1, 0)));
  EXPECT_TRUE(parse_send(Bytes(32, 0)));
  EXPECT_FALSE(parse_peer_absent(Bytes(31, 0)));
  EXPECT_FALSE(parse_peer_absent(Bytes(64, 0)));
  EXPECT_FALSE(parse_ping(Bytes(7, 0)));
  EXPECT_FALSE(parse_ping(Bytes(16, 0)));
}

// ---- malformed: each reason, found on the header alone ----

struct BadHeader {
  Bytes header;
  RelayMalformed want;
  size_t max_body = kRelayMaxBody;
};

TEST(RelayProto, ReaderRefusesMalformedHeadersBeforeTheBody) {
  std::vector<BadHeader> cases = {
      {{0x00, 0, 0, 8}, RelayMalformed::kUnknownType},
      {{0x09, 0, 0, 8}, RelayMalformed::kUnknownType},
      {{0xff, 0, 0, 0}, RelayMalformed::kUnknownType},
      {{0x07, 1, 0, 8}, RelayMalformed::kReserved},
      {{0x04, 0x80, 0, 40}, RelayMalformed::kReserved},
      {{0x04, 0, 0, 31}, RelayMalformed::kTooShort},
      {{0x05, 0, 0, 0}, RelayMalformed::kTooShort},
      // Before authentication the server reads with the ClientAuth size as the limit.
      {{0x04, 0, 0xff, 0xff}, RelayMalformed::kOversized, kRelayHelloBody},
      {{0x04, 0, 0, 66}, RelayMalformed::kOversized, kRelayHelloBody},
  };
  // Every fixed-size type with one byte less, one more, nothing, and the largest length.
  const std::vector<std::pair<uint8_t, size_t>> fixed = {
      {0x01, 65}, {0x02, 65}, {0x03, 32}, {0x06, 32}, {0x07, 8}, {0x08, 8}};
  for (const auto& [type, size] : fixed)
    for (const size_t len : {size - 1, size + 1, size_t{0}, size_t{65535}})
      cases.push_back({{type, 0, uint8_t(len >> 8), uint8_t(len)}, RelayMalformed::kBadLength});
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::PrintToString(c.header));
    RelayFrameReader r(c.max_body);
    ASSERT_EQ(r.feed(c.header), 4u);
    RelayFrame f;
    EXPECT_EQ(r.next(f), RelayFrameReader::Result::kMalformed);
    EXPECT_EQ(r.error(), c.want);
    // Sticky: nothing more is taken or produced.
    EXPECT_EQ(r.feed(Bytes(100, 0)), 0u);
    EXPECT_EQ(r.next(f), RelayFrameReader::Result::kMalformed);
    EXPECT_EQ(r.error(), c.want);
    EXPECT_EQ(relay_check_header(c.header[0], c.header[1], size_t(c.header[2]) << 8 | c.header[3]),
              c.max_body == kRelayMaxBody ? c.want : RelayMalformed::kOk);
  }
}

TEST(RelayProto, GoodFramesBeforeABadOneAreDelivered) {
  const RelayPingToken t{};
  const Bytes stream = cat({relay_encode_ping(t), relay_encode_pong(t), {0x07, 0, 0, 9}});
  const ReadResult r = read_all(stream, {1000});
  EXPECT_EQ(r.frames.size(), 2u);
  EXPECT_EQ(r.last, RelayFrameReader::Result::kMalformed);
  EXPECT_EQ(r.error, RelayMalformed::kBadLength);
}

TEST(RelayProto, LimitAppliesToFramesNotYetStarted) {
  RelayFrameReader r(kRelayHelloBody);
  const Bytes auth = relay_encode_client_auth(key_of(1), RelayProof{});
  const Bytes send = relay_encode_send(key_of(2), Bytes(100, 3));
  ASSERT_EQ(r.feed(auth), auth.size());
  RelayFrame f;
  ASSERT_EQ(r.next(f), RelayFrameReader::Result::kFrame);
  r.set_max_body(kRelayMaxBody);
  ASSERT_EQ(r.feed(send), send.size());
  ASSERT_EQ(r.next(f), RelayFrameReader::Result::kFrame);
  EXPECT_EQ(f.type, RelayFrameType::kSend);
  EXPECT_EQ(f.body.size(), 132u);
}

// ---- framing: splits, bounds, span lifetime ----

TEST(RelayProto, FrameSplitAtEveryByteBoundaryReassembles) {
  RelayChallenge ch;
  ch.fill(3);
  const Bytes stream =
      cat({relay_encode_server_hello(key_of(1), ch), relay_encode_send(key_of(2), Bytes(200, 9)),
           relay_encode_ping({1, 2, 3, 4, 5, 6, 7, 8}), relay_encode_recv(key_of(3), Bytes{})});
  const ReadResult whole = read_all(stream, {stream.size()});
  ASSERT_EQ(whole.frames.size(), 4u);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    RelayFrameReader r;
    std::vector<std::pair<RelayFrameType, Bytes>> got;
    for (const auto& piece : {Bytes(stream.begin(), stream.begin() + ptrdiff_t(cut)),
                              Bytes(stream.begin() + ptrdiff_t(cut), stream.end())}) {
      ASSERT_EQ(r.feed(piece), piece.size());
      RelayFrame f;
      while (r.next(f) == RelayFrameReader::Result::kFrame) got.emplace_back(f.type, bytes_of(f.body));
    }
    ASSERT_EQ(got, whole.frames) << "cut at " << cut;
    EXPECT_EQ(r.buffered(), 0u);
  }
  EXPECT_EQ(read_all(stream, {1}).frames, whole.frames);
  EXPECT_EQ(read_all(stream, {3, 1, 7, 64, 2}).frames, whole.frames);
}

TEST(RelayProto, BufferedCountsAPartialFrame) {
  RelayFrameReader r;
  const Bytes f = relay_encode_send(key_of(1), Bytes(10, 1));
  ASSERT_EQ(r.feed({f.data(), 5}), 5u);
  RelayFrame fr;
  EXPECT_EQ(r.next(fr), RelayFrameReader::Result::kNeedMore);
  EXPECT_EQ(r.buffered(), 5u);
  ASSERT_EQ(r.feed({f.data() + 5, f.size() - 5}), f.size() - 5);
  EXPECT_EQ(r.next(fr), RelayFrameReader::Result::kFrame);
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(RelayProto, BodiesStayValidAcrossNextUntilTheNextFeed) {
  RelayFrameReader r;
  const Bytes stream = cat({relay_encode_send(key_of(1), Bytes(50, 0x11)),
                            relay_encode_send(key_of(2), Bytes(60, 0x22))});
  ASSERT_EQ(r.feed(stream), stream.size());
  RelayFrame f1, f2, f3;
  ASSERT_EQ(r.next(f1), RelayFrameReader::Result::kFrame);
  ASSERT_EQ(r.next(f2), RelayFrameReader::Result::kFrame);
  EXPECT_EQ(r.next(f3), RelayFrameReader::Result::kNeedMore);
  EXPECT_EQ(bytes_of(f1.body), cat({filled(32, 1), filled(50, 0x11)}));
  EXPECT_EQ(bytes_of(f2.body), cat({filled(32, 2), filled(60, 0x22)}));
}

TEST(RelayProto, ReaderMemoryIsBounded) {
  // Fed without draining, it takes at most its capacity and then nothing.
  RelayFrameReader r;
  const Bytes max = relay_encode_send(key_of(7), Bytes(kRelayMaxPayload, 0x77));
  size_t taken = 0;
  for (int i = 0; i < 4; ++i) taken += r.feed(max);
  EXPECT_EQ(taken, RelayFrameReader::kCapacity);
  EXPECT_LE(r.memory(), RelayFrameReader::kCapacity);
  // Drained, the rest goes in; frames stay whole.
  const Bytes stream = cat({max, max, max, max});
  size_t off = taken, frames = 0;
  RelayFrame f;
  for (int round = 0; round < 100 && (off < stream.size() || r.buffered() != 0); ++round) {
    while (r.next(f) == RelayFrameReader::Result::kFrame) {
      ++frames;
      EXPECT_EQ(bytes_of(f.body), Bytes(max.begin() + 4, max.end()));
    }
    off += r.feed({stream.data() + off, std::min(kRelayReadChunk, stream.size() - off)});
    EXPECT_LE(r.memory(), RelayFrameReader::kCapacity);
  }
  while (r.next(f) == RelayFrameReader::Result::kFrame) ++frames;
  EXPECT_EQ(frames, 4u);
  r.trim();
  EXPECT_EQ(r.memory(), 0u);
}

TEST(RelayProto, RandomChunkingMatchesWholeStream) {
  std::mt19937 rng(1234);
  Bytes stream;
  for (int i = 0; i < 200; ++i) {
    const size_t n = rng() % 3000;
    stream = cat({stream, relay_encode_send(key_of(uint8_t(i)), Bytes(n, uint8_t(i)))});
  }
  const auto whole = read_all(stream, {stream.size()});
  ASSERT_EQ(whole.frames.size(), 200u);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<size_t> chunks;
    for (int i = 0; i < 50; ++i) chunks.push_back(1 + rng() % kRelayReadChunk);
    EXPECT_EQ(read_all(stream, chunks).frames, whole.frames);
  }
}

// ---- authentication ----

using Keys = testing::TestKeys;
Keys make_keys() { return Keys(); }

TEST(RelayProto, AuthKnownAnswerFromAnIndependentImplementation) {
  // Python: X25519PrivateKey.from_private_bytes, hashlib.blake2s(msg, key=K); private keys
  // bytes 1..32 (client) and 101..132 (server), challenge bytes 200..231.
  ASSERT_TRUE(crypto::init());
  Keys c, s;
  for (int i = 0; i < 32; ++i) {
    c.priv.b[size_t(i)] = uint8_t(1 + i);
    s.priv.b[size_t(i)] = uint8_t(101 + i);
  }
  ASSERT_TRUE(crypto::x25519_public(c.pub, c.priv.span()));
  ASSERT_TRUE(crypto::x25519_public(s.pub, s.priv.span()));
  EXPECT_EQ(c.pub, hex_array32("07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c"));
  EXPECT_EQ(s.pub, hex_array32("5714769d116bf76436ae74bc793d2c30ad1903c59ac5273805c7e2698b410c36"));
  RelayChallenge ch;
  for (int i = 0; i < 32; ++i) ch[size_t(i)] = uint8_t(200 + i);
  crypto::Key k;
  ASSERT_TRUE(relay_auth_key(c.priv, s.pub, k));
  EXPECT_EQ(k.b, hex_array32("d40ba6204afc580683b4d0457fb6a7f2c46f78d2197d3b25e529b8e6fe4a8531"));
  const RelayProof want_proof =
      hex_array32("d5d8f11adbb0a8e6cd0b1a61af91b6c07aab90f3f3aa6e2419aa93eb6b999b21");
  const RelayProof want_server =
      hex_array32("c0126931069e57ff0704f9dcce009b5e1eb7fa05aabbdb9ba301b0305f1daf5d");
  RelayProof proof{}, server{};
  ASSERT_TRUE(relay_client_proof(c.priv, s.pub, ch, c.pub, proof));
  EXPECT_EQ(proof, want_proof);
  ASSERT_TRUE(relay_server_proof(s.priv, ch, c.pub, server));
  EXPECT_EQ(server, want_server);
  EXPECT_TRUE(relay_verify_client(s.priv, s.pub, ch, c.pub, want_proof));
  EXPECT_TRUE(relay_verify_server(c.priv, s.pub, ch, c.pub, want_server));
}

TEST(RelayProto, BothSidesAgreeAndWrongInputsFail) {
  ASSERT_TRUE(crypto::init());
  for (int trial = 0; trial < 20; ++trial) {
    const Keys c = make_keys(), s = make_keys(), other = make_keys();
    RelayChallenge ch;
    crypto::random_bytes(ch);
    RelayProof proof{}, server{}, server2{};
    ASSERT_TRUE(relay_client_proof(c.priv, s.pub, ch, c.pub, proof));
    EXPECT_TRUE(relay_verify_client(s.priv, s.pub, ch, c.pub, proof));
    ASSERT_TRUE(relay_server_proof(s.priv, ch, c.pub, server));
    EXPECT_TRUE(relay_verify_server(c.priv, s.pub, ch, c.pub, server));
    ASSERT_TRUE(relay_server_accept(s.priv, s.pub, ch, c.pub, proof, server2));
    EXPECT_EQ(server2, server);

    // Another challenge (a replayed proof), another client key, another server.
    RelayChallenge ch2 = ch;
    ch2[trial % 32] ^= 1;
    EXPECT_FALSE(relay_verify_client(s.priv, s.pub, ch2, c.pub, proof));
    EXPECT_FALSE(relay_verify_client(s.priv, s.pub, ch, other.pub, proof));
    EXPECT_FALSE(relay_verify_client(other.priv, other.pub, ch, c.pub, proof));
    EXPECT_FALSE(relay_verify_server(c.priv, other.pub, ch, c.pub, server));
    EXPECT_FALSE(relay_verify_server(c.priv, s.pub, ch2, c.pub, server));
    // A client claiming a key whose private key it does not have.
    RelayProof forged{};
    ASSERT_TRUE(relay_client_proof(other.priv, s.pub, ch, c.pub, forged));
    EXPECT_FALSE(relay_verify_client(s.priv, s.pub, ch, c.pub, forged));
    // Any bit of the proof.
    RelayProof flipped = proof;
    flipped[size_t(trial) % 32] ^= uint8_t(1u << (trial % 8));
    EXPECT_FALSE(relay_verify_client(s.priv, s.pub, ch, c.pub, flipped));
    RelayProof untouched;
    untouched.fill(0x5c);
    EXPECT_FALSE(relay_server_accept(s.priv, s.pub, ch, c.pub, flipped, untouched));
    EXPECT_EQ(untouched, [] { RelayProof p; p.fill(0x5c); return p; }());
    // The server proof is not the client proof (labels differ).
    EXPECT_NE(proof, server);
  }
}

TEST(RelayProto, LowOrderKeysNeverAuthenticate) {
  ASSERT_TRUE(crypto::init());
  const Keys s = make_keys(), c = make_keys();
  RelayChallenge ch{};
  // The kernel selftests' low-order keys (u = 0, u = 1, points of order 8 and non-canonical
  // forms): a clamped scalar maps each to the all-zero point.
  for (const auto& bad : testing::low_order_public_keys()) {
    RelayProof p{};
    crypto::Key k;
    EXPECT_FALSE(relay_auth_key(s.priv, bad, k));
    EXPECT_TRUE(k.is_zero());
    EXPECT_FALSE(relay_verify_client(s.priv, s.pub, ch, bad, p));
    EXPECT_FALSE(relay_server_proof(s.priv, ch, bad, p));
    EXPECT_FALSE(relay_server_accept(s.priv, s.pub, ch, bad, p, p));
    // A client told a low-order "server key" cannot make a proof or accept one.
    EXPECT_FALSE(relay_client_proof(c.priv, bad, ch, c.pub, p));
    EXPECT_FALSE(relay_verify_server(c.priv, bad, ch, c.pub, p));
  }
}

TEST(RelayProto, NamesForEveryReason) {
  for (size_t i = 0; i < size_t(RelayMalformed::kCount); ++i)
    EXPECT_STRNE(relay_malformed_name(RelayMalformed(i)), "?");
  for (uint8_t t = 1; t <= 8; ++t) EXPECT_STRNE(relay_frame_type_name(RelayFrameType(t)), "?");
}

}  // namespace
}  // namespace meshwg::control
