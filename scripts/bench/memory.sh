#!/usr/bin/env bash
# The memory at scale: batched insert rate up to 1,000,000 items, recall
# latency (p50 / p99) at 10k, 100k and 1M items (BM25 + spreading
# activation, k = 10, default tuning), the same with a 768-dimension query
# vector fused over stored embeddings, database bytes per item, and the
# peak RSS of the recalling process. Items go in as bulk loads of 10,000
# (memory_begin_bulk). Every line also gives the CPU time (per recall: p50
# and p99), steadier than the wall clock on a shared machine. Goals:
# >= 50,000 inserts/s batched, recall p99 < 20 ms at 1M items, RSS < 64 MiB
# while recalling.
# Usage: [BUILD_DIR=DIR] scripts/bench/memory.sh [MAX_ITEMS] [QUERIES]
#   (defaults 1000000 and 500; the 1M run needs about 5 GB of disk in
#   $TMPDIR and takes several minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
max=${1:-1000000}
queries=${2:-500}
dim=768
# BUILD_DIR: an already configured build directory to use instead of build/
if [ -n "${BUILD_DIR:-}" ]; then
  build=$BUILD_DIR
else
  scripts/build.sh normal >/dev/null
  build=build
fi
cmake --build "$build" --target memory_bench >/dev/null
bench=$(cd "$build" && pwd)/bin/memory_bench
tmp=$(mktemp -d "${TMPDIR:-/tmp}/thalamus-memory-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
db=$tmp/memory.db

echo "thalamus memory benchmark: synthetic items (8 + 40 Zipf-distributed words, 2 links each)"
echo "machine: $(nproc) CPU(s), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo); SQLite $(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || echo '?')"
have=0
for size in 10000 100000 1000000; do
  [ "$size" -le "$max" ] || break
  echo
  echo "== $size items"
  "$bench" insert "$db" "$have" "$size"
  "$bench" size "$db"
  "$bench" recall "$db" "$queries" typical
  "$bench" recall "$db" "$queries" frequent
  "$bench" embed "$db" "$dim" "$have" "$size"
  "$bench" recall "$db" "$queries" typical "$dim"
  "$bench" size "$db"
  have=$size
done
