#!/usr/bin/env bash
# Installs what is missing, builds thalamus twice (normal, and with ASan +
# UBSan) and runs every test suite through CTest in both builds. Exits
# non-zero on the first failing build or suite; the last line is CTest's
# summary.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for kind in normal asan; do
  dir=build; [ "$kind" = asan ] && dir=build-asan
  echo "== $kind build ($dir/)"
  scripts/build.sh "$kind"
  echo "== tests, $kind build"
  ctest --test-dir "$dir" --output-on-failure -j "$(nproc)"
done
