#!/usr/bin/env bash
# The research loop's own cost per experiment: wall time outside the sandbox
# and the model (offline agents, so there is no model time), with
# sandbox.isolation "none" (agents, store, memory, git, the work directory)
# and "full" (creating each sandbox and copying /work in and out as well).
# Runs the classifier template with one job, so the experiments' own times do
# not overlap, and prints each run and the median per isolation, with the
# CPU time of the thalamus process itself. The wall figures follow the host's
# load: run it on a quiet machine. Prints figures only.
# Usage: scripts/bench/overhead.sh [N=30] [REPS=3]
# THALAMUS_BIN picks the binary (default: build/bin/thalamus).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${THALAMUS_BIN:-$PWD/build/bin/thalamus}
if [ ! -x "$bin" ]; then
  echo "overhead: no thalamus at '$bin'; run scripts/build.sh first or set THALAMUS_BIN" >&2
  exit 1
fi
exec python3 scripts/bench/overhead.py "$bin" "${1:-30}" "${2:-3}"
