#!/usr/bin/env bash
# Installs what is missing, builds thalamus, creates a workspace from the
# bundled classifier template and shows it. Usage: scripts/demo.sh [DIR]
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
printf '\nThe workspace is in %s\n' "$dir"
