#!/usr/bin/env bash
# Start-up cost of thalamus: median wall time and peak resident memory of
# `thalamus --version` and of `thalamus config` in a fresh workspace.
# Usage: scripts/bench/startup.sh [RUNS]   (default 200 runs per command)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-200}
scripts/build.sh normal >/dev/null
bin=$PWD/build/bin/thalamus
ws=$(mktemp -d /tmp/thalamus-bench.XXXXXX)
trap 'rm -rf "$ws"' EXIT
"$bin" -q init "$ws/ws" >/dev/null

python3 - "$bin" "$ws/ws" "$runs" <<'PY'
import os, resource, statistics, subprocess, sys, time

binary, workspace, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])

def measure(args):
    """Median wall time of runs executions, and the peak RSS of the biggest."""
    times = []
    peak = 0
    for _ in range(runs):
        start = time.perf_counter()
        # os.posix_spawn + wait4 keeps the harness's own overhead small and
        # gives each child's own peak RSS.
        pid = os.posix_spawn(args[0], args, os.environ,
                             file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
        _, status, usage = os.wait4(pid, 0)
        times.append(time.perf_counter() - start)
        if status != 0:
            sys.exit(f"{' '.join(args)} exited with status {status}")
        peak = max(peak, usage.ru_maxrss)
    return statistics.median(times) * 1000, min(times) * 1000, peak / 1024

print(f"thalamus start-up, {runs} runs each (wall time includes fork/exec)")
print(f"{'command':<28} {'median ms':>10} {'min ms':>8} {'peak RSS MiB':>13}")
for label, args, cwd in [
    ("thalamus --version", [binary, "--version"], None),
    ("thalamus config", [binary, "-C", workspace, "config"], None),
]:
    median, best, rss = measure(args)
    print(f"{label:<28} {median:>10.2f} {best:>8.2f} {rss:>13.2f}")
PY
