// The outgoing byte stream of a non-blocking TCP socket: frames are appended at the back and
// written from the front, within a byte limit. The relay's server (one per client) and its
// client both write through it, so a burst of frames leaves in one send().
//
// Threads: none; one owner thread calls everything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

namespace meshwg::control {

class SendQueue {
 public:
  // limit: queued bytes at most (append refuses beyond it); keep: an emptied buffer with more
  // capacity than this is freed, so an idle connection does not hold a burst's memory.
  explicit SendQueue(size_t limit, size_t keep = SIZE_MAX) : limit_(limit), keep_(keep) {}

  size_t size() const { return buf_.size() - off_; }
  bool empty() const { return size() == 0; }

  // Appends the parts as one unit. False (nothing appended) when they would pass the limit.
  [[nodiscard]] bool append(std::initializer_list<std::span<const uint8_t>> parts);
  // Appends regardless of the limit: a small control frame that must not be lost.
  void push(std::span<const uint8_t> frame);
  // Writes from the front what the socket takes now (at most kMaxWriteTries send() calls).
  // False on a fatal socket error, with errno set; EAGAIN and EINTR are not errors.
  [[nodiscard]] bool write_to(int fd);
  void clear();

  static constexpr int kMaxWriteTries = 64;

 private:
  // Room for `more` bytes at the back: drops the written prefix before the buffer would grow,
  // and grows it at most to the limit (unless one push needs more).
  void make_room(size_t more);

  std::vector<uint8_t> buf_;  // queued bytes are buf_[off_, size)
  size_t off_ = 0;
  size_t limit_;
  size_t keep_;
};

}  // namespace meshwg::control
