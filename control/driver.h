// How the control plane configures a WireGuard data plane: with the two operations of the
// standard configuration interface only (wireguard.com/xplatform set and get; DESIGN.md
// rule 3), so another implementation behind a UAPI socket could take meshwg's place.
// ChannelDriver reaches meshwg's own device through its lock-free config channel.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "control/uapi.h"
#include "dataplane/config.h"

namespace meshwg::control {

class WgDriver {
 public:
  virtual ~WgDriver() = default;
  // 0 or a positive errno (ETIMEDOUT: the device did not answer in time; EAGAIN: its
  // command queue is full).
  [[nodiscard]] virtual int set(const SetRequest& req) = 0;
  [[nodiscard]] virtual std::optional<DeviceSnapshot> get() = 0;
};

// Control thread only (the channel's single producer and consumer). Blocks for at most
// timeout per call; a reply that arrives after its caller gave up is discarded.
class ChannelDriver final : public WgDriver {
 public:
  explicit ChannelDriver(dataplane::ConfigChannel& ch,
                         std::chrono::milliseconds timeout = std::chrono::seconds(2))
      : ch_(ch), timeout_(timeout) {}
  int set(const SetRequest& req) override;
  std::optional<DeviceSnapshot> get() override;

 private:
  std::optional<dataplane::ConfigReply> call(dataplane::ConfigCommand&& c, int& err);
  dataplane::ConfigChannel& ch_;
  const std::chrono::milliseconds timeout_;
  uint64_t next_id_ = 1;
};

}  // namespace meshwg::control
