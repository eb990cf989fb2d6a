#!/usr/bin/env bash
# Efficacy of the research loop: on each bundled task (examples/*), the best
# metric after N experiments for the offline tree search against random
# search over the same space with the same budget, over several seeds (mean
# and spread), and the time per experiment outside the sandbox (offline,
# the agents included; scripts/bench/overhead.sh splits it into the agents'
# and the orchestrator's share). Prints figures only.
# Usage: scripts/bench/efficacy.sh [N=20] [SEEDS=5] [JOBS=1]
# With one job a seed always gives the same run; with more, the order in
# which experiments finish varies and so do the runs.
# THALAMUS_BIN picks the binary (default: build/bin/thalamus).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${THALAMUS_BIN:-$PWD/build/bin/thalamus}
if [ ! -x "$bin" ]; then
  echo "efficacy: no thalamus at '$bin'; run scripts/build.sh first or set THALAMUS_BIN" >&2
  exit 1
fi
exec python3 scripts/bench/efficacy.py "$bin" "${1:-20}" "${2:-5}" "${3:-1}"
