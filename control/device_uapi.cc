// Binds the UAPI server to meshwg's own data plane: a set or get is the device's own
// operation (dataplane/config.cc), performed on the UAPI thread.
#include "control/device_uapi.h"

namespace meshwg::control {

int DeviceUapi::apply_set(const SetRequest& req) { return dev_.apply_set(req); }

DeviceSnapshot DeviceUapi::snapshot() { return dev_.snapshot(); }

}  // namespace meshwg::control
