#!/usr/bin/env bash
# Runs every test meshwg has, as root on Debian 12, and ends with one line
# "N passed, M failed" counting the stages below; exits non-zero if any failed.
#
# Stages, in order (a failed stage does not stop the later ones):
#   deps                    tools/install-deps.sh
#   build, build-asan, build-fuzz   tools/build.sh --all (one stage per build dir)
#   unit                    meson test --suite unit in build/
#   unit-asan               the same in build-asan/ (leak detection on, UBSan fatal)
#   unit-tsan               the threaded tests (tests/tsan_targets) under TSan
#   fuzz:<target>           each build-fuzz/tests/fuzz/*_fuzz for $FUZZ_SECONDS (default 30) on a
#                           copy of its corpus in a temp dir, so the repository stays clean
#   netns:<script>          each tests/netns/*.sh (lib.sh excepted) against build/tools/meshwg
#
# Budget: about 15-25 minutes on 2 cores with warm package caches; each stage has a timeout.
# Logs of every stage are kept in a temp dir whose path is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
LOGDIR=$(mktemp -d /tmp/meshwg-test.XXXXXX)
RESULTS=()
PASSED=0
FAILED=0

# stage NAME TIMEOUT_S CMD...: runs CMD with its output shown and logged; records the result.
stage() {
  local name=$1 limit=$2 start rc=0 logf
  shift 2
  logf="$LOGDIR/$(tr '/: ' '___' <<<"$name").log"
  echo
  echo "==== $name"
  start=$(date +%s)
  set +e
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$logf"
  rc=${PIPESTATUS[0]}
  set -e
  local secs=$(($(date +%s) - start))
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    RESULTS+=("PASS  $name (${secs}s)")
  else
    FAILED=$((FAILED + 1))
    ((rc == 124)) && rc="timeout after ${limit}s"
    RESULTS+=("FAIL  $name (${secs}s, exit $rc; log $logf)")
  fi
}

# not_run NAME WHY: a stage that could not run because what it needs failed.
not_run() {
  FAILED=$((FAILED + 1))
  RESULTS+=("FAIL  $1 (not run: $2)")
}

stage deps 2700 bash tools/install-deps.sh

built=()
stage build 1200 bash tools/build.sh
[[ ${RESULTS[-1]} == PASS* ]] && built+=(build)
stage build-asan 1500 bash tools/build.sh --asan
[[ ${RESULTS[-1]} == PASS* ]] && built+=(build-asan)
stage build-fuzz 1500 bash tools/build.sh --fuzz
[[ ${RESULTS[-1]} == PASS* ]] && built+=(build-fuzz)
stage build-tsan 1200 bash tools/build.sh --tsan
[[ ${RESULTS[-1]} == PASS* ]] && built+=(build-tsan)
has_built() { [[ " ${built[*]} " == *" $1 "* ]]; }

if has_built build; then
  stage unit 900 meson test -C build --suite unit --print-errorlogs --num-processes 2
else
  not_run unit "build failed"
fi
if has_built build-asan; then
  stage unit-asan 1200 env ASAN_OPTIONS=detect_leaks=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --suite unit --print-errorlogs --num-processes 2 --timeout-multiplier 3
else
  not_run unit-asan "build-asan failed"
fi

if has_built build-tsan; then
  tsan_tests=$(grep -v '^#' tests/tsan_targets)
  # shellcheck disable=SC2086
  stage unit-tsan 900 env TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    meson test -C build-tsan --no-rebuild --print-errorlogs --num-processes 1 \
    --timeout-multiplier 3 $tsan_tests
else
  not_run unit-tsan "build-tsan failed"
fi

# fuzz_one EXE: runs one libFuzzer target on a scratch copy of its corpus. The corpus folder is
# tests/fuzz/corpus/<target>/ (or <target without _fuzz>/); crashes go to the log dir.
fuzz_one() {
  local exe=$1 name work src
  name=$(basename "$exe")
  work=$(mktemp -d "$LOGDIR/fuzz-$name.XXXXXX")
  mkdir -p "$work/corpus"
  for src in "tests/fuzz/corpus/$name" "tests/fuzz/corpus/${name%_fuzz}"; do
    if [[ -d $src ]]; then
      cp -r "$src/." "$work/corpus/"
      break
    fi
  done
  echo "$name: $(find "$work/corpus" -type f | wc -l) corpus files, ${FUZZ_SECONDS}s"
  (cd "$work" && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$REPO/$exe" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$work/" corpus)
}
# timeout(1) runs programs, not shell functions: hand the function to a child bash.
export -f fuzz_one
export REPO LOGDIR FUZZ_SECONDS
if has_built build-fuzz; then
  fuzzers=()
  for exe in build-fuzz/tests/fuzz/*_fuzz; do
    [[ -f $exe && -x $exe ]] && fuzzers+=("$exe")
  done
  ((${#fuzzers[@]})) || not_run "fuzz" "no fuzz targets in build-fuzz/tests/fuzz"
  for exe in "${fuzzers[@]}"; do
    stage "fuzz:$(basename "$exe")" $((FUZZ_SECONDS + 120)) bash -c 'fuzz_one "$1"' _ "$exe"
  done
else
  not_run fuzz "build-fuzz failed"
fi

if has_built build; then
  for script in tests/netns/*.sh; do
    [[ $(basename "$script") == lib.sh ]] && continue
    stage "netns:$(basename "$script")" 900 env MESHWG="$REPO/build/tools/meshwg" bash "$script"
  done
else
  not_run netns "build failed"
fi

echo
echo "==== summary (logs in $LOGDIR)"
printf '%s\n' "${RESULTS[@]}"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
