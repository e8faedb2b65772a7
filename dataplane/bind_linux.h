// Linux UDP bind: one IPv4 and one IPv6 (V6ONLY) socket on the same port, as wireguard-go's
// StdNetBind. IP_PKTINFO / IPV6_RECVPKTINFO record the local address each datagram arrived
// on so replies leave from it ("sticky" source, netns.sh test 16); SO_MARK for fwmark.
// Batches: recvmmsg/sendmmsg, UDP GSO (UDP_SEGMENT, Linux 4.18) for sends and UDP GRO
// (UDP_GRO, Linux 5.0) for receives, each probed per socket at open() and switched off with
// a warning when missing or when the kernel rejects a GSO send (EIO, EMSGSIZE).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "dataplane/bind.h"

struct mmsghdr;

namespace meshwg::dataplane {

struct LinuxBindOptions {
  bool gso = true;  // use UDP_SEGMENT in send_batch() when the kernel has it
  bool gro = true;  // enable UDP_GRO on the sockets when the kernel has it
};

class LinuxBind final : public Bind {
 public:
  explicit LinuxBind(LinuxBindOptions options = {});
  ~LinuxBind() override;
  int open(uint16_t port) override;
  void close() override;
  int receivers() const override { return 2; }  // 0 = IPv4 socket, 1 = IPv6 socket
  // One datagram: receive_batch() with one slot (so a GRO train is split here too).
  long receive(int i, std::span<uint8_t> buf, Endpoint& from) override;
  // One datagram: send_batch() of one.
  [[nodiscard]] bool send(std::span<const uint8_t> data, Endpoint& to) override;
  [[nodiscard]] bool set_fwmark(uint32_t mark) override;
  int batch_size() const override { return kMaxBatch; }
  [[nodiscard]] int receive_batch(int i, std::span<RecvMsg> msgs) override;
  [[nodiscard]] int try_receive_batch(int i, std::span<RecvMsg> msgs) override;
  [[nodiscard]] size_t send_batch(std::span<const std::span<const uint8_t>> datagrams,
                                  Endpoint& to) override;

  // Whether the socket of a family (4 or 6) currently uses GSO / GRO (false before open()).
  [[nodiscard]] bool gso_enabled(int family) const;
  [[nodiscard]] bool gro_enabled(int family) const;
  // Counters (monotonic, relaxed): GSO sends that carried several datagrams, GRO trains split
  // on receive, datagrams dropped on receive because they did not fit the caller's buffer.
  [[nodiscard]] uint64_t gso_sends() const { return gso_sends_.load(std::memory_order_relaxed); }
  [[nodiscard]] uint64_t gro_trains() const { return gro_trains_.load(std::memory_order_relaxed); }
  [[nodiscard]] uint64_t recv_truncated() const {
    return recv_truncated_.load(std::memory_order_relaxed);
  }

  // Fault injection for tests: replaces sendmmsg(2) (e.g. to return EIO for GSO sends, which
  // loopback never does). Set before the bind is used.
  using SendmmsgFn = int (*)(int fd, mmsghdr* msgs, unsigned int n, int flags);
  void set_sendmmsg_for_test(SendmmsgFn fn) { sendmmsg_ = fn; }

 private:
  // Datagrams received but not yet returned (the rest of a GRO train that did not fit the
  // caller's slots), owned by one receiver. segs[head, end) are pending, in arrival order.
  struct Pending {
    struct Seg {
      size_t off;
      size_t len;
      Endpoint from;
    };
    std::vector<uint8_t> data;  // grows to at most kMaxBatch * kMaxDatagramSize
    size_t used = 0;
    std::vector<Seg> segs;
    size_t head = 0;
    bool empty() const { return head == segs.size(); }
    void reset() {
      segs.clear();
      head = 0;
      used = 0;
    }
    void append(const uint8_t* p, size_t len, const Endpoint& from);
  };

  int read_socket(int i, int fd, std::span<RecvMsg> msgs);
  size_t drain(Pending& pend, std::span<RecvMsg> msgs);
  void probe_offloads(int fd, int fam);
  void disable_gso(int fam, int err);

  const LinuxBindOptions options_;
  // Socket replacement without use-after-close: every use of fd4_/fd6_ happens inside a Use
  // (below), counted in users_[generation & 1]. retire() bumps gen_, shuts the old sockets
  // down (which wakes their pollers) and waits until the old generation's users are gone
  // before closing them, so a port is really free once open()/close() return (a re-bind to
  // the previous port must not fail with EADDRINUSE).
  class Use;
  void retire(int old4, int old6);
  std::atomic<uint32_t> gen_{0};
  std::atomic<int> users_[2] = {0, 0};
  std::atomic<int> fd4_{-1};
  std::atomic<int> fd6_{-1};
  int wake_[2] = {-1, -1};  // close() writes here so blocked receivers return
  std::atomic<bool> closed_{false};  // close() is final; open() on an open bind re-binds
  std::mutex open_mu_;
  // Indexed by receiver / family slot: 0 = IPv4, 1 = IPv6.
  std::atomic<bool> gso_[2] = {false, false};
  std::atomic<bool> gso_failed_[2] = {false, false};  // a GSO send failed: stays off on re-open
  std::atomic<bool> gro_[2] = {false, false};
  Pending pending_[2];             // receiver i only
  size_t train_segs_[2] = {1, 1};  // receiver i only: most datagrams per message last read
  std::atomic<uint64_t> gso_sends_{0};
  std::atomic<uint64_t> gro_trains_{0};
  std::atomic<uint64_t> recv_truncated_{0};
  SendmmsgFn sendmmsg_;
};

}  // namespace meshwg::dataplane
