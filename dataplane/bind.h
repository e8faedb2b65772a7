// The UDP side as the device sees it (wireguard-go's conn.Bind, reduced): open on a port,
// receive datagrams with their source, send datagrams to an endpoint, one at a time or in
// batches. The Linux implementation is bind_linux.h (recvmmsg/sendmmsg, UDP GSO/GRO); tests
// use an in-memory pair (tests/dataplane/fakes.h), which implements only the single-datagram
// methods and gets the batch methods from the defaults below (loops over receive()/send()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/ip.h"

namespace meshwg::dataplane {

class Bind {
 public:
  static constexpr long kClosed = -2;
  // Most datagrams one receive_batch() fills; the batch size of the Linux bind.
  static constexpr int kMaxBatch = 64;
  // A receive buffer of this size never truncates: it holds the largest UDP payload and the
  // largest GRO-coalesced train (whose UDP length field caps it at 65535 bytes).
  static constexpr size_t kMaxDatagramSize = 65535;

  // One slot of a receive batch.
  struct RecvMsg {
    std::span<uint8_t> buf;  // in: caller-owned storage; the bind never re-points or resizes it
    size_t len = 0;          // out: datagram length in buf (0 is a valid, empty datagram)
    Endpoint from;           // out: the source; from.local = the address it arrived on
  };

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

  // How many slots a receive loop should offer receive_batch(), and a good number of
  // datagrams to hand send_batch() at once: 1 for binds without batching, kMaxBatch for the
  // Linux bind. Fixed for the bind's life, so callers may size their arrays once.
  virtual int batch_size() const { return 1; }

  // Blocks like receive() until at least one datagram has arrived on receiver i, then fills
  // msgs[0, n) in arrival order and returns n (1 <= n <= min(msgs.size(), kMaxBatch)); or
  // kClosed once closed; or -1 on a transient error (the caller retries; also when
  // msgs is empty or i is out of range). Slots at and past n are left untouched.
  //
  // - Every datagram is returned separately: a GRO-coalesced train is split back into its
  //   datagrams, each copied into its own slot, with the same `from`. Datagrams that do not
  //   fit the caller's slots stay inside the bind and come first in the next call (on the
  //   same receiver), so none is lost to a short msgs span.
  // - Give every buf kMaxDatagramSize bytes: then datagrams are received straight into the
  //   caller's buffers. With smaller buffers it still works but a GRO receiver takes one
  //   train per syscall through a private buffer, and a datagram larger than its slot's
  //   buffer is dropped (as receive() drops one larger than buf).
  // - Buffers of different slots must not overlap. Calls for one i must not run
  //   concurrently with each other or with receive(i) (one receive loop per receiver);
  //   different receivers may run in parallel.
  [[nodiscard]] virtual int receive_batch(int i, std::span<RecvMsg> msgs) {
    if (msgs.empty()) return -1;
    const long n = receive(i, msgs[0].buf, msgs[0].from);
    if (n < 0) return int(n);
    msgs[0].len = size_t(n);
    return 1;
  }

  // As receive_batch(), but returns kWouldBlock at once when nothing is waiting. The default
  // blocks, which only means the caller never sees "nothing waiting".
  static constexpr int kWouldBlock = -3;
  [[nodiscard]] virtual int try_receive_batch(int i, std::span<RecvMsg> msgs) {
    return receive_batch(i, msgs);
  }

  // Sends datagrams, in order, all to `to` (any count; batch_size() at a time is ideal).
  // Returns k: datagrams[0, k) were handed to the kernel; datagrams[k, end) were not (the
  // caller counts them as drops and their bytes as unsent). May clear to.local like send().
  // With GSO, runs of equal-size datagrams (the last of a run may be shorter) leave as one
  // UDP_SEGMENT send; that changes the syscall count, never the datagrams on the wire.
  // Safe to call from several threads at once.
  [[nodiscard]] virtual size_t send_batch(std::span<const std::span<const uint8_t>> datagrams,
                                          Endpoint& to) {
    size_t sent = 0;
    for (const std::span<const uint8_t> d : datagrams) {
      if (!send(d, to)) break;
      ++sent;
    }
    return sent;
  }
};

}  // namespace meshwg::dataplane
