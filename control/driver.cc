// ChannelDriver: a blocking call over the device's config channel (dataplane/config.h).
#include "control/driver.h"

#include <poll.h>

#include <cerrno>

namespace meshwg::control {

std::optional<dataplane::ConfigReply> ChannelDriver::call(dataplane::ConfigCommand&& c,
                                                          int& err) {
  const uint64_t id = c.id = next_id_++;
  err = EAGAIN;
  if (!ch_.submit(std::move(c))) return std::nullopt;
  err = ETIMEDOUT;
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    dataplane::ConfigReply r;
    while (ch_.take_reply(r))
      if (r.id == id) return r;  // older ids belong to calls that timed out
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{ch_.reply_fd(), POLLIN, 0};
    (void)::poll(&p, 1, int(std::min<int64_t>(left.count() + 1, 1000)));
  }
}

int ChannelDriver::set(const SetRequest& req) {
  int err = 0;
  auto r = call(dataplane::ConfigCommand{.id = 0, .set = req}, err);
  return r ? r->error : err;
}

std::optional<DeviceSnapshot> ChannelDriver::get() {
  int err = 0;
  auto r = call(dataplane::ConfigCommand{.id = 0, .set = std::nullopt}, err);
  if (!r) return std::nullopt;
  return std::move(r->snapshot);
}

}  // namespace meshwg::control
