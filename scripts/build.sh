#!/usr/bin/env bash
# Configures and builds thalamus. Usage: scripts/build.sh [normal|asan]
#   normal  -> build/       (RelWithDebInfo)
#   asan    -> build-asan/  (AddressSanitizer + UndefinedBehaviorSanitizer)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-normal}
case "$kind" in
  normal) dir=build; flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) dir=build-asan; flags=(-DCMAKE_BUILD_TYPE=Debug -DTHALAMUS_SANITIZE=ON) ;;
  *) echo "usage: scripts/build.sh [normal|asan]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" -DTHALAMUS_WERROR=ON "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)"
