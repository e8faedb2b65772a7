// The UDP side as the device sees it (wireguard-go's conn.Bind, reduced): open on a port,
// receive one datagram with its source, send one datagram to an endpoint. The Linux
// implementation is bind_linux.h; tests use an in-memory pair.
#pragma once

#include <cstdint>
#include <span>

#include "dataplane/ip.h"

namespace meshwg::dataplane {

class Bind {
 public:
  static constexpr long kClosed = -2;
  virtual ~Bind() = default;
  // Opens the sockets on port (0 = any), replacing open ones only on success. Returns the
  // bound port, or -errno.
  virtual int open(uint16_t port) = 0;
  // Closes the sockets for good and unblocks every receive() (which then returns kClosed).
  virtual void close() = 0;
  // How many receive loops the device should run (one per socket); receive(i, ...) for each.
  virtual int receivers() const = 0;
  // Blocks until a datagram arrives on receiver i. Returns its length (0 is a valid, empty
  // datagram), kClosed once closed, -1 on a transient error (the caller retries).
  // from.local is the address it arrived on.
  virtual long receive(int i, std::span<uint8_t> buf, Endpoint& from) = 0;
  // Sends one datagram. Returns false on failure (the caller counts a drop). May clear
  // to.local when the sticky source address no longer exists.
  [[nodiscard]] virtual bool send(std::span<const uint8_t> data, Endpoint& to) = 0;
  // SO_MARK on every socket (0 clears). Returns false on failure.
  [[nodiscard]] virtual bool set_fwmark(uint32_t mark) = 0;
};

}  // namespace meshwg::dataplane
