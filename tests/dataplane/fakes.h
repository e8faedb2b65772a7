// In-memory stand-ins for the TUN, the UDP network and the clock, so two devices can talk in
// one process (the pattern of wireguard-go's tuntest/bindtest). The network can tap, drop,
// replay and re-address datagrams (NAT rebinding, roaming).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dataplane/bind.h"
#include "dataplane/device.h"
#include "tun/tun.h"

namespace meshwg::testing {

using dataplane::Endpoint;
using Packet = std::vector<uint8_t>;

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

class FakeClock final : public dataplane::Clock {
 public:
  dataplane::Instant now() override {
    std::lock_guard lk(mu_);
    return now_;
  }
  dataplane::WallTime wall() override {
    std::lock_guard lk(mu_);
    return wall_;
  }
  void advance(std::chrono::nanoseconds d) {
    std::lock_guard lk(mu_);
    now_ += d;
    wall_ += std::chrono::duration_cast<dataplane::WallTime::duration>(d);
  }

 private:
  std::mutex mu_;
  dataplane::Instant now_ = dataplane::Instant(std::chrono::hours(1000));
  dataplane::WallTime wall_ = dataplane::WallTime(std::chrono::seconds(1704067200));
};

class FakeTun final : public tun::Tun {
 public:
  // vnet: reads and writes carry a virtio-net header, as a Linux TUN with IFF_VNET_HDR.
  explicit FakeTun(int mtu = 1420, bool vnet = false) : mtu_(mtu), vnet_(vnet) {}
  bool vnet_hdr() const override { return vnet_; }
  // A packet the device will read (as if the kernel routed it into the TUN).
  void inject(Packet p) {
    std::lock_guard lk(mu_);
    outbound_.push_back(std::move(p));
    cv_.notify_all();
  }
  // Packets the device wrote (delivered to the "kernel").
  std::vector<Packet> written() {
    std::lock_guard lk(mu_);
    return written_;
  }
  size_t written_count() {
    std::lock_guard lk(mu_);
    return written_.size();
  }
  long try_read(std::span<uint8_t> buf) override {
    {
      std::lock_guard lk(mu_);
      if (!closed_ && outbound_.empty()) return kWouldBlock;
    }
    return read(buf);  // the only reader: what it saw is still there
  }
  long read(std::span<uint8_t> buf) override {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return closed_ || !outbound_.empty(); });
    if (closed_) return 0;
    Packet p = std::move(outbound_.front());
    outbound_.pop_front();
    const size_t n = std::min(p.size(), buf.size());
    std::memcpy(buf.data(), p.data(), n);
    return long(n);
  }
  bool write(std::span<const uint8_t> pkt) override {
    std::lock_guard lk(mu_);
    written_.emplace_back(pkt.begin(), pkt.end());
    return true;
  }
  int mtu() const override { return mtu_; }
  void close() override {
    std::lock_guard lk(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  int mtu_;
  bool vnet_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Packet> outbound_;
  std::vector<Packet> written_;
  bool closed_ = false;
};

class FakeBind;

// Routes datagrams between FakeBinds by "ip:port". A tap sees every datagram and may drop it.
class FakeNet {
 public:
  struct Sent {
    Packet data;
    Endpoint from;
    Endpoint to;
  };
  using Tap = std::function<bool(const Sent&)>;  // return false to drop

  void attach(const std::string& addr, FakeBind* b) {
    std::lock_guard lk(mu_);
    binds_[addr] = b;
  }
  void detach(const std::string& addr, FakeBind* b) {
    std::lock_guard lk(mu_);
    auto it = binds_.find(addr);
    if (it != binds_.end() && it->second == b) binds_.erase(it);
  }
  void set_tap(Tap t) {
    std::lock_guard lk(mu_);
    tap_ = std::move(t);
  }
  std::vector<Sent> log() {
    std::lock_guard lk(mu_);
    return log_;
  }
  void clear_log() {
    std::lock_guard lk(mu_);
    log_.clear();
  }
  size_t count_type(uint32_t type) {
    std::lock_guard lk(mu_);
    return size_t(std::count_if(log_.begin(), log_.end(), [&](const Sent& s) {
      return s.data.size() >= 4 && dataplane::load_le32(s.data.data()) == type;
    }));
  }
  uint16_t next_port() { return port_++; }
  // Delivers a datagram as if sent from `from` (used by the device and to inject replays).
  void deliver(const Packet& data, const Endpoint& from, const Endpoint& to);
  // Delivers a batch at once, as a UDP GSO train arrives (the receiver sees all or none).
  void deliver_batch(const std::vector<Packet>& data, const Endpoint& from, const Endpoint& to);

 private:
  std::mutex mu_;
  std::map<std::string, FakeBind*> binds_;
  std::vector<Sent> log_;
  Tap tap_;
  std::atomic<uint16_t> port_{40000};
};

class FakeBind final : public dataplane::Bind {
 public:
  FakeBind(FakeNet& net, std::string ip) : net_(net), ip_(std::move(ip)) {}
  ~FakeBind() override { close(); }

  int open(uint16_t port) override {
    std::lock_guard lk(mu_);
    if (port == 0) port = net_.next_port();
    if (open_) net_.detach(addr_locked(), this);
    port_ = port;
    open_ = true;
    closed_ = false;
    net_.attach(addr_locked(), this);
    return port;
  }
  void close() override {
    std::lock_guard lk(mu_);
    if (open_) net_.detach(addr_locked(), this);
    open_ = false;
    closed_ = true;
    cv_.notify_all();
  }
  int receivers() const override { return 1; }
  long receive(int, std::span<uint8_t> buf, Endpoint& from) override {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return closed_ || !queue_.empty(); });
    if (closed_) return kClosed;
    auto [data, src] = std::move(queue_.front());
    queue_.pop_front();
    from = src;
    const size_t n = std::min(data.size(), buf.size());
    if (n != 0) std::memcpy(buf.data(), data.data(), n);
    return long(n);
  }
  bool send(std::span<const uint8_t> data, Endpoint& to) override {
    net_.deliver(Packet(data.begin(), data.end()), endpoint(), to);
    return true;
  }
  bool set_fwmark(uint32_t) override { return true; }
  int batch_size() const override { return kMaxBatch; }
  size_t send_batch(std::span<const std::span<const uint8_t>> datagrams, Endpoint& to) override {
    std::vector<Packet> v;
    for (auto d : datagrams) v.emplace_back(d.begin(), d.end());
    net_.deliver_batch(v, endpoint(), to);
    return datagrams.size();
  }
  int try_receive_batch(int i, std::span<RecvMsg> msgs) override {
    {
      std::lock_guard lk(mu_);
      if (!closed_ && queue_.empty()) return kWouldBlock;
    }
    return receive_batch(i, msgs);  // the only receiver: what it saw is still there
  }
  // Returns every datagram queued (up to msgs.size()), so the device sees real batches.
  int receive_batch(int, std::span<RecvMsg> msgs) override {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return closed_ || !queue_.empty(); });
    if (closed_) return int(kClosed);
    int n = 0;
    while (!queue_.empty() && size_t(n) < msgs.size()) {
      auto [data, src] = std::move(queue_.front());
      queue_.pop_front();
      RecvMsg& m = msgs[size_t(n++)];
      m.from = src;
      m.len = std::min(data.size(), m.buf.size());
      if (m.len != 0) std::memcpy(m.buf.data(), data.data(), m.len);
    }
    return n;
  }

  // Moves this socket to a new address (NAT rebinding / roaming).
  void readdress(const std::string& ip, uint16_t port = 0) {
    std::lock_guard lk(mu_);
    if (open_) net_.detach(addr_locked(), this);
    ip_ = ip;
    if (port) port_ = port;
    if (open_) net_.attach(addr_locked(), this);
  }
  Endpoint endpoint() {
    std::lock_guard lk(mu_);
    return *Endpoint::parse(addr_locked());
  }
  void push(Packet data, const Endpoint& from) {
    std::lock_guard lk(mu_);
    queue_.emplace_back(std::move(data), from);
    cv_.notify_all();
  }
  void push_batch(std::vector<Packet> data, const Endpoint& from) {
    std::lock_guard lk(mu_);
    for (auto& d : data) queue_.emplace_back(std::move(d), from);
    cv_.notify_all();
  }

 private:
  std::string addr_locked() const { return ip_ + ":" + std::to_string(port_); }
  FakeNet& net_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string ip_;
  uint16_t port_ = 0;
  bool open_ = false;
  bool closed_ = false;
  std::deque<std::pair<Packet, Endpoint>> queue_;
};

