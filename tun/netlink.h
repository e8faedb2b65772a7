// Interface setup and address listing over rtnetlink (RFC 3549; messages and attributes as in
// linux/rtnetlink.h, linux/if_addr.h, linux/if_link.h), with libmnl building and parsing the
// messages: link MTU and up/down, IPv4/IPv6 addresses and link-scope routes, address and link
// dumps for endpoint gathering, and a change monitor on the rtnetlink multicast groups.
//
// Errors: every int-returning function returns 0 (or a non-negative result) on success and a
// negative errno on failure; netlink_strerror() turns one into text. Nothing throws.
// Every request carries NLM_F_ACK and returns the errno of the kernel's ack, except dumps,
// which the kernel never acks: they return the errno their NLMSG_DONE carries. Bounds: one
// reply is at most 4096 datagrams / 65536 messages. Replies must come from the kernel (port 0)
// and carry the request's sequence number and our port id; a truncated or malformed reply is
// rejected (-EMSGSIZE / -EBADMSG / -EPROTO), never parsed. A reply that does not finish within
// kReplyTimeoutMs gives -ETIMEDOUT.
//
// Threads: the free functions open a private netlink socket per call and may be called from
// any thread. A NetlinkMonitor is used by one thread (the control-plane thread's poll loop).
// Everything acts on the network namespace of the calling thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/ip.h"

struct mnl_socket;  // libmnl; only the .cc includes <libmnl/libmnl.h>

