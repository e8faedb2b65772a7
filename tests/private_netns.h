// Tests that change interfaces run in a private network namespace: the whole process moves
// into a fresh one on first use (unshare(CLONE_NEWNET), while gtest is still single-threaded),
// so nothing touches the host and everything vanishes when the process exits. Needs root.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace meshwg::testing {

// Runs a shell command quietly; true when it exits 0.
inline bool sh(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

inline bool write_file(const char* path, const char* text) {
  std::ofstream f(path);
  f << text;
  f.close();
  return f.good();
}

// Enters the private namespace once per process, with lo up and IPv6 DAD off (addresses are
// final at once). Returns "" on success, else why the tests must be skipped.
inline std::string enter_netns() {
  static std::string why = []() -> std::string {
    if (::geteuid() != 0) return "needs root for network namespaces and interface changes";
    if (::unshare(CLONE_NEWNET) != 0)
      return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
    if (!sh("ip -V")) return "ip(8) not found";
    if (!sh("ip link set lo up")) return "cannot bring lo up in the new namespace";
    // /proc/sys/net shows the namespace of the process that opens the file: this one.
    if (!write_file("/proc/sys/net/ipv6/conf/all/accept_dad", "0") ||
        !write_file("/proc/sys/net/ipv6/conf/default/accept_dad", "0"))
      return "IPv6 is not available (cannot set accept_dad)";
    return "";
  }();
  return why;
}

// Creates a link that is down: a dummy, or a veth (peer NAMEp, up, so NAME has carrier once
// up) where the kernel has no dummy driver. Returns "dummy", "veth", or "" on failure.
inline std::string make_link(const std::string& name) {
  if (sh("ip link add " + name + " type dummy")) return "dummy";
  if (sh("ip link add " + name + " type veth peer name " + name + "p") &&
      sh("ip link set " + name + "p up"))
    return "veth";
  return "";
}

}  // namespace meshwg::testing
