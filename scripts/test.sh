#!/usr/bin/env bash
# test.sh - the whole test suite, as CI runs it (.ci/run calls exactly this).
#
# Sets the machine up (scripts/setup.sh), then builds and runs every test
# twice: a release build (build/) and an AddressSanitizer +
# UndefinedBehaviorSanitizer build (build-asan/), where the heaviest model
# cases are reduced (see tests/test.h, test_sanitized).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/setup.sh --no-build --tests

jobs=$(nproc)
status=0
for kind in release asan; do
  if [ $kind = release ]; then dir=build; flags=(-DCMAKE_BUILD_TYPE=Release)
  else dir=build-asan; flags=(-DCMAKE_BUILD_TYPE=Debug -DUPRES_SANITIZE=ON); fi
  echo "== $kind build ($dir)"
  cmake -S . -B $dir "${flags[@]}" >/dev/null
  cmake --build $dir -j"$jobs" >/dev/null || cmake --build $dir -j1
  echo "== $kind tests"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
  export LSAN_OPTIONS=suppressions=$repo/tests/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd $dir && ctest --output-on-failure --timeout 1800) || status=1
done
exit $status
