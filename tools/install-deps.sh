#!/usr/bin/env bash
# Installs the Debian 12 packages meshwg needs to build and test, and nothing else:
# compilers and build tools, the libraries from DESIGN.md, GoogleTest/Benchmark, clang with
# libFuzzer, and the tools the network-namespace tests drive (wg, wireguard-go, iperf3,
# coturn's turnserver, ...).
# When dpkg already reports every package installed it does nothing (repeated runs are fast);
# otherwise it runs apt-get update + install non-interactively. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  meson ninja-build g++ pkg-config
  libsodium-dev libssl-dev libb2-dev libmnl-dev libminiupnpc-dev libnatpmp-dev
  libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  wireguard-tools wireguard-go iperf3 nftables conntrack coturn
  iproute2 iputils-ping procps psmisc python3 python3-cryptography gnuplot-nox
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || { echo "install-deps: run as root (or install sudo)" >&2; exit 1; }
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" timeout 900 apt-get update
"${SUDO[@]}" timeout 1800 apt-get install -y --no-install-recommends "${missing[@]}"