namespace meshwg::tun {

inline constexpr int kReplyTimeoutMs = 2000;  // per request, for the whole reply

// "Invalid argument" etc. for -EINVAL; "success" for 0 and other non-negative values.
std::string netlink_strerror(int err);

// The index of interface ifname (> 0), -ENODEV if there is none, -EINVAL if the name is empty
// or longer than IFNAMSIZ - 1.
[[nodiscard]] int link_index(std::string_view ifname);

struct LinkInfo {
  int ifindex = 0;
  std::string name;
  uint32_t flags = 0;  // IFF_* (IFF_UP administrative, IFF_RUNNING operational, IFF_LOOPBACK)
  uint32_t mtu = 0;
};

// Reads one link (RTM_GETLINK). -ENODEV if ifindex does not exist, -EINVAL if ifindex <= 0.
[[nodiscard]] int get_link(int ifindex, LinkInfo& out);
// Dumps all links of the namespace into out (replacing its contents).
[[nodiscard]] int list_links(std::vector<LinkInfo>& out);

// Sets the MTU (RTM_SETLINK, IFLA_MTU). -EINVAL for ifindex <= 0, an mtu above INT_MAX, or an
// mtu outside the device's [min_mtu, max_mtu]; -ENODEV if ifindex does not exist. Note that
// the kernel removes every IPv6 address of a link whose MTU drops below 1280.
[[nodiscard]] int set_link_mtu(int ifindex, uint32_t mtu);
// Sets or clears IFF_UP (RTM_SETLINK, ifi_change = IFF_UP). -EINVAL / -ENODEV as above.
[[nodiscard]] int set_link_up(int ifindex, bool up);

// Adds address p.addr with prefix length p.cidr to the link (RTM_NEWADDR, NLM_F_CREATE |
// NLM_F_EXCL). p.addr is the interface's own address, host bits included: build p from
// IpAddress::parse and a length, not from IpPrefix::parse, which masks the host bits off.
// IPv4 sends IFA_LOCAL and IFA_ADDRESS (no peer, no broadcast); IPv6 sets IFA_F_NODAD so the
// address is usable at once. Scope is global (universe).
// Returns -EEXIST if the address is already there (callers that only want it present treat
// that as success), -EINVAL for a family other than 4/6, a cidr above 32/128 or
// ifindex <= 0, -ENODEV if the link does not exist.
[[nodiscard]] int add_address(int ifindex, const dataplane::IpPrefix& p);
// Removes it (RTM_DELADDR). -EADDRNOTAVAIL if the link has no such address/prefix length;
// -EINVAL / -ENODEV as for add_address.
[[nodiscard]] int del_address(int ifindex, const dataplane::IpPrefix& p);

// Adds a route to dst through the link, no gateway (RTM_NEWROUTE: main table, scope link,
// protocol static, unicast, NLM_F_CREATE | NLM_F_EXCL). dst must be canonical (no host bits
// set beyond cidr; IpPrefix::parse gives that). Returns -EEXIST if the same route exists,
// -EINVAL for a bad family/cidr, host bits or ifindex <= 0, -ENODEV if the link does not
// exist, -ENETDOWN if it is not up (bring the link up first).
[[nodiscard]] int add_route(int ifindex, const dataplane::IpPrefix& dst);
// Removes the main-table route to dst through the link, whatever its protocol (RTM_DELROUTE).
// -ESRCH if there is none, which is also what a nonexistent link gives (the kernel resolves
// the link only when adding); -EINVAL as above.
[[nodiscard]] int del_route(int ifindex, const dataplane::IpPrefix& dst);

struct LinkAddress {
  int ifindex = 0;
  std::string ifname;            // the link's name ("" if the link vanished between dumps)
  dataplane::IpAddress address;  // IFA_LOCAL if present (the local end), else IFA_ADDRESS
  uint8_t prefixlen = 0;
  uint32_t flags = 0;            // IFA_F_* (IFA_FLAGS when the kernel sends it, else ifa_flags)
  uint8_t scope = 0;             // RT_SCOPE_* (0 universe, 200 site, 253 link, 254 host)
  uint32_t link_flags = 0;       // the link's IFF_* at listing time (0 if the link vanished)
};

// Dumps the IPv4 and IPv6 addresses of every link (RTM_GETADDR, then RTM_GETLINK for names and
// link flags) into out, replacing its contents. The two dumps are not atomic: an address whose
// link appears or vanishes in between gets ifname "" and link_flags 0 (so it is not
// gatherable); the NetlinkMonitor reports that change, and the caller lists again.
// A dump the kernel interrupts (NLM_F_DUMP_INTR, a change during the dump) is retried a few
// times, then -EINTR is returned.
[[nodiscard]] int list_addresses(std::vector<LinkAddress>& out);

// Whether a is worth offering to peers as a local NAT-traversal candidate. False for: a family
// other than 4/6; unspecified, loopback (127/8, ::1) or multicast addresses; IPv4 169.254/16
// and IPv6 fe80::/10 link-local; host or nowhere scope; IPv6 addresses that are tentative,
// failed DAD or deprecated; addresses on exclude_ifindex (the tunnel interface; pass 0 to
// exclude nothing); and links that are loopback, not IFF_UP, or not IFF_RUNNING (no carrier).
[[nodiscard]] bool gatherable(const LinkAddress& a, int exclude_ifindex);

// A socket on the rtnetlink multicast groups for links and IPv4/IPv6 addresses (and routes if
// asked), for the control-plane thread's poll loop: poll fd() for POLLIN, then call
// drain_changed(); when it returns true, list_addresses() again. Not copyable; movable.
class NetlinkMonitor {
 public:
  NetlinkMonitor() = default;
  ~NetlinkMonitor();
  NetlinkMonitor(NetlinkMonitor&& o) noexcept;
  NetlinkMonitor& operator=(NetlinkMonitor&& o) noexcept;
  NetlinkMonitor(const NetlinkMonitor&) = delete;
  NetlinkMonitor& operator=(const NetlinkMonitor&) = delete;

  // Opens the (non-blocking) socket and joins RTMGRP_LINK | RTMGRP_IPV4_IFADDR |
  // RTMGRP_IPV6_IFADDR, plus RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE with watch_routes.
  // 0 or -errno. Events that happen before open() are not reported: list after opening.
  [[nodiscard]] int open(bool watch_routes = false);
  void close();
  int fd() const;  // -1 when not open

  // Reads every pending notification without blocking and returns whether any link, address
  // (or, if watched, route) change was among them. A receive-queue overrun (ENOBUFS: events
  // were lost) and a truncated datagram count as a change. Messages not sent by the kernel are
  // ignored. Reads at most kMaxDrain datagrams per call; if more remain it returns true and the
  // fd stays readable. False when not open.
  bool drain_changed();
  uint64_t overruns() const { return overruns_; }  // ENOBUFS seen since open()

  static constexpr int kMaxDrain = 256;

 private:
  ::mnl_socket* nl_ = nullptr;
  bool routes_ = false;
  uint64_t overruns_ = 0;
  std::vector<uint8_t> buf_;  // one notification datagram
};

}  // namespace meshwg::tun
