// Linux TUN device (/dev/net/tun, IFF_TUN | IFF_NO_PI) and its MTU (SIOCSIFMTU/SIOCGIFMTU).
#pragma once

#include <memory>
#include <string>

#include "tun/tun.h"

namespace meshwg::tun {

class LinuxTun final : public Tun {
 public:
  // Creates (or attaches to) the TUN interface ifname. Returns nullptr and sets err on failure.
  static std::unique_ptr<LinuxTun> create(const std::string& ifname, int mtu, std::string& err);
  ~LinuxTun() override;

  long read(std::span<uint8_t> buf) override;
  [[nodiscard]] bool write(std::span<const uint8_t> pkt) override;
  int mtu() const override;  // queried from the kernel (the user may change it with ip link)
  void close() override;
  [[nodiscard]] bool set_mtu(int mtu);
  bool exists() const;       // false once the interface was deleted (the daemon exits then)
  const std::string& name() const { return name_; }
  int fd() const { return fd_; }

 private:
  LinuxTun() = default;
  int fd_ = -1;
  int wake_[2] = {-1, -1};
  std::string name_;
};

}  // namespace meshwg::tun
