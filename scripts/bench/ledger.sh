#!/usr/bin/env bash
# What recording an experiment in git costs, alone: N experiments (default
# 2000) in a chain, each one changed file, its tree and its commit with a
# note, in a new repository under $TMPDIR (whose file system the figures
# depend on: creating files is most of the cost). Prints wall and CPU time
# per experiment (median and mean; the first and last tenth of the chain)
# and the files the object database holds at the end. NOTES 0 leaves the
# notes out, to show what they cost.
# Usage: [BUILD_DIR=DIR] scripts/bench/ledger.sh [N] [FILES] [NOTES]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-2000}
files=${2:-3}
notes=${3:-1}
# BUILD_DIR: an already configured build directory to use instead of build/
if [ -n "${BUILD_DIR:-}" ]; then
  build=$BUILD_DIR
else
  scripts/build.sh normal >/dev/null
  build=build
fi
cmake --build "$build" --target ledger_bench >/dev/null
bench=$(cd "$build" && pwd)/bin/ledger_bench
tmp=$(mktemp -d "${TMPDIR:-/tmp}/thalamus-ledger-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$bench" "$tmp" "$n" "$files" "$notes"
