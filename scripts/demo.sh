#!/usr/bin/env bash
# Installs what is missing, builds thalamus, creates a workspace from the
# bundled classifier template, shows it, and runs an offline research loop
# on it (DEMO_ROUNDS rounds, default 12). Usage: scripts/demo.sh [DIR]
# (default: a new directory under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/setup.sh
scripts/build.sh normal
thalamus=$root/build/bin/thalamus

dir=${1:-$(mktemp -d /tmp/thalamus-demo.XXXXXX)}
if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
  echo "demo: '$dir' is not empty; pass a new directory" >&2
  exit 1
fi
if [ -t 1 ]; then bold=$(printf "\033[1m"); plain=$(printf "\033[0m"); else bold=; plain=; fi
step() { printf "\n%s$ %s%s\n" "$bold" "$*" "$plain"; }

step thalamus init "$dir"
"$thalamus" init "$dir"
cd "$dir"
step thalamus config
"$thalamus" config
step git log --stat
git --no-pager log --stat
step python3 train.py "(the baseline experiment, run by hand in a scratch copy)"
scratch=$(mktemp -d)
cp -r experiment/. "$scratch"
(cd "$scratch" && python3 train.py && cat results.json)
rm -rf "$scratch"

# The research loop, offline: the planner mutates the parameters of the
# search space, the critic ranks ideas with a surrogate of past results, and
# every experiment runs in the sandbox and becomes a git commit.
rounds=${DEMO_ROUNDS:-12}
step thalamus run --provider offline --rounds "$rounds"
start=$(date +%s.%N)
"$thalamus" run --provider offline --rounds "$rounds"
end=$(date +%s.%N)
step thalamus log
"$thalamus" log
status=$("$thalamus" status --json)
python3 - "$status" "$start" "$end" <<'PY'
import json, sys
st = json.loads(sys.argv[1])
seconds = float(sys.argv[3]) - float(sys.argv[2])
base, best = st["baseline"], st["best"]
metric = st["task"]["metric"]
print(f"\n{st['budget']['experiments']} experiments in {seconds:.1f} s")
if best:
    gain = best["metric"] - base["metric"] if base["metric"] is not None else None
    print(f"best experiment: {best['node']} {metric} = {best['metric']:.4g} "
          f"(baseline {base['metric']:.4g}, gain {gain:+.4g}): {best['title']}")
    print(f"  thalamus show {best['node']}     # its idea, diff and results")
print(f"the tree in git: git log --graph --oneline --glob='refs/thalamus/runs/{st['id']}/*'")
PY
printf '\nThe workspace is in %s\n' "$dir"
