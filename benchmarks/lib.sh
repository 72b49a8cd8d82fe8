# Shared by the shell benchmarks: an Iris model registered in a throwaway MODELPORT_HOME, the
# wrk script that posts one V2 row, and starting (waiting for, warming up) and stopping a server. Source it from the repository root.
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
BODY='{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.9,3.0,5.1,1.8]}]}'
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA

start() {  # url, command...: run the server in the background (its pid in SERVER), wait, warm up
  local url=$1
  shift
  "$@" >"$WORK/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do curl -sf -o /dev/null -X POST -d "$BODY" "$url" && break; sleep 0.2; done
  wrk -t1 -c32 -d2s -s "$WORK/post.lua" "$url" >/dev/null
}

stop() {
  kill -INT "$SERVER"
  wait "$SERVER" 2>/dev/null || true
}