inline void FakeNet::deliver(const Packet& data, const Endpoint& from, const Endpoint& to) {
  FakeBind* dst = nullptr;
  Tap tap;
  {
    std::lock_guard lk(mu_);
    Sent s{data, from, to};
    log_.push_back(s);
    tap = tap_;
    auto it = binds_.find(to.str());
    if (it != binds_.end()) dst = it->second;
  }
  if (tap && !tap({data, from, to})) return;
  if (dst) dst->push(data, from);
}

inline void FakeNet::deliver_batch(const std::vector<Packet>& data, const Endpoint& from,
                                   const Endpoint& to) {
  FakeBind* dst = nullptr;
  Tap tap;
  {
    std::lock_guard lk(mu_);
    for (const Packet& d : data) log_.push_back({d, from, to});
    tap = tap_;
    auto it = binds_.find(to.str());
    if (it != binds_.end()) dst = it->second;
  }
  std::vector<Packet> pass;
  for (const Packet& d : data)
    if (!tap || tap({d, from, to})) pass.push_back(d);
  if (dst) dst->push_batch(std::move(pass), from);
}

// A minimal IPv4 (ICMP echo-like) or IPv6 packet with the given addresses and payload size.
inline Packet make_ipv4(const std::string& src, const std::string& dst, size_t payload,
                        uint8_t fill = 0xab) {
  Packet p(20 + payload, fill);
  p[0] = 0x45;
  p[1] = 0;
  p[2] = uint8_t((20 + payload) >> 8);
  p[3] = uint8_t(20 + payload);
  p[8] = 64;
  p[9] = 1;
  auto s = dataplane::IpAddress::parse(src);
  auto d = dataplane::IpAddress::parse(dst);
  std::memcpy(&p[12], s->bytes.data(), 4);
  std::memcpy(&p[16], d->bytes.data(), 4);
  p[10] = p[11] = 0;
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  p[10] = uint8_t(~sum >> 8);
  p[11] = uint8_t(~sum);
  return p;
}

inline Packet make_ipv6(const std::string& src, const std::string& dst, size_t payload,
                        uint8_t fill = 0xcd) {
  Packet p(40 + payload, fill);
  p[0] = 0x60;
  p[1] = p[2] = p[3] = 0;
  p[4] = uint8_t(payload >> 8);
  p[5] = uint8_t(payload);
  p[6] = 59;  // no next header
  p[7] = 64;
  auto s = dataplane::IpAddress::parse(src);
  auto d = dataplane::IpAddress::parse(dst);
  std::memcpy(&p[8], s->bytes.data(), 16);
  std::memcpy(&p[24], d->bytes.data(), 16);
  return p;
}

}  // namespace meshwg::testing
