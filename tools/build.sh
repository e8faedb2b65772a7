#!/usr/bin/env bash
# Configures (once) and builds meshwg with meson/ninja.
#   build/       release build: the daemon, unit tests, benchmarks (always)
#   build-asan/  --asan: debugoptimized with AddressSanitizer + UBSan, tests, no benchmarks
#   build-fuzz/  --fuzz: clang, libFuzzer targets only, with ASan + UBSan
#   build-tsan/  --tsan: ThreadSanitizer, only the tests of threaded code (tests/tsan_targets)
# Usage: bash tools/build.sh [--asan] [--fuzz] [--tsan] [--all]
# An existing build dir keeps its configuration (meson regenerates by itself when a
# meson.build changes); delete the dir to reconfigure from scratch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

asan=0
fuzz=0
tsan=0
for arg in "$@"; do
  case $arg in
    --asan) asan=1 ;;
    --fuzz) fuzz=1 ;;
    --tsan) tsan=1 ;;
    --all) asan=1; fuzz=1; tsan=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
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
if ((tsan)); then
  if [[ ! -f build-tsan/build.ninja ]]; then
    echo "build.sh: configuring build-tsan"
    meson setup build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debugoptimized \
      -Dbenchmarks=false
  fi
  targets=()
  while read -r t; do
    [[ -z $t || $t == \#* ]] || targets+=("tests/$t")
  done <tests/tsan_targets
  echo "build.sh: building build-tsan (${targets[*]})"
  ninja -C build-tsan "${targets[@]}"
fi
