#!/usr/bin/env bash
# Speed and size of the Monte-Carlo tree search engine
# (scripts/bench/mcts_bench.c): iterations per second on a synthetic tree
# (four children per expansion, hashed priors and values) with the
# evaluator in C (UCT, PUCT, every child evaluated, progressive widening)
# and with the expand and evaluate callbacks in Lua (thalamus.mcts in an
# agent), and the bytes per node (sizeof a node, and what the tree holds
# per node with the spare capacity of its arrays). Prints figures; asserts
# nothing.
# Usage: scripts/bench/mcts.sh [ITERATIONS [LUA_ITERATIONS]]
#        (default 2000000 200000)
# BUILD_DIR=DIR uses that build directory (default build/, built here).
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-2000000}
lua_iterations=${2:-200000}
build=${BUILD_DIR:-}
if [ -z "$build" ]; then
  build=build
  scripts/build.sh normal >/dev/null
fi
if ! log=$(cmake --build "$build" --target mcts_bench 2>&1); then
  printf '%s\nbench: building mcts_bench failed\n' "$log" >&2
  exit 1
fi
THALAMUS_DATA_DIR=$PWD "$build/bin/mcts_bench" "$iterations" "$lua_iterations"
