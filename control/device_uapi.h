// Binds the UAPI to meshwg's own data plane: applies a parsed set atomically to a
// dataplane::Device and snapshots it for get (wireguard.com/xplatform semantics).
#pragma once

#include "control/uapi_server.h"
#include "dataplane/device.h"

namespace meshwg::control {

class DeviceUapi final : public UapiHandler {
 public:
  explicit DeviceUapi(dataplane::Device& dev) : dev_(dev) {}
  int apply_set(const SetRequest& req) override;
  DeviceSnapshot snapshot() override;

 private:
  dataplane::Device& dev_;
};

}  // namespace meshwg::control
