#!/usr/bin/env bash
# Start-up cost of thalamus: median wall time and peak resident memory of
# `thalamus --version` and of `thalamus config` in a fresh workspace, with
# /bin/true as the floor of what starting any process costs here.
# Usage: scripts/bench/startup.sh [RUNS]   (default 200 runs per command)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-200}
scripts/build.sh normal >/dev/null
bin=$PWD/build/bin/thalamus
tmp=$(mktemp -d /tmp/thalamus-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/runstat" scripts/bench/runstat.c
"$bin" -q init "$tmp/ws" >/dev/null

printf 'thalamus start-up, %d runs each (fork + exec + exit)\n' "$runs"
printf '%-26s %10s %8s %14s\n' command "median ms" "min ms" "peak RSS MiB"
row() {
  local label=$1; shift
  read -r median min rss < <("$tmp/runstat" "$runs" "$@")
  printf '%-26s %10s %8s %14.2f\n' "$label" "$median" "$min" "$(echo "$rss / 1024" | bc -l)"
}
row "/bin/true (floor)" /bin/true
row "thalamus --version" "$bin" --version
row "thalamus config" "$bin" -C "$tmp/ws" config
