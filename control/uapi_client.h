// The client side of the UAPI socket (wireguard.com/xplatform): what wg(8) does to read a
// device, for `meshwg status`. Works against meshwg and wireguard-go alike.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace meshwg::control {

// Directory of the UAPI sockets, as wireguard-go and wg(8) use it.
inline constexpr const char* kUapiSocketDir = "/var/run/wireguard";

// Sends "get=1" to the socket at path and returns the reply body (up to, not including, the
// empty line that ends it), or nullopt with a message in error. Bounded: 2 s per read or
// write, at most 64 MiB.
std::optional<std::string> uapi_get(const std::string& path, std::string& error);

// The control plane's status document of a mesh-mode interface: connects to the unix
// socket at path (DIR/IFNAME.mesh) and reads until the server closes. Bounded: 2 s per read,
// at most 1 MiB. nullopt with a message in error (ENOENT when no control plane runs).
std::optional<std::string> read_mesh_status(const std::string& path, std::string& error,
                                            int* sys_errno = nullptr);

// Interface names with a socket in dir ("NAME.sock"), sorted.
std::vector<std::string> uapi_interfaces(const std::string& dir = kUapiSocketDir);

}  // namespace meshwg::control
