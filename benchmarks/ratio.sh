#!/usr/bin/env bash
# The Iris throughput ratio against the bare uvicorn app: req/s of modelport (ONNX Iris, one row,
# V2 REST, defaults) over req/s of the "hello" ASGI app, both with 2 workers under
# wrk -t2 -c64, side by side in one run. With BEFORE_SRC=<another checkout>/src it also runs that
# tree (same venv, swapped in by PYTHONPATH), alternating, so a change is compared with its base
# on the same warm machine.
#   benchmarks/ratio.sh [ROUNDS] [DURATION_S]      (default 3 rounds of 10 s per server)
#   BEFORE_SRC=/tmp/base/src benchmarks/ratio.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
D=${2:-10}
source benchmarks/lib.sh
rate() {  # url path, command...: req/s of one run
  local url=http://127.0.0.1:18392$1
  shift
  start "$url" "$@"
  wrk -t2 -c64 -d"${D}s" -s "$WORK/post.lua" "$url" | awk '/Requests\/sec/ {print $2}'
  stop
}
hello() { rate / .venv/bin/uvicorn --app-dir benchmarks/peers hello:app --port 18392 --workers 2 \
  --http httptools --loop uvloop --no-access-log --log-level warning; }
modelport() { rate /v2/models/iris/infer "$PY" -m modelport serve iris@production --port 18392 --workers 2 \
  --log-level warning; }
printf '%-6s %12s %12s %7s' round hello modelport ratio
[ -n "${BEFORE_SRC:-}" ] && printf ' %12s %7s' before ratio
echo
for round in $(seq "$ROUNDS"); do
  ceiling=$(hello)
  [ -n "${BEFORE_SRC:-}" ] && old=$(PYTHONPATH=$BEFORE_SRC modelport)
  new=$(modelport)
  printf '%-6s %12.0f %12.0f %6.1f%%' "$round" "$ceiling" "$new" "$(awk -v a="$new" -v b="$ceiling" 'BEGIN {print 100 * a / b}')"
  [ -n "${BEFORE_SRC:-}" ] && printf ' %12.0f %6.1f%%' "$old" "$(awk -v a="$old" -v b="$ceiling" 'BEGIN {print 100 * a / b}')"
  echo
done
