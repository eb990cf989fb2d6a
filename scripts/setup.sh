#!/usr/bin/env bash
# Installs what building and testing thalamus needs, and only what is missing:
# a C compiler, make, cmake, pkg-config, git, python3 (for the end-to-end
# tests), chromium (the report's browser test, headless) and the -dev
# packages of libcurl, cJSON, SQLite, Lua 5.4, libgit2 and libedit (line
# editing and history of `thalamus chat`).
# Safe to run again: it checks before it installs. Debian and Ubuntu (apt-get).
set -euo pipefail

# tool command -> Debian package
tools=(cc:gcc make:make cmake:cmake pkg-config:pkg-config git:git python3:python3
       chromium:chromium)
libs=(libcurl4-openssl-dev libcjson-dev libsqlite3-dev liblua5.4-dev libgit2-dev
      libedit-dev)

missing=()
for pair in "${tools[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
for pkg in "${libs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all build and test dependencies are installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: apt-get not found; install these packages (or your system's equivalents) by hand: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "setup: need root to install packages; run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup: done"
