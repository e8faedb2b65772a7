// Port mappings for endpoint gathering: asks the gateway to forward a public UDP port to ours,
// with NAT-PMP (RFC 6886, through libnatpmp) and UPnP-IGD (WANIPConnection:1 AddPortMapping,
// through libminiupnpc), each bounded by one deadline instead of the libraries' long retries.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/ip.h"

namespace meshwg::control {

enum class PortMapKind : uint8_t { kUpnp, kNatPmp };
// "upnp" or "nat-pmp": the kinds `meshwg status` prints.
[[nodiscard]] const char* portmap_kind_name(PortMapKind k);

struct PortMapping {
  PortMapKind kind = PortMapKind::kNatPmp;
  dataplane::Endpoint external;  // the public IPv4:port the gateway forwards to internal_port
  uint16_t internal_port = 0;
  uint32_t lifetime_s = 0;       // granted lifetime; 0 = permanent (UPnP only)
  // Where the mapping lives, so unmap_udp_port() asks the same gateway that granted it.
  dataplane::IpAddress natpmp_gateway;  // kNatPmp
  std::string upnp_control_url;         // kUpnp: the WANIPConnection control URL
  std::string upnp_service_type;        // kUpnp: e.g. urn:schemas-upnp-org:service:WANIPConnection:1
};

struct PortMapOptions {
  // Per call, both protocols together: a gateway that does not answer is given up at the
  // deadline. SSDP discovery alone waits one second (libminiupnpc's minimum, MX: 1).
  std::chrono::milliseconds timeout{1500};
  uint32_t lifetime_s = 7200;  // requested; RFC 6886 §3.3 recommends two hours
  std::string description = "meshwg";  // UPnP NewPortMappingDescription
  // NAT-PMP gateway (IPv4); unset = the default route's gateway from /proc/net/route.
  std::optional<dataplane::IpAddress> natpmp_gateway;
  // UPnP root description URL ("http://192.168.1.1:5000/rootDesc.xml"); set = no SSDP
  // discovery, the IGD is taken from this URL (tests, or a gateway named by the user).
  std::string upnp_root_url;
  bool upnp = true, natpmp = true;
};

// Asks NAT-PMP and UPnP-IGD at once to map UDP internal_port (NAT-PMP on the calling thread,
// UPnP on a thread of its own) and returns every mapping obtained: 0, 1 or 2, NAT-PMP first.
// Blocks for at most about opt.timeout. A UPnP exchange still inside libminiupnpc at the
// deadline (an IGD that accepts HTTP and never answers; SSDP's one second wait when
// opt.timeout is shorter) is left to finish on its thread, and a mapping it obtains late is
// deleted again there, since nobody would refresh or remove it. Never throws; failures are
// logged at debug level.
[[nodiscard]] std::vector<PortMapping> map_udp_port(uint16_t internal_port,
                                                    const PortMapOptions& opt);

// Removes a mapping obtained earlier: NAT-PMP a request with lifetime 0 and suggested port 0
// (RFC 6886 §3.4) to m.natpmp_gateway, UPnP DeletePortMapping at m.upnp_control_url. Bounded by
// opt.timeout in the same way (a late UPnP delete finishes on its own thread). Never throws.
void unmap_udp_port(const PortMapping& m, const PortMapOptions& opt);

// UPnP exchanges still running on their own threads, including ones given up at a deadline.
// Tests wait for 0 before they take their fake gateways down or the process exits.
[[nodiscard]] unsigned portmap_threads_running();

}  // namespace meshwg::control
