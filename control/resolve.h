// Name resolution for the programs' HOST:PORT arguments and config endpoints (getaddrinfo,
// RFC 3493), done by the control plane at start-up: the config parsers do no DNS.
#pragma once

#include <string>
#include <vector>

#include "control/mesh_config.h"
#include "dataplane/ip.h"

namespace meshwg::control {

// Splits "HOST:PORT" / "[IPV6]:PORT" (numeric port 1-65535) into h. False with a message in
// err.
[[nodiscard]] bool split_host_port(const std::string& s, HostPort& h, std::string& err);

// The addresses of h, in getaddrinfo's order, at most 8; an IP literal gives itself. Empty
// with a message in err when the name does not resolve.
std::vector<dataplane::Endpoint> resolve(const HostPort& h, std::string& err);

}  // namespace meshwg::control
