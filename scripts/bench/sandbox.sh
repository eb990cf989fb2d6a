#!/usr/bin/env bash
# What a sandbox costs. In one run, side by side:
#   - median spawn-to-exit latency of /bin/true in thalamus's sandbox through
#     its C interface on the event loop (scripts/bench/sandbox_bench.c), set
#     up at the spawn and prepared ahead (prepare_next);
#   - the same for bubblewrap configured to similar isolation (new user, pid,
#     mount, network, ipc, uts and cgroup namespaces, read-only /usr and the
#     same /etc entries, tmpfs /tmp and /work, a new /proc and /dev, uid 1000,
#     no capabilities, new session, clean environment), started with fork and
#     exec as an orchestrator would start it. bubblewrap applies no seccomp
#     filter, rlimits or cgroups here, so it does less work than thalamus;
#   - `thalamus sandbox run -- /bin/true` as a command (a thalamus process
#     start-up included) and /bin/true alone, for scale;
#   - the throughput of 1,000 runs of /bin/true, two at a time, through the
#     C interface and through bubblewrap (xargs -P 2).
# Usage: scripts/bench/sandbox.sh [RUNS]   (default 200 runs per latency row)
# THALAMUS_BUILD=DIR uses an existing build directory instead of build/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
runs=${1:-200}
build=${THALAMUS_BUILD:-}
if [ -z "$build" ]; then
  build=build
  scripts/build.sh normal >/dev/null
fi
if ! log=$(cmake --build "$build" --target thalamus sandbox_bench 2>&1); then
  printf '%s\nbench: building thalamus and sandbox_bench failed\n' "$log" >&2
  exit 1
fi
bench=$root/$build/bin/sandbox_bench
thalamus=$root/$build/bin/thalamus
case "$build" in /*) bench=$build/bin/sandbox_bench; thalamus=$build/bin/thalamus ;; esac

if ! command -v bwrap >/dev/null 2>&1; then
  echo "bench: installing bubblewrap for the comparison" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -q --no-install-recommends bubblewrap >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update -q >/dev/null && \
      "${sudo[@]}" apt-get install -y -q --no-install-recommends bubblewrap >/dev/null; }
fi

tmp=$(mktemp -d /tmp/thalamus-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/runstat" scripts/bench/runstat.c

# bubblewrap's command line: the system directories as thalamus binds them
bwrap_cmd=(bwrap --unshare-all --die-with-parent --new-session --cap-drop ALL
           --uid 1000 --gid 1000 --hostname sandbox)
for d in /usr /bin /sbin /lib /lib32 /lib64 /libx32; do
  if [ -L "$d" ]; then bwrap_cmd+=(--symlink "$(readlink "$d")" "$d")
  elif [ -d "$d" ]; then bwrap_cmd+=(--ro-bind "$d" "$d"); fi
done
for e in alternatives ca-certificates ca-certificates.conf debian_version fonts gai.conf \
         host.conf inputrc ld.so.cache ld.so.conf ld.so.conf.d locale.alias localtime magic \
         magic.mime matplotlibrc mime.types nsswitch.conf os-release protocols services ssl \
         timezone /etc/python3*; do
  e=/etc/${e#/etc/}
  [ -e "$e" ] && bwrap_cmd+=(--ro-bind "$e" "$e")
done
bwrap_cmd+=(--proc /proc --dev /dev --tmpfs /tmp --tmpfs /work --chdir /work --clearenv
            --setenv PATH /usr/local/bin:/usr/bin:/bin --setenv HOME /work
            --setenv TMPDIR /tmp /bin/true)

"$bench" latency 3 >/dev/null # warm up (probes, page cache)
printf 'sandbox spawn-to-exit latency of /bin/true, %d runs per row\n' "$runs"
printf '(the first three rows interleaved run by run: network namespaces are torn down\n'
printf 'asynchronously, so whatever runs after a batch of them looks slower)\n'
printf '%-52s %9s %8s %8s\n' "" "median ms" "min ms" "p90 ms"
row() { printf '%-52s %9s %8s %8s\n' "$1" "$2" "$3" "${4:--}"; }
{ read -r cold_med cold_min cold_p90; read -r bw_med bw_min bw_p90
  read -r warm_med warm_min warm_p90; } < <("$bench" compare "$runs" "${bwrap_cmd[@]}")
read -r cli_med cli_min _ < <("$tmp/runstat" "$runs" "$thalamus" -q sandbox run -- /bin/true \
                              2>/dev/null)
read -r true_med true_min _ < <("$tmp/runstat" "$runs" /bin/true)
row "thalamus, C interface, set up at the spawn" "$cold_med" "$cold_min" "$cold_p90"
row "thalamus, C interface, prepared ahead" "$warm_med" "$warm_min" "$warm_p90"
row "bubblewrap $(bwrap --version | cut -d' ' -f2), fork + exec" "$bw_med" "$bw_min" "$bw_p90"
row "thalamus sandbox run (a thalamus process each)" "$cli_med" "$cli_min"
row "/bin/true without a sandbox (fork + exec)" "$true_med" "$true_min"
half=$(echo "$bw_med / 2" | bc -l)
verdict() { if [ "$(echo "$1 <= $half" | bc -l)" = 1 ]; then echo "met"; else echo "not met"; fi; }
printf 'goal: at most half of bubblewrap'"'"'s median (%.2f ms): set up at the spawn %s, ' \
       "$half" "$(verdict "$cold_med")"
printf 'prepared ahead %s\n' "$(verdict "$warm_med")"

n=1000
printf '\nthroughput: %d runs of /bin/true, 2 at a time (in 4 alternating rounds of %d)\n' \
       "$n" $((n / 4))
printf '%-52s %9s %8s\n' "" "total s" "runs/s"
ours=0
theirs=0
for round in 1 2 3 4; do
  read -r total _ < <("$bench" throughput $((n / 4)) 2)
  ours=$(echo "$ours + $total" | bc -l)
  start=$(date +%s.%N)
  seq $((n / 4)) | xargs -P 2 -n 1 sh -c '"$@" >/dev/null 2>&1' sh "${bwrap_cmd[@]}"
  end=$(date +%s.%N)
  theirs=$(echo "$theirs + $end - $start" | bc -l)
done
printf '%-52s %9.2f %8.1f\n' "thalamus, C interface" "$ours" "$(echo "$n / $ours" | bc -l)"
printf '%-52s %9.2f %8.1f\n' "bubblewrap, xargs -P 2" "$theirs" "$(echo "$n / $theirs" | bc -l)"
