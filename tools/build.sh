#!/usr/bin/env bash
# Configures (once) and builds meshwg with meson/ninja.
#   build/       release build: the daemon, unit tests, benchmarks (always)
#   build-asan/  --asan: debugoptimized with AddressSanitizer + UBSan, tests, no benchmarks
#   build-fuzz/  --fuzz: clang, libFuzzer targets only, with ASan + UBSan
# Usage: bash tools/build.sh [--asan] [--fuzz] [--all]
# An existing build dir keeps its configuration (meson regenerates by itself when a
# meson.build changes); delete the dir to reconfigure from scratch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

asan=0
fuzz=0
for arg in "$@"; do
  case $arg in
    --asan) asan=1 ;;
    --fuzz) fuzz=1 ;;
    --all) asan=1; fuzz=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

# setup_and_build DIR [meson options...]: `meson setup` only if DIR is not configured yet.
setup_and_build() {
  local dir=$1
  shift
  if [[ ! -f $dir/build.ninja ]]; then
    echo "build.sh: configuring $dir"
    meson setup "$dir" "$@"
  fi
  echo "build.sh: building $dir"
  ninja -C "$dir"
}

setup_and_build build
if ((asan)); then
  setup_and_build build-asan -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized -Dbenchmarks=false
fi
if ((fuzz)); then
  # libFuzzer needs clang; debugoptimized keeps assertions, which are what fuzzing looks for.
  CC=clang CXX=clang++ setup_and_build build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dbuildtype=debugoptimized -Dtests=false -Dbenchmarks=false
fi
