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
  // Writes one IP packet. Returns false on error (the caller counts a drop).
  [[nodiscard]] virtual bool write(std::span<const uint8_t> pkt) = 0;
  virtual int mtu() const = 0;
  virtual void close() = 0;  // unblocks read()
};

}  // namespace meshwg::tun
