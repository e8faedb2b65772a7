// WireGuard's Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake (whitepaper §5.4.2-5.4.5):
//   <- s
//   ...
//   -> e, es, s, ss     initiation: ephemeral, AEAD(static), AEAD(TAI64N)
//   <- e, ee, se, psk   response:   ephemeral, AEAD(empty)
// C is the chaining key, H the handshake hash; HASH = BLAKE2s-256, KDFn = HKDF-BLAKE2s.
// Every step works on local copies of C and H and commits them only when the whole message
// succeeded, so a bad or forged message never disturbs a handshake in progress.
#include "crypto/noise.h"

#include <cstddef>
#include <cstring>

namespace meshwg::crypto {

namespace {

using dataplane::MessageInitiation;
using dataplane::MessageResponse;
using HashState = Secret<kHashSize>;

constexpr char kConstruction[] = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
constexpr char kIdentifier[] = "WireGuard v1 zx2c4 Jason@zx2c4.com";

ByteSpan literal(const char* s, size_t with_nul) {
  return {reinterpret_cast<const uint8_t*>(s), with_nul - 1};
}

// C0 = HASH(construction), H0 = HASH(C0 || identifier): the same for every handshake, so
// computed once (function-local statics are initialised thread-safely).
struct InitialState {
  std::array<uint8_t, kHashSize> chaining_key;
  std::array<uint8_t, kHashSize> hash;
};

const InitialState& initial_state() {
  static const InitialState s = [] {
    InitialState st{};
    blake2s(st.chaining_key, literal(kConstruction, sizeof(kConstruction)));
    Blake2s(kHashSize)
        .update(st.chaining_key)
        .update(literal(kIdentifier, sizeof(kIdentifier)))
        .final(st.hash);
    return st;
  }();
  return s;
}

// H = HASH(H || data)
void mix_hash(HashState& h, ByteSpan data) {
  Blake2s(kHashSize).update(h.span()).update(data).final(h.span());
}

// C = KDF1(C, input)
void kdf1(Key& c, ByteSpan input) {
  Key next;
  kdf(c.span(), input, next.data());
  c = next;
}

// (C, k) = KDF2(C, input)
void kdf2(Key& c, Key& k, ByteSpan input) {
  Key next;
  kdf(c.span(), input, next.data(), k.data());
  c = next;
}

// (C, tau, k) = KDF3(C, input)
void kdf3(Key& c, Key& tau, Key& k, ByteSpan input) {
  Key next;
  kdf(c.span(), input, next.data(), tau.data(), k.data());
  c = next;
}

// The packed message structs hold little-endian integers; go through bytes explicitly.
template <class M>
void put_u32(M& m, size_t offset, uint32_t v) {
  dataplane::store_le32(reinterpret_cast<uint8_t*>(&m) + offset, v);
}
template <class M>
uint32_t get_u32(const M& m, size_t offset) {
  return dataplane::load_le32(reinterpret_cast<const uint8_t*>(&m) + offset);
}

// Uses the injected ephemeral key (tests) or a fresh random one. Clamping an injected key
// changes nothing in X25519 (which clamps anyway) but keeps the stored key canonical.
bool make_ephemeral(Key& priv, PublicKey& pub, const Key* injected) {
  if (injected != nullptr) {
    priv = *injected;
    x25519_clamp(priv.span());
  } else {
    x25519_generate(priv.span());
  }
  return x25519_public(pub, priv.span());
}

// The Noise "e" token on the sending side (kernel noise.c: message_ephemeral): a new
// ephemeral key, its public half written to the message and mixed into C and H.
bool send_ephemeral(Key& priv, uint8_t (&wire)[32], Key& c, HashState& h, const Key* injected) {
  PublicKey pub;
  if (!make_ephemeral(priv, pub, injected)) return false;
  std::memcpy(wire, pub.data(), sizeof(wire));
  kdf1(c, pub);
  mix_hash(h, pub);
  return true;
}

}  // namespace

// ---- LocalStatic ----

void LocalStatic::set(std::span<const uint8_t, 32> priv) {
  if (is_zero_ct(priv)) {
    private_key.clear();
    public_key.fill(0);
    has_key = false;
    return;
  }
  private_key = Key(priv);
  x25519_clamp(private_key.span());
  // A clamped scalar is never a multiple of the group order, so this cannot fail; keep the
  // check so a broken library cannot leave us with a half-set identity.
  has_key = x25519_public(public_key, private_key.span());
  if (!has_key) {
    private_key.clear();
    public_key.fill(0);
  }
}

// ---- Handshake ----

bool Handshake::set_keys(const LocalStatic& local, const PublicKey& remote_static,
                         std::span<const uint8_t, 32> psk) {
  // State built for another remote key is meaningless now, and so is the replay guard:
  // timestamps are the old identity's clock, not the new one's.
  if (remote_static != remote_static_) {
    clear();
    latest_timestamp_ = Tai64n{};
  }
  remote_static_ = remote_static;
  set_psk(psk);
  // DH(S_local, S_remote) is zero exactly when the remote key has low order; such a peer
  // could be impersonated by anyone, so it must never take part in a handshake.
  usable_ = local.has_key &&
            x25519(precomputed_static_static_.span(), local.private_key.span(), remote_static_);
  if (!usable_) precomputed_static_static_.clear();
  return usable_;
}

void Handshake::set_psk(std::span<const uint8_t, 32> psk) { psk_ = Key(psk); }

void Handshake::clear() {
  state_ = State::kZeroed;
  ephemeral_private_.clear();
  remote_ephemeral_.fill(0);
  chaining_key_.clear();
  wipe(hash_.data(), hash_.size());
}

bool Handshake::create_initiation(MessageInitiation& msg, const LocalStatic& local,
                                  uint32_t local_index, const Tai64n& now,
                                  const Key* ephemeral_private) {
  if (!usable_ || !local.has_key) return false;
  const InitialState& init = initial_state();
  Key c(init.chaining_key);
  HashState h(init.hash);
  Key k;
  MessageInitiation out;
  put_u32(out, offsetof(MessageInitiation, type),
          static_cast<uint32_t>(dataplane::MessageType::kInitiation));
  put_u32(out, offsetof(MessageInitiation, sender), local_index);

  mix_hash(h, remote_static_);

  // e
  Key eph;
  if (!send_ephemeral(eph, out.ephemeral, c, h, ephemeral_private)) return false;

  // es
  Key dh;
  if (!x25519(dh.span(), eph.span(), remote_static_)) return false;
  kdf2(c, k, dh.span());

  // s
  aead_seal(out.encrypted_static, local.public_key, 0, h.span(), k.span());
  mix_hash(h, out.encrypted_static);

  // ss (precomputed by set_keys, known to be non-zero because usable_)
  kdf2(c, k, precomputed_static_static_.span());

  // payload: the timestamp, which lets the responder reject replayed initiations
  aead_seal(out.encrypted_timestamp, now.b, 0, h.span(), k.span());
  mix_hash(h, out.encrypted_timestamp);

  // Commit. The macs are the caller's (cookie.h), so they are left as they were.
  std::memcpy(&msg, &out, offsetof(MessageInitiation, macs));
  ephemeral_private_ = eph;
  chaining_key_ = c;
  std::memcpy(hash_.data(), h.data(), kHashSize);
  local_index_ = local_index;
  state_ = State::kCreatedInitiation;
  return true;
}

bool decrypt_initiation(const MessageInitiation& msg, const LocalStatic& local,
                        InitiationPartial& out) {
  if (!local.has_key) return false;
  if (get_u32(msg, offsetof(MessageInitiation, type)) !=
      static_cast<uint32_t>(dataplane::MessageType::kInitiation)) {
    return false;
  }
  const InitialState& init = initial_state();
  Key c(init.chaining_key);
  HashState h(init.hash);
  Key k;

  mix_hash(h, local.public_key);

  // e
  PublicKey eph;
  std::memcpy(eph.data(), msg.ephemeral, eph.size());
  kdf1(c, eph);
  mix_hash(h, eph);

  // es
  Key dh;
  if (!x25519(dh.span(), local.private_key.span(), eph)) return false;
  kdf2(c, k, dh.span());

  // s
  PublicKey remote_static;
  if (!aead_open(remote_static.data(), msg.encrypted_static, 0, h.span(), k.span())) return false;
  mix_hash(h, msg.encrypted_static);

  out.remote_static = remote_static;
  out.remote_ephemeral = eph;
  out.remote_index = get_u32(msg, offsetof(MessageInitiation, sender));
  out.chaining_key = c;
  std::memcpy(out.hash.data(), h.data(), kHashSize);
  return true;
}

bool Handshake::consume_initiation(const MessageInitiation& msg, const InitiationPartial& partial,
                                   Tai64n* timestamp_out) {
  if (!usable_ || partial.remote_static != remote_static_) return false;
  Key c = partial.chaining_key;
  HashState h(partial.hash);
  Key k;

  // ss
  kdf2(c, k, precomputed_static_static_.span());

  // payload
  Tai64n ts;
  if (!aead_open(ts.b.data(), msg.encrypted_timestamp, 0, h.span(), k.span())) return false;
  mix_hash(h, msg.encrypted_timestamp);

  // A timestamp not newer than the last accepted one is a replay (or a peer whose clock
  // went backwards); answering it would let an attacker reset the peer's session.
  if (!ts.after(latest_timestamp_)) return false;

  remote_ephemeral_ = partial.remote_ephemeral;
  remote_index_ = get_u32(msg, offsetof(MessageInitiation, sender));
  chaining_key_ = c;
  std::memcpy(hash_.data(), h.data(), kHashSize);
  latest_timestamp_ = ts;
  // Any ephemeral key of our own belongs to an initiation this one supersedes.
  ephemeral_private_.clear();
  state_ = State::kConsumedInitiation;
  if (timestamp_out != nullptr) *timestamp_out = ts;
  return true;
}

bool Handshake::create_response(MessageResponse& msg, uint32_t local_index,
                                const Key* ephemeral_private) {
  if (!usable_ || state_ != State::kConsumedInitiation) return false;
  Key c = chaining_key_;
  HashState h(hash_);
  Key k;
  Key tau;
  MessageResponse out;
  put_u32(out, offsetof(MessageResponse, type),
          static_cast<uint32_t>(dataplane::MessageType::kResponse));
  put_u32(out, offsetof(MessageResponse, sender), local_index);
  put_u32(out, offsetof(MessageResponse, receiver), remote_index_);

  // e
  Key eph;
  if (!send_ephemeral(eph, out.ephemeral, c, h, ephemeral_private)) return false;

  // ee
  Key dh;
  if (!x25519(dh.span(), eph.span(), remote_ephemeral_)) return false;
  kdf1(c, dh.span());

  // se
  if (!x25519(dh.span(), eph.span(), remote_static_)) return false;
  kdf1(c, dh.span());

  // psk
  kdf3(c, tau, k, psk_.span());
  mix_hash(h, tau.span());

  // empty payload: only the tag, which proves we derived the same keys
  aead_seal(out.encrypted_nothing, {}, 0, h.span(), k.span());
  mix_hash(h, out.encrypted_nothing);

  std::memcpy(&msg, &out, offsetof(MessageResponse, macs));
  ephemeral_private_ = eph;
  chaining_key_ = c;
  std::memcpy(hash_.data(), h.data(), kHashSize);
  local_index_ = local_index;
  state_ = State::kCreatedResponse;
  return true;
}

bool Handshake::consume_response(const MessageResponse& msg, const LocalStatic& local) {
  if (!usable_ || !local.has_key || state_ != State::kCreatedInitiation) return false;
  if (get_u32(msg, offsetof(MessageResponse, type)) !=
          static_cast<uint32_t>(dataplane::MessageType::kResponse) ||
      get_u32(msg, offsetof(MessageResponse, receiver)) != local_index_) {
    return false;
  }
  Key c = chaining_key_;
  HashState h(hash_);
  Key k;
  Key tau;

  // e
  PublicKey eph;
  std::memcpy(eph.data(), msg.ephemeral, eph.size());
  kdf1(c, eph);
  mix_hash(h, eph);

  // ee
  Key dh;
  if (!x25519(dh.span(), ephemeral_private_.span(), eph)) return false;
  kdf1(c, dh.span());

  // se
  if (!x25519(dh.span(), local.private_key.span(), eph)) return false;
  kdf1(c, dh.span());

  // psk
  kdf3(c, tau, k, psk_.span());
  mix_hash(h, tau.span());

  // empty payload
  if (!aead_open(nullptr, msg.encrypted_nothing, 0, h.span(), k.span())) return false;
  mix_hash(h, msg.encrypted_nothing);

  remote_ephemeral_ = eph;
  remote_index_ = get_u32(msg, offsetof(MessageResponse, sender));
  chaining_key_ = c;
  std::memcpy(hash_.data(), h.data(), kHashSize);
  state_ = State::kConsumedResponse;
  return true;
}

bool Handshake::derive_session(SessionKeys& out) {
  if (state_ != State::kCreatedResponse && state_ != State::kConsumedResponse) return false;
  const bool initiator = state_ == State::kConsumedResponse;
  // (T_send_i, T_recv_i) = KDF2(C, empty); the responder uses them the other way round.
  Key first;
  Key second;
  kdf(chaining_key_.span(), {}, first.data(), second.data());
  out.send = initiator ? first : second;
  out.recv = initiator ? second : first;
  out.local_index = local_index_;
  out.remote_index = remote_index_;
  out.initiator = initiator;
  clear();
  return true;
}

}  // namespace meshwg::crypto
