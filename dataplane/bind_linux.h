// Linux UDP bind: one IPv4 and one IPv6 (V6ONLY) socket on the same port, as wireguard-go's
// StdNetBind. IP_PKTINFO / IPV6_RECVPKTINFO record the local address each datagram arrived
// on so replies leave from it ("sticky" source, netns.sh test 16); SO_MARK for fwmark.
#pragma once

#include <atomic>
#include <mutex>

#include "dataplane/bind.h"

namespace meshwg::dataplane {

class LinuxBind final : public Bind {
 public:
  LinuxBind();
  ~LinuxBind() override;
  int open(uint16_t port) override;
  void close() override;
  int receivers() const override { return 2; }
  long receive(int i, std::span<uint8_t> buf, Endpoint& from) override;
  [[nodiscard]] bool send(std::span<const uint8_t> data, Endpoint& to) override;
  [[nodiscard]] bool set_fwmark(uint32_t mark) override;

 private:
  std::atomic<int> fd4_{-1};
  std::atomic<int> fd6_{-1};
  int wake_[2] = {-1, -1};  // close() writes here so blocked receivers return
  std::atomic<bool> closed_{false};  // close() is final; open() on an open bind re-binds
  std::mutex open_mu_;
};

}  // namespace meshwg::dataplane
