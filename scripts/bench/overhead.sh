#!/usr/bin/env bash
# The research loop's own cost per experiment: the time outside the sandbox
# between one experiment's end and the next one's start, split into what
# the agents ran (offline, the agents do the model's thinking) and the
# orchestrator's own share (store, memory, git, the work directory, creating
# the sandbox), read from thalamus's debug log (-v --log-json), with
# sandbox.isolation "none" and "full" (where creating each sandbox and
# copying /work in and out count as well). Runs the classifier template with
# one job, so the experiments' own times do not overlap, and prints each run
# and the medians per isolation, the run's start and end (paid once per
# run) apart, and the CPU time of the thalamus process itself. The wall
# figures follow the host's load: run it on a quiet machine. They follow
# the file system too (each experiment creates a few dozen files and
# directories): the first line gives its type and what creating a file and
# a directory costs there. Prints figures only.
# Usage: scripts/bench/overhead.sh [N=30] [REPS=3]
# THALAMUS_BIN picks the binary (default: build/bin/thalamus); the
# workspaces go under TMPDIR (default /tmp). With THALAMUS_BIN_B, a second
# binary, it compares the two: REPS runs of each per isolation, alternated
# A B B A ..., every workspace kept until the end, medians of each and in
# how many pairs B's orchestrator time was lower. Wall figures on one host
# drift with its load and its file system, so alternating in one session
# is the fair way to compare two builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${THALAMUS_BIN:-$PWD/build/bin/thalamus}
if [ ! -x "$bin" ]; then
  echo "overhead: no thalamus at '$bin'; run scripts/build.sh first or set THALAMUS_BIN" >&2
  exit 1
fi
other=${THALAMUS_BIN_B:-}
if [ -n "$other" ] && [ ! -x "$other" ]; then
  echo "overhead: no thalamus at '$other' (THALAMUS_BIN_B)" >&2
  exit 1
fi
exec python3 scripts/bench/overhead.py "$bin" "${1:-30}" "${2:-3}" "$other"
