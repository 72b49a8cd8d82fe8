#!/usr/bin/env bash
# uvicorn (httptools + uvloop) vs granian, one worker each, same app, same wrk load, side by side.
#   benchmarks/asgi_servers.sh [DURATION_S]
# Needs wrk and granian in .venv (uv pip install -p .venv/bin/python granian); registers Iris in a
# throwaway MODELPORT_HOME. Prints one line per server and app.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-10}
PY=.venv/bin/python
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
export MODELPORT_HOME=$WORK/home MODELPORT_MODELS=iris@production MODELPORT_THREADS=1 MODELPORT_LOG_LEVEL=warning
$PY - <<'PY'
import modelport
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
modelport.register(LogisticRegression(max_iter=1000).fit(X, y), name="iris", sample_input=X.head(20), alias="production")
PY
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.9,3.0,5.1,1.8]}]}'
wrk.headers["Content-Type"] = "application/json"
LUA
run() {  # name, url path, command...
  local name=$1 path=$2; shift 2
  "$@" >"$WORK/server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null -X POST -d @- "http://127.0.0.1:18390$path" <<<"$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/post.lua")" && break; sleep 0.2; done
  wrk -t1 -c64 -d2s -s "$WORK/post.lua" "http://127.0.0.1:18390$path" >/dev/null
  local out; out=$(wrk -t1 -c64 -d"${D}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:18390$path")
  printf '%-34s %10s req/s   p50 %8s   p99 %8s\n' "$name" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
  kill -INT $pid; wait $pid 2>/dev/null || true
}
HELLO=(--app-dir benchmarks/peers hello:app)
run "hello / uvicorn" / .venv/bin/uvicorn "${HELLO[@]}" --port 18390 --http httptools --loop uvloop --no-access-log --log-level warning
run "hello / granian" / .venv/bin/granian --interface asgi --port 18390 --loop uvloop --workers 1 --no-ws --working-dir benchmarks/peers hello:app
run "modelport iris / uvicorn" /v2/models/iris/infer .venv/bin/modelport serve iris@production --port 18390 --log-level warning
run "modelport iris / granian" /v2/models/iris/infer .venv/bin/granian --interface asgi --factory --port 18390 --loop uvloop --workers 1 --no-ws modelport.app:create_app
