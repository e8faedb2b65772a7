// Linux TUN device (/dev/net/tun, IFF_TUN | IFF_NO_PI, optionally IFF_VNET_HDR with TSO/USO
// offloads) and its MTU (SIOCSIFMTU/SIOCGIFMTU).
#pragma once

#include <memory>
#include <string>

#include "tun/tun.h"

namespace meshwg::tun {

class LinuxTun final : public Tun {
 public:
  // Creates (or attaches to) the TUN interface ifname. Returns nullptr and sets err on failure.
  // With offload, asks for IFF_VNET_HDR and TUNSETOFFLOAD (checksum, TSO4/6, and USO4/6 where
  // the kernel has them, 6.2+); if the kernel refuses, the TUN works without offloads.
  static std::unique_ptr<LinuxTun> create(const std::string& ifname, int mtu, std::string& err,
                                          bool offload = false);
  ~LinuxTun() override;

  long read(std::span<uint8_t> buf) override;
  long try_read(std::span<uint8_t> buf) override;
  [[nodiscard]] bool write(std::span<const uint8_t> pkt) override;
  int mtu() const override;  // queried from the kernel (the user may change it with ip link)
  void close() override;
  [[nodiscard]] bool set_mtu(int mtu);
  bool exists() const;       // false once the interface was deleted (the daemon exits then)
  const std::string& name() const { return name_; }
  int fd() const { return fd_; }
  bool vnet_hdr() const override { return vnet_hdr_; }
  bool uso() const override { return uso_; }  // the kernel accepted USO4/6

 private:
  LinuxTun() = default;
  int fd_ = -1;
  int wake_[2] = {-1, -1};
  std::string name_;
  bool vnet_hdr_ = false;
  bool uso_ = false;
};

}  // namespace meshwg::tun
