// Device lifecycle, configuration operations, the index table and keypair rotation
// (whitepaper §5.4.6 "key rotation"; kernel noise.c add_new_keypair / received_with_keypair).
// The thread layout is drawn in device.h.
#include "dataplane/device.h"

#include "crypto/aead.h"
#include "tun/offload.h"

#include <spdlog/spdlog.h>

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace meshwg::dataplane {

namespace {
std::string key_string(const crypto::PublicKey& pk) {
  return std::string(reinterpret_cast<const char*>(pk.data()), pk.size());
}
}  // namespace

const char* drop_name(Drop d) {
  switch (d) {
    case Drop::kMalformedMessage: return "malformed_message";
    case Drop::kUnknownIndex: return "unknown_index";
    case Drop::kDecryptFailed: return "decrypt_failed";
    case Drop::kReplayed: return "replayed";
    case Drop::kKeypairExpired: return "keypair_expired";
    case Drop::kBadInnerPacket: return "bad_inner_packet";
    case Drop::kSourceNotAllowed: return "source_not_allowed";
    case Drop::kNoRoute: return "no_route";
    case Drop::kNoEndpoint: return "no_endpoint";
    case Drop::kStagedOverflow: return "staged_overflow";
    case Drop::kHandshakeQueueFull: return "handshake_queue_full";
    case Drop::kInvalidMac1: return "invalid_mac1";
    case Drop::kCookieSent: return "cookie_sent";
    case Drop::kRateLimited: return "rate_limited";
    case Drop::kHandshakeFailed: return "handshake_failed";
    case Drop::kCookieReplyInvalid: return "cookie_reply_invalid";
    case Drop::kTunWriteFailed: return "tun_write_failed";
    case Drop::kUdpSendFailed: return "udp_send_failed";
    case Drop::kNoKey: return "no_private_key";
    case Drop::kQueueFull: return "queue_full";
    case Drop::kNoBuffer: return "no_buffer";
    case Drop::kCount: break;
  }
  return "?";
}

namespace {
PacketPoolConfig pool_config(size_t buffers) {
  PacketPoolConfig c;
  c.buffers = std::max<size_t>(buffers, 64);
  c.headroom = 64;     // transport header (16) in front of a plaintext; virtio-net header (10)
  c.payload = 65536;   // a TSO read or a GRO-merged write
  c.tailroom = 64;     // padding (≤ 15) and the Poly1305 tag (16)
  return c;
}
int worker_count(int requested) {
  if (requested > 0) return std::min(requested, 256);
  return int(std::max(1u, std::thread::hardware_concurrency()));
}
}  // namespace

Device::Device(tun::Tun& tun, Bind& bind, Clock& clock, const DeviceOptions& opts)
    : tun_(tun), bind_(bind), clock_(clock), tx_pool_(pool_config(opts.tx_buffers)),
      rx_pool_(pool_config(opts.rx_buffers)), workers_(worker_count(opts.workers)),
      inline_below_(opts.inline_below),
      rng_(std::random_device{}()), offload_(tun.vnet_hdr()) {
  const int m = tun_.mtu();
  if (m > 0) mtu_ = m;
}

Device::~Device() {
  stop();
  attach_config_channel(nullptr);
  std::unique_lock lk(config_mu_);
  remove_all_peers_locked();
}

bool Device::start(bool timer_thread) {
  if (running_) return true;
  const size_t crossover = crypto::calibrate_transport_aead();
  if (crossover == SIZE_MAX)
    spdlog::info("transport AEAD: libsodium for all sizes");
  else
    spdlog::info("transport AEAD: libsodium below {} bytes, OpenSSL from there", crossover);
  {
    std::unique_lock lk(config_mu_);
    const int port = bind_.open(listen_port_);
    if (port < 0) {
      spdlog::error("cannot open UDP port {}: {}", listen_port_, std::strerror(-port));
      return false;
    }
    listen_port_ = uint16_t(port);
    bind_open_ = true;
    if (fwmark_ != 0 && !bind_.set_fwmark(fwmark_)) spdlog::warn("cannot set fwmark {}", fwmark_);
    // Room for every buffer of both pools: a push can then fail only once closed.
    crypt_queue_ = std::make_unique<BlockingQueue<PacketBuf*>>(tx_pool_.buffers() +
                                                               rx_pool_.buffers());
    running_ = true;
  }
  spdlog::info("{} packet worker{}", workers_, workers_ == 1 ? "" : "s");
  timer_thread_ = timer_thread;
  for (int i = 0; i < workers_; ++i) worker_threads_.emplace_back(&Device::worker_loop, this);
  threads_.emplace_back(&Device::tun_loop, this);
  for (int i = 0; i < bind_.receivers(); ++i) threads_.emplace_back(&Device::receive_loop, this, i);
  threads_.emplace_back(&Device::handshake_loop, this);
  if (timer_thread) threads_.emplace_back(&Device::timer_loop, this);
  // Peers with a persistent keepalive announce themselves as soon as the device is up.
  std::shared_lock lk(config_mu_);
  for (auto& [k, p] : peers_) {
    std::unique_lock plk(p->mu);
    if (p->persistent_keepalive != 0) send_keepalive_locked(*p, plk);
  }
  return true;
}

void Device::stop() {
  if (!running_.exchange(false)) return;
  tun_.close();
  bind_.close();
  {
    std::lock_guard lk(hs_mu_);
    hs_cv_.notify_all();
  }
  {
    std::lock_guard lk(timer_mu_);
    timer_cv_.notify_all();
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
  {
    // Under config_mu_: whoever dispatches holds it and saw running_ set, so no push can
    // meet the closed queue (dispatch()). The workers finish and drain what is queued.
    std::unique_lock lk(config_mu_);
    if (crypt_queue_) crypt_queue_->close();
  }
  for (auto& t : worker_threads_) t.join();
  worker_threads_.clear();
  bind_open_ = false;
}

int Device::with_config(const std::function<int()>& fn) {
  std::unique_lock lk(config_mu_);
  return fn();
}

void Device::with_config_shared(const std::function<void()>& fn) {
  std::shared_lock lk(config_mu_);
  fn();
}

size_t Device::peer_count() {
  std::shared_lock lk(config_mu_);
  return peers_.size();
}

bool Device::set_private_key_locked(std::span<const uint8_t, 32> priv) {
  crypto::LocalStatic next;
  next.set(priv);
  if (next.has_key == identity_.has_key &&
      crypto::equal_ct(next.private_key.span(), identity_.private_key.span()))
    return true;  // unchanged: keep the sessions (wg setconf re-sends the same key)
  // A peer with our own new public key would be a loop: remove it (wireguard-go does).
  if (next.has_key) {
    if (auto it = peers_.find(key_string(next.public_key)); it != peers_.end())
      remove_peer_locked(it->second.get());
  }
  identity_ = next;
  cookie_checker_.init(identity_.public_key);
  for (auto& [k, p] : peers_) {
    std::lock_guard plk(p->mu);
    (void)p->handshake.set_keys(identity_, p->public_key, p->preshared_key.span());
    // Sessions keyed by the old identity are dropped; the next packet starts a handshake at
    // once, not after the usual one-per-REKEY_TIMEOUT pause (netns.sh test 8).
    clear_keypairs_locked(*p);
    clear_handshake_locked(*p);
    p->sent_handshake_ever = false;
  }
  return true;
}

int Device::set_listen_port_locked(uint16_t port) {
  if (bind_open_ && port == listen_port_ && port != 0) return 0;
  if (!bind_open_) {
    listen_port_ = port;
    return 0;
  }
  const int r = bind_.open(port);  // keeps the old sockets if this fails
  if (r < 0) return -r == 0 ? EADDRINUSE : -r;
  listen_port_ = uint16_t(r);
  if (fwmark_ != 0) (void)bind_.set_fwmark(fwmark_);
  // Endpoints' sticky source addresses belong to the old sockets.
  for (auto& [k, p] : peers_) {
    std::lock_guard plk(p->mu);
    p->endpoint.local = {};
  }
  return 0;
}

int Device::set_fwmark_locked(uint32_t mark) {
  if (bind_open_ && !bind_.set_fwmark(mark)) return EADDRINUSE;
  fwmark_ = mark;
  return 0;
}

Peer* Device::find_peer_locked(const crypto::PublicKey& pk) {
  auto it = peers_.find(key_string(pk));
  return it == peers_.end() ? nullptr : it->second.get();
}

Peer* Device::add_peer_locked(const crypto::PublicKey& pk) {
  if (identity_.has_key && crypto::equal_ct(pk, identity_.public_key)) return nullptr;
  if (Peer* p = find_peer_locked(pk)) return p;
  if (peers_.size() >= kMaxPeers) return nullptr;
  auto p = std::make_shared<Peer>(pk, next_peer_seq_++);
  p->cookie.init(pk);
  crypto::Key zero;
  (void)p->handshake.set_keys(identity_, pk, zero.span());
  peers_.emplace(key_string(pk), p);
  return p.get();
}

void Device::remove_peer_locked(Peer* p) {
  auto it = peers_.find(key_string(p->public_key));
  if (it == peers_.end()) return;
  auto keep = it->second;  // in-flight packets and timers may hold it a little longer
  allowed_ips_.remove_by_peer(p);
  {
    std::lock_guard plk(p->mu);
    p->removed = true;
    clear_keypairs_locked(*p);
    clear_handshake_locked(*p);
    p->staged.clear();
    for (auto& d : p->deadline) d.reset();
  }
  peers_.erase(it);
}

void Device::remove_all_peers_locked() {
  while (!peers_.empty()) remove_peer_locked(peers_.begin()->second.get());
}

void Device::set_preshared_key_locked(Peer* p, std::span<const uint8_t, 32> psk) {
  std::lock_guard plk(p->mu);
  p->preshared_key = crypto::Key(psk);
  p->handshake.set_psk(psk);
}

void Device::set_endpoint_locked(Peer* p, const Endpoint& e) {
  std::lock_guard plk(p->mu);
  p->endpoint = e;
}

void Device::set_persistent_keepalive_locked(Peer* p, uint16_t seconds) {
  std::unique_lock plk(p->mu);
  const bool was_off = p->persistent_keepalive == 0;
  p->persistent_keepalive = seconds;
  if (seconds == 0) {
    timer_del_locked(*p, Timer::kPersistentKeepalive);
  } else if (was_off && running_) {
    send_keepalive_locked(*p, plk);  // as wireguard-go: announce at once
  }
}

void Device::clear_allowed_ips_locked(Peer* p) { allowed_ips_.remove_by_peer(p); }

void Device::add_allowed_ip_locked(Peer* p, const IpPrefix& prefix) {
  allowed_ips_.insert(prefix, p);
}

void Device::remove_allowed_ip_locked(Peer* p, const IpPrefix& prefix) {
  (void)allowed_ips_.remove(prefix, p);
}

void Device::for_each_peer_locked(const std::function<void(Peer&)>& fn) {
  std::vector<Peer*> ordered;
  ordered.reserve(peers_.size());
  for (auto& [k, p] : peers_) ordered.push_back(p.get());
  std::sort(ordered.begin(), ordered.end(),
            [](const Peer* a, const Peer* b) { return a->created_seq < b->created_seq; });
  for (Peer* p : ordered) fn(*p);
}

void Device::for_each_allowed_ip_locked(Peer* p,
                                        const std::function<void(const IpPrefix&)>& fn) {
  allowed_ips_.for_each(p, fn);
}

uint32_t Device::new_index_locked(Peer& peer, std::shared_ptr<Keypair> kp) {
  std::lock_guard lk(index_mu_);
  for (;;) {
    uint32_t idx = 0;
    crypto::random_bytes({reinterpret_cast<uint8_t*>(&idx), sizeof(idx)});
    if (idx == 0 || index_.count(idx)) continue;  // 0 means "none" in Peer::handshake_index
    index_.emplace(idx, IndexEntry{peer.shared_from_this(), std::move(kp)});
    return idx;
  }
}

void Device::drop_index(uint32_t index) {
  if (index == 0) return;
  std::lock_guard lk(index_mu_);
  index_.erase(index);
}

void Device::clear_handshake_locked(Peer& peer) {
  peer.handshake.clear();
  drop_index(peer.handshake_index);
  peer.handshake_index = 0;
}

void Device::clear_keypairs_locked(Peer& peer) {
  for (auto* slot : {&peer.current, &peer.previous, &peer.next}) {
    if (*slot) drop_index((*slot)->local_index);
    slot->reset();
  }
}

std::shared_ptr<Keypair> Device::install_session_locked(Peer& peer, crypto::SessionKeys& keys) {
  auto kp = std::make_shared<Keypair>();
  kp->send_key = keys.send;
  kp->recv_key = keys.recv;
  kp->local_index = keys.local_index;
  kp->remote_index = keys.remote_index;
  kp->initiator = keys.initiator;
  kp->created = clock_.now();
  kp->peer = &peer;
  kp->owner = peer.shared_from_this();
  {
    // The handshake's index now names this session.
    std::lock_guard lk(index_mu_);
    index_[keys.local_index] = IndexEntry{peer.shared_from_this(), kp};
  }
  peer.handshake_index = 0;
  auto release = [&](std::shared_ptr<Keypair>& slot) {
    if (slot) drop_index(slot->local_index);
    slot.reset();
  };
  if (kp->initiator) {
    // The response confirmed the session: use it now.
    if (peer.next) {
      release(peer.previous);
      peer.previous = std::move(peer.next);
      release(peer.current);
    } else {
      release(peer.previous);
      peer.previous = std::move(peer.current);
    }
    peer.current = kp;
  } else {
    // The responder waits for the first data packet before sending with it.
    release(peer.next);
    peer.next = kp;
    release(peer.previous);
  }
  peer.sent_lastminute_handshake = false;
  return kp;
}

bool Device::received_with_keypair_locked(Peer& peer, const std::shared_ptr<Keypair>& kp) {
  if (peer.next != kp) return false;
  if (peer.previous) drop_index(peer.previous->local_index);
  peer.previous = std::move(peer.current);
  peer.current = std::move(peer.next);
  peer.next.reset();
  return true;
}

void Device::log_drop(Drop d, const Endpoint* from) {
  // At most one line per second: a flood of junk must not become a flood of logs.
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  int64_t last = last_drop_log_ns_.load(std::memory_order_relaxed);
  if (now_ns - last < 1'000'000'000) return;
  if (!last_drop_log_ns_.compare_exchange_strong(last, now_ns)) return;
  spdlog::debug("dropped packet ({}){}{}", drop_name(d), from ? " from " : "",
                from ? from->str() : "");
}

// ---- threads ----

void Device::tun_loop() {
  pthread_setname_np(pthread_self(), "meshwg-tun");  // names show in top -H and perf
  // One read may be a TSO/USO super-packet (up to 64 KiB) that splits into up to
  // kMaxSegments packets, each in its own pool buffer with headroom for the transport
  // header and tailroom for padding and the tag, so it is sealed in place. The reader keeps
  // a stock of empty buffers; split segments leave it, owned by the pipeline.
  constexpr size_t kMaxSegments = 256;
  constexpr size_t kReserve = kPaddingMultiple + kTagSize;
  const size_t stock_size = offload_ ? kMaxSegments : 1;
  std::vector<uint8_t> in(offload_ ? tun::kVnetHdrLen + 65535 : 0);
  std::vector<PacketBuf*> stock;
  std::vector<std::span<uint8_t>> spans;
  std::vector<size_t> lens(kMaxSegments);
  std::vector<PacketBuf*> pkts;
  std::vector<PacketBuf*> run_after;
  auto writable = [&](PacketBuf* b) { return b->tail_space().first(b->tailroom() - kReserve); };
  // Before sleeping in read(), run the chains no worker has taken (Handoff::kProducerFirst
  // leaves a lone chain to us).
  auto read_tun = [&](std::span<uint8_t> buf) {
    const long n = tun_.try_read(buf);
    if (n != tun::Tun::kWouldBlock) return n;
    help(256);
    return tun_.read(buf);
  };
  while (running_) {
    while (stock.size() < stock_size) {
      PacketBuf* b = tx_pool_.get();
      if (!b) break;
      stock.push_back(b);
    }
    if (stock.empty()) {
      // Every buffer is in flight: do some of the crypto holding them, then retry.
      help(4);
      std::this_thread::yield();
      continue;
    }
    pkts.clear();
    if (!offload_) {
      // Read straight into the packet's buffer: no copy.
      const long n = read_tun(writable(stock.back()));
      if (n == 0) break;
      if (n < 0) continue;
      PacketBuf* b = stock.back();
      stock.pop_back();
      (void)b->push_back(size_t(n));
      pkts.push_back(b);
    } else {
      const long n = read_tun(in);
      if (n == 0) break;
      if (n < long(tun::kVnetHdrLen)) continue;
      auto hdr = tun::VirtioNetHdr::parse({in.data(), tun::kVnetHdrLen});
      if (!hdr) {
        count(Drop::kBadInnerPacket);
        continue;
      }
      // Segments fill the stock from its back, so the used ones are popped off the end.
      spans.clear();
      for (size_t i = stock.size(); i-- > 0;) spans.push_back(writable(stock[i]));
      const int k = tun::gso_split({in.data() + tun::kVnetHdrLen, size_t(n) - tun::kVnetHdrLen},
                                   *hdr, spans, lens);
      if (k <= 0) {
        count(stock.size() < stock_size ? Drop::kNoBuffer : Drop::kBadInnerPacket);
        continue;
      }
      for (int i = 0; i < k; ++i) {
        PacketBuf* b = stock.back();
        stock.pop_back();
        (void)b->push_back(lens[size_t(i)]);
        pkts.push_back(b);
      }
    }
    run_after.clear();
    route_and_send(pkts, run_after);
    for (PacketBuf* c : run_after) run_inline(c);
    if (backlogged()) help(4);
  }
  for (PacketBuf* b : stock) tx_pool_.put(b);
}

void Device::receive_loop(int i) {
  pthread_setname_np(pthread_self(), ("meshwg-udp" + std::to_string(i)).c_str());
  // batch_size() buffers from the pool; with UDP GRO one call may fill them all. Transport
  // datagrams leave for the pipeline in their buffers, which are replaced from the pool.
  const size_t batch = size_t(std::max(1, bind_.batch_size()));
  std::vector<PacketBuf*> slots(batch, nullptr);
  std::vector<Bind::RecvMsg> msgs(batch);
  std::vector<PacketBuf*> queued;
  std::vector<PacketBuf*> inline_chains(batch);
  size_t inline_count = 0;
  while (running_) {
    size_t m = 0;
    for (size_t j = 0; j < batch; ++j) {
      if (!slots[j]) slots[j] = rx_pool_.get();
      if (!slots[j]) break;
      m = j + 1;
    }
    if (m == 0) {
      help(4);
      std::this_thread::yield();
      continue;
    }
    for (size_t j = 0; j < m; ++j) {
      PacketBuf* b = slots[j];
      msgs[j] = Bind::RecvMsg{b->tail_space().first(std::min(b->tailroom(), Bind::kMaxDatagramSize)), 0, {}};
    }
    // Before sleeping in receive_batch(), run the chains no worker has taken
    // (Handoff::kProducerFirst leaves a lone chain to us).
    int n = bind_.try_receive_batch(i, {msgs.data(), m});
    if (n == Bind::kWouldBlock) {
      help(256);
      n = bind_.receive_batch(i, {msgs.data(), m});
    }
    if (n == int(Bind::kClosed)) break;
    if (n <= 0) continue;
    queued.clear();
    {
      std::shared_lock clk(config_mu_);
      {
        std::lock_guard ilk(index_mu_);
        for (int j = 0; j < n; ++j) {
          Bind::RecvMsg& msg = msgs[size_t(j)];
          const uint32_t type = classify(msg.buf.data(), msg.len);
          if (type != uint32_t(MessageType::kTransport)) continue;
          PacketBuf* b = slots[size_t(j)];
          (void)b->push_back(msg.len);
          if (!resolve_transport_locked(*b, msg.from)) {
            (void)b->trim(0);
            continue;
          }
          queued.push_back(b);
          slots[size_t(j)] = nullptr;
        }
      }
      // Consecutive packets for one peer go as chains. Drops are counted in dispatch;
      // a chain comes back for inline processing only while stop() is under way.
      size_t inl = 0;
      for (size_t a = 0; a < queued.size();) {
        size_t b = a + 1;
        while (b < queued.size() && b - a < kMaxChain && queued[b]->peer == queued[a]->peer) ++b;
        if (PacketBuf* c = dispatch({queued.data() + a, b - a}, Handoff::kProducerFirst)) inline_chains[inl++] = c;
        a = b;
      }
      inline_count = inl;
    }
    for (size_t c = 0; c < inline_count; ++c) run_inline(inline_chains[c]);
    for (int j = 0; j < n; ++j) {
      if (!slots[size_t(j)]) continue;
      const Bind::RecvMsg& msg = msgs[size_t(j)];
      const uint32_t type = classify(msg.buf.data(), msg.len);
      if (type == 0) {
        count(Drop::kMalformedMessage);
        log_drop(Drop::kMalformedMessage, &msg.from);
      } else if (type != uint32_t(MessageType::kTransport)) {
        on_handshake_datagram(msg.buf.first(msg.len), msg.from);
      }
    }
    if (backlogged()) help(4);
  }
  for (PacketBuf* b : slots) rx_pool_.put(b);
}

void Device::handshake_loop() {
  pthread_setname_np(pthread_self(), "meshwg-hs");
  while (true) {
    QueuedHandshake item;
    bool under_load = false;
    {
      std::unique_lock lk(hs_mu_);
      hs_cv_.wait(lk, [&] { return !handshake_queue_.empty() || !running_; });
      if (!running_) return;
      // Under load when the queue is an eighth full, and for a second after (wireguard-go).
      const Instant now = clock_.now();
      if (handshake_queue_.size() >= kMaxQueuedHandshakes / 8) {
        last_under_load_ = now;
        was_under_load_ = true;
      }
      under_load = force_under_load_ ||
                   (was_under_load_ && now - last_under_load_ < kUnderLoadAfterTime);
      item = std::move(handshake_queue_.front());
      handshake_queue_.pop_front();
    }
    on_handshake_message(item.data, item.from, under_load);
  }
}

void Device::timer_loop() {
  pthread_setname_np(pthread_self(), "meshwg-timer");
  auto last_mtu = std::chrono::steady_clock::now();
  auto last_cpu = last_mtu;
  while (running_) {
    tick();
    const auto real_now = std::chrono::steady_clock::now();
    if (real_now - last_cpu >= std::chrono::milliseconds(250)) {
      last_cpu = real_now;
      sample_cpu();
    }
    if (real_now - last_mtu >= std::chrono::seconds(1)) {
      last_mtu = real_now;
      const int m = tun_.mtu();
      if (m > 0) mtu_ = m;
    }
    std::unique_lock lk(timer_mu_);
    auto wake = real_now + std::chrono::milliseconds(250);
    if (!timer_heap_.empty()) {
      // Timer instants come from clock_, which is the real steady clock when this thread runs.
      wake = std::min(wake, std::max(timer_heap_.top().when, real_now));
    }
    timer_cv_.wait_until(lk, wake, [&] {
      return !running_ || channel_pending_ ||
             (!timer_heap_.empty() && timer_heap_.top().when < wake);
    });
  }
}

}  // namespace meshwg::dataplane
