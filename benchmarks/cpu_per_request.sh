#!/usr/bin/env bash
# Server CPU time per request: (utime + stime of the one server process) / requests answered,
# under wrk -t1 -c32 on one Iris row, for the bare-uvicorn ceiling and modelport with batching
# off and on, each with metrics on (the default) and off (MODELPORT_METRICS=0). Unlike req/s this
# barely depends on how the cores are shared with wrk, so it is the figure to compare when
# optimising the request path (docs/performance.md). With BEFORE_SRC=<another checkout>/src it
# also runs that tree (same venv, swapped in by PYTHONPATH, its own registry) after each case.
#   benchmarks/cpu_per_request.sh [WINDOWS] [WINDOW_S]    (default 3 windows of 4 s per server)
#   BEFORE_SRC=/tmp/base/src benchmarks/cpu_per_request.sh
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
# Arrays, not functions: the measured pid must be the server itself (env execs it in place)
SERVE=(.venv/bin/python -m modelport serve iris@production --port 18391 --log-level warning)
BEFORE=(env PYTHONPATH="${BEFORE_SRC:-}" MODELPORT_HOME="$WORK/before" "${SERVE[@]}")
if [ -n "${BEFORE_SRC:-}" ]; then
  PYTHONPATH=$BEFORE_SRC MODELPORT_HOME=$WORK/before $PY - <<'PY'
import modelport
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
modelport.register(LogisticRegression(max_iter=1000).fit(X, y), name="iris", sample_input=X.head(20), alias="production")
PY
fi
for mode in --no-batching --batching; do
  measure "modelport iris $mode" /v2/models/iris/infer "${SERVE[@]}" "$mode"
  measure "modelport iris $mode, metrics off" /v2/models/iris/infer env MODELPORT_METRICS=0 "${SERVE[@]}" "$mode"
  if [ -n "${BEFORE_SRC:-}" ]; then
    measure "before: modelport iris $mode" /v2/models/iris/infer "${BEFORE[@]}" "$mode"
  fi
done
