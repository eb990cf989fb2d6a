#!/usr/bin/env bash
# Throughput of the LLM gateway: REQUESTS chat completions (default 10,000)
# through thalamus's gateway (scripts/bench/llm_bench.c, one thread, one
# event loop) to a fast local stub, nginx on 127.0.0.1 returning a fixed
# completion, at concurrency 1, 64 and 1,024; and the same load through the
# official `openai` npm client on Node.js, for a side-by-side ratio. Prints
# requests/s, client CPU time per request and the client's peak RSS.
#
# Installs nginx with apt-get when it is missing (as root, or through sudo;
# services are not started by the install) and the openai package with npm
# into a temporary directory. nginx runs with a private configuration and
# prefix under /tmp, one worker, on an ephemeral loopback port, and is
# stopped at the end. Nothing here asserts timing: it prints figures.
#
# Usage: scripts/bench/llm_gateway.sh
# Environment: REQUESTS (10000), CONCURRENCIES ("1 64 1024"), BUILD_DIR
# (build; the script configures and builds the llm_bench target there),
# SKIP_NODE=1 to measure only thalamus.
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${REQUESTS:-10000}
concurrencies=${CONCURRENCIES:-"1 64 1024"}
build=${BUILD_DIR:-build}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

# ---- nginx ----------------------------------------------------------------
nginx_bin=$(command -v nginx || true)
[ -n "$nginx_bin" ] || { [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx; } || true
if [ -z "$nginx_bin" ]; then
  echo "== installing nginx (apt-get)"
  # keep the package's own service from starting on port 80
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx >/dev/null
  [ -z "$added_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
  nginx_bin=/usr/sbin/nginx
fi

# ---- build ----------------------------------------------------------------
echo "== building llm_bench in $build/"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target llm_bench -j "$(nproc)" >/dev/null
bench=$build/bin/llm_bench

tmp=$(mktemp -d /tmp/thalamus-llm-bench.XXXXXX)
chmod 755 "$tmp"
nginx_pid=""
cleanup() {
  [ -z "$nginx_pid" ] || kill "$nginx_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
completion='{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}'
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location = /v1/chat/completions {
      default_type application/json;
      return 200 '$completion';
    }
  }
}
EOF
"$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/logs/error.log" &
nginx_pid=$!
for _ in $(seq 100); do
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$port/v1/chat/completions" 2>/dev/null && break
  sleep 0.1
done
base="http://127.0.0.1:$port/v1"

# ---- the openai npm client -------------------------------------------------
node_ok=""
if [ -z "${SKIP_NODE:-}" ] && command -v node >/dev/null && command -v npm >/dev/null; then
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  # openai 7 needs Node.js 22; 6.x is the newest that runs on older ones
  spec=openai; [ "$node_major" -ge 22 ] || spec=openai@6
  echo "== installing $spec (npm) for Node.js $(node --version)"
  mkdir -p "$tmp/node"
  cp scripts/bench/openai_bench.mjs "$tmp/node/"
  if (cd "$tmp/node" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent "$spec" >/dev/null); then
    node_ok=1
    echo "   openai $(node -p "require('$tmp/node/node_modules/openai/package.json').version")"
  else
    echo "   npm install failed: measuring thalamus only"
  fi
fi

field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }

run_thalamus() { "$bench" "$base" "$1" "$2"; }
run_node() { node "$tmp/node/openai_bench.mjs" "$base" "$1" "$2"; }

echo "== warming up"
run_thalamus 500 64 >/dev/null
[ -z "$node_ok" ] || run_node 500 64 >/dev/null

printf '\n%d chat completions to nginx %s on 127.0.0.1 (1 worker), %s cores\n' \
  "$requests" "$("$nginx_bin" -v 2>&1 | sed 's/.*nginx\///')" "$(nproc)"
printf '%-16s %11s %10s %14s %14s\n' client concurrency "req/s" "CPU us/req" "peak RSS MiB"
declare -A rps rss
for c in $concurrencies; do
  for client in thalamus openai; do
    [ "$client" = thalamus ] || [ -n "$node_ok" ] || continue
    if [ "$client" = thalamus ]; then line=$(run_thalamus "$requests" "$c"); else line=$(run_node "$requests" "$c"); fi
    r=$(field rps "$line"); cpu=$(field cpu_us_per_request "$line"); kib=$(field max_rss_kib "$line")
    rps[$client.$c]=$r
    rss[$client.$c]=$kib
    printf '%-16s %11s %10s %14s %14.1f\n' "$([ "$client" = openai ] && echo "openai (node)" || echo thalamus)" \
      "$c" "$r" "$cpu" "$(echo "$kib / 1024" | bc -l)"
  done
done
if [ -n "$node_ok" ]; then
  printf '\n%-11s %26s %26s\n' concurrency "throughput thalamus/openai" "peak RSS openai/thalamus"
  for c in $concurrencies; do
    printf '%-11s %26.2f %26.2f\n' "$c" "$(echo "${rps[thalamus.$c]} / ${rps[openai.$c]}" | bc -l)" \
      "$(echo "${rss[openai.$c]} / ${rss[thalamus.$c]}" | bc -l)"
  done
fi
