// The TUN side as the device sees it: read one IP packet, write one IP packet. The Linux
// implementation is tun_linux.h; tests use an in-memory fake.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace meshwg::tun {

class Tun {
 public:
  virtual ~Tun() = default;
  // Blocks until a packet is read or close() is called. Returns bytes read, 0 when closed,
  // -1 on a transient error (the caller retries).
  virtual long read(std::span<uint8_t> buf) = 0;
  // Like read(), but returns kWouldBlock at once when no packet is waiting. The default
  // blocks (in-memory fakes), which only means the caller never sees "nothing waiting".
  static constexpr long kWouldBlock = -3;
  virtual long try_read(std::span<uint8_t> buf) { return read(buf); }
  // Writes one IP packet. Returns false on error (the caller counts a drop).
  [[nodiscard]] virtual bool write(std::span<const uint8_t> pkt) = 0;
  virtual int mtu() const = 0;
  virtual void close() = 0;  // unblocks read()
  // When true, every read() starts with a 10-byte virtio_net_hdr and may return a TSO/USO
  // super-packet, and every write() must start with one (see tun/offload.h).
  virtual bool vnet_hdr() const { return false; }
  // With vnet_hdr(): the kernel also accepts UDP GSO (USO) packets on write (Linux 6.2+).
  virtual bool uso() const { return false; }
};

}  // namespace meshwg::tun
