// A bounded outgoing byte queue for a non-blocking socket (see send_queue.h).
#include "control/send_queue.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace meshwg::control {

void SendQueue::make_room(size_t more) {
  if (buf_.size() + more <= buf_.capacity()) return;
  if (off_ > 0) {
    buf_.erase(buf_.begin(), buf_.begin() + ptrdiff_t(off_));
    off_ = 0;
  }
  const size_t need = buf_.size() + more;
  if (need > buf_.capacity()) buf_.reserve(std::max(need, std::min(limit_, 2 * buf_.capacity())));
}

bool SendQueue::append(std::initializer_list<std::span<const uint8_t>> parts) {
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  if (size() + total > limit_) return false;
  make_room(total);
  for (const auto& p : parts) buf_.insert(buf_.end(), p.begin(), p.end());
  return true;
}

void SendQueue::push(std::span<const uint8_t> frame) {
  make_room(frame.size());
  buf_.insert(buf_.end(), frame.begin(), frame.end());
}

bool SendQueue::write_to(int fd) {
  for (int i = 0; i < kMaxWriteTries && !empty(); ++i) {
    const ssize_t n = ::send(fd, buf_.data() + off_, size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return false;
    }
    off_ += size_t(n);
  }
  if (empty()) clear();
  return true;
}

void SendQueue::clear() {
  buf_.clear();
  off_ = 0;
  if (buf_.capacity() > keep_) std::vector<uint8_t>().swap(buf_);
}

}  // namespace meshwg::control
