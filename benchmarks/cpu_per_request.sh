#!/usr/bin/env bash
# Server CPU time per request: (utime + stime of the one server process) / requests answered,
# under wrk -t1 -c32 on one Iris row, for the bare-uvicorn ceiling and modelport with batching
# off and on. Unlike req/s this barely depends on how the cores are shared with wrk, so it is
# the figure to compare when optimising the request path (docs/performance.md).
#   benchmarks/cpu_per_request.sh [WINDOWS] [WINDOW_S]    (default 3 windows of 4 s per server)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
D=${2:-4}
source benchmarks/lib.sh
TICK=$(getconf CLK_TCK)
measure() {  # name, url path, command...
  local name=$1 url=http://127.0.0.1:18391$2
  shift 2
  start "$url" "$@"
  local figures="" before after requests
  for _ in $(seq "$N"); do
    before=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
    requests=$(wrk -t1 -c32 -d"${D}s" -s "$WORK/post.lua" "$url" | awk '/requests in/ {print $1}')
    after=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
    figures+=$(awk -v t=$((after - before)) -v r="$requests" -v hz="$TICK" 'BEGIN {printf " %7.1f", t / hz / r * 1e6}')
  done
  printf '%-34s server CPU us/request:%s\n' "$name" "$figures"
  stop
}
measure "hello (uvicorn ceiling)" / .venv/bin/uvicorn --app-dir benchmarks/peers hello:app --port 18391 \
  --http httptools --loop uvloop --no-access-log --log-level warning
measure "modelport iris --no-batching" /v2/models/iris/infer .venv/bin/modelport serve iris@production \
  --port 18391 --no-batching --log-level warning
measure "modelport iris (batching)" /v2/models/iris/infer .venv/bin/modelport serve iris@production \
  --port 18391 --log-level warning
