#!/usr/bin/env bash
# Cost of the Lua agent runtime (scripts/bench/agent_bench.c): with 10,000
# agents on one runtime and one event loop, the wall and CPU time of one
# wait round trip (an agent yields to the loop in thalamus.sleep(0) and is
# resumed with the result), the start and finish of an agent, and the
# memory of an agent suspended while it waits (Lua heap, and resident
# memory of the process). Prints figures; asserts nothing.
# Usage: scripts/bench/agents.sh [AGENTS [ROUNDS]]   (default 10000 100)
# BUILD_DIR=DIR uses that build directory (default build/, built here).
set -euo pipefail
cd "$(dirname "$0")/../.."
agents=${1:-10000}
rounds=${2:-100}
build=${BUILD_DIR:-}
if [ -z "$build" ]; then
  build=build
  scripts/build.sh normal >/dev/null
fi
if ! log=$(cmake --build "$build" --target agent_bench 2>&1); then
  printf '%s\nbench: building agent_bench failed\n' "$log" >&2
  exit 1
fi
THALAMUS_DATA_DIR=$PWD "$build/bin/agent_bench" "$agents" "$rounds"
