#!/usr/bin/env bash
# uvicorn (httptools + uvloop) vs granian, one worker each, same app, same wrk load, side by side.
#   benchmarks/asgi_servers.sh [DURATION_S]
# Needs wrk and granian in .venv (uv pip install -p .venv/bin/python granian); registers Iris in a
# throwaway MODELPORT_HOME. Prints one line per server and app.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-10}
source benchmarks/lib.sh
run() {  # name, url path, command...
  local name=$1 path=$2
  shift 2
  start "http://127.0.0.1:18390$path" "$@"
  local out; out=$(wrk -t1 -c64 -d"${D}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:18390$path")
  printf '%-34s %10s req/s   p50 %8s   p99 %8s\n' "$name" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
  stop
}
HELLO=(--app-dir benchmarks/peers hello:app)
run "hello / uvicorn" / .venv/bin/uvicorn "${HELLO[@]}" --port 18390 --http httptools --loop uvloop --no-access-log --log-level warning
run "hello / granian" / .venv/bin/granian --interface asgi --port 18390 --loop uvloop --workers 1 --no-ws --working-dir benchmarks/peers hello:app
run "modelport iris / uvicorn" /v2/models/iris/infer .venv/bin/modelport serve iris@production --port 18390 --log-level warning
run "modelport iris / granian" /v2/models/iris/infer .venv/bin/granian --interface asgi --factory --port 18390 --loop uvloop --workers 1 --no-ws modelport.app:create_app
