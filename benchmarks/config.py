"""What `make bench` runs: peer environments, servers, models and cases, in one place.

A server is one row of the results table. Its command and environment are templates filled in
by the driver with these fields:

    {port}         the HTTP port chosen for this run (a free loopback port)
    {peers}        benchmarks/peers, where the peer apps live
    {model_file}   the trained model (joblib) for the peers
    {modelport}    the project's modelport executable (.venv/bin/modelport)
    {ref}          the modelport reference registered for this server, e.g. iris@1
    {repo}         MLServer's model repository, written by the driver for this run
    {bin}          the server's own venv bin/ directory
    {port2} {port3} more free ports, for servers that open several (MLServer: gRPC, metrics)

To add a modelport flag, add (or copy) one line in SERVERS. A server whose `requires` are not
met by the running modelport is skipped with a note, not failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Peer environments: benchmarks/.venvs/<name>, installed with uv at these pins. scikit-learn is
# pinned by the driver to the version in the project's .venv, so every server loads the very
# same pickled model.
VENVS: dict[str, tuple[str, ...]] = {
    "hello": ("uvicorn[standard]==0.54.0",),
    "flask": ("flask==3.1.3", "gunicorn==27.0.1"),
    "fastapi": ("fastapi==0.163.2", "uvicorn[standard]==0.54.0"),
    # uvloop 0.22+ raises in asyncio.get_event_loop() without a running loop, which kills
    # MLServer 1.7.1's parallel workers at start ("There is no current event loop"): keep 0.21.
    "mlserver": ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"),
    "bentoml": ("bentoml==1.4.40",),
    "chart": ("matplotlib==3.11.2",),
}
NEEDS_SKLEARN = ("flask", "fastapi", "mlserver", "bentoml")
# Packages whose versions the report lists for each environment.
REPORTED = (
    "uvicorn", "httptools", "uvloop", "flask", "gunicorn", "fastapi", "pydantic", "starlette",
    "mlserver", "mlserver-sklearn", "bentoml", "scikit-learn", "numpy", "onnxruntime",
    "modelport", "orjson", "granian",
)  # fmt: skip

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Server:
    """One server configuration under test."""

    name: str
    group: str  # ceiling | flask | fastapi | mlserver | bentoml | modelport
    venv: str  # a key of VENVS, or "project" for modelport's own .venv
    command: tuple[str, ...]
    protocol: str  # a key of driver PROTOCOLS: how requests are written and answers read
    path: str  # request path
    env: dict[str, str] = field(default_factory=dict)
    # modelport only: extra `modelport register` options; the server serves that registration.
    register: tuple[str, ...] = ()
    # modelport only: the runtime `register` must report, else the server is skipped.
    runtime: str = ""
    # Servers with the same pair name differ only in batching; the report compares them.
    pair: str = ""
    batching: bool = False


UVICORN_FLAGS = ("--host", HOST, "--port", "{port}", "--no-access-log", "--log-level", "warning")
# MLServer as its docs run it in production (debug off: no access log), on loopback ports.
MLSERVER_ENV = {"MLSERVER_HOST": HOST, "MLSERVER_HTTP_PORT": "{port}", "MLSERVER_GRPC_PORT": "{port2}",
                "MLSERVER_METRICS_PORT": "{port3}", "MLSERVER_DEBUG": "false"}  # fmt: skip
MLSERVER_BATCH = {"MLSERVER_MODEL_MAX_BATCH_SIZE": "32", "MLSERVER_MODEL_MAX_BATCH_TIME": "0.005"}
MODELPORT_SERVE = ("{modelport}", "serve", "{ref}", "--port", "{port}", "--workers", "2",
                   "--log-level", "warning")  # fmt: skip
SKLEARN_RUNTIME = ("--runtime", "sklearn")

SERVERS: tuple[Server, ...] = (
    Server("hello (uvicorn ceiling)", "ceiling", "hello",
           ("{bin}/uvicorn", "hello:app", "--app-dir", "{peers}", "--workers", "2",
            "--http", "httptools", "--loop", "uvloop", "--lifespan", "off", *UVICORN_FLAGS),
           "fixed", "/predict"),
    Server("flask + gunicorn (2 workers)", "flask", "flask",
           ("{bin}/gunicorn", "--workers", "2", "--bind", f"{HOST}:{{port}}",
            "--chdir", "{peers}", "--log-level", "warning", "flask_app:app"),
           "instances", "/predict"),
    Server("fastapi + uvicorn (2 workers)", "fastapi", "fastapi",
           ("{bin}/uvicorn", "fastapi_app:app", "--app-dir", "{peers}", "--workers", "2",
            *UVICORN_FLAGS),
           "instances", "/predict"),
    Server("mlserver (1 worker)", "mlserver", "mlserver",
           ("{bin}/mlserver", "start", "{repo}"),
           "v2-mlserver", "/v2/models/model/infer", {**MLSERVER_ENV, "MLSERVER_PARALLEL_WORKERS": "1"},
           pair="mlserver (1 worker)"),
    Server("mlserver (1 worker) +batching", "mlserver", "mlserver",
           ("{bin}/mlserver", "start", "{repo}"),
           "v2-mlserver", "/v2/models/model/infer",
           {**MLSERVER_ENV, "MLSERVER_PARALLEL_WORKERS": "1", **MLSERVER_BATCH},
           pair="mlserver (1 worker)", batching=True),
    Server("mlserver (2 workers)", "mlserver", "mlserver",
           ("{bin}/mlserver", "start", "{repo}"),
           "v2-mlserver", "/v2/models/model/infer", {**MLSERVER_ENV, "MLSERVER_PARALLEL_WORKERS": "2"},
           pair="mlserver (2 workers)"),
    Server("mlserver (2 workers) +batching", "mlserver", "mlserver",
           ("{bin}/mlserver", "start", "{repo}"),
           "v2-mlserver", "/v2/models/model/infer",
           {**MLSERVER_ENV, "MLSERVER_PARALLEL_WORKERS": "2", **MLSERVER_BATCH},
           pair="mlserver (2 workers)", batching=True),
    Server("bentoml (2 workers)", "bentoml", "bentoml",
           ("{bin}/bentoml", "serve", "bentoml_service:Classifier", "--working-dir", "{peers}",
            "--host", HOST, "--port", "{port}"),
           "instances-list", "/predict", {"BENCH_WORKERS": "2", "BENCH_BATCHABLE": "0"},
           pair="bentoml (2 workers)"),
    Server("bentoml (2 workers) +batchable", "bentoml", "bentoml",
           ("{bin}/bentoml", "serve", "bentoml_service:Classifier", "--working-dir", "{peers}",
            "--host", HOST, "--port", "{port}"),
           "instances-list", "/predict", {"BENCH_WORKERS": "2", "BENCH_BATCHABLE": "1"},
           pair="bentoml (2 workers)", batching=True),
    # modelport: the same model file, registered once per runtime; batching (on by default) by environment.
    Server("modelport onnx", "modelport", "project", MODELPORT_SERVE,
           "v2-modelport", "/v2/models/{name}/infer", {"MODELPORT_BATCHING": "off"},
           runtime="onnx", pair="modelport onnx"),
    Server("modelport onnx +batching", "modelport", "project", MODELPORT_SERVE,
           "v2-modelport", "/v2/models/{name}/infer", {"MODELPORT_BATCHING": "on"},
           runtime="onnx", pair="modelport onnx", batching=True),
    Server("modelport sklearn", "modelport", "project", MODELPORT_SERVE,
           "v2-modelport", "/v2/models/{name}/infer", {"MODELPORT_BATCHING": "off"},
           register=SKLEARN_RUNTIME, runtime="sklearn", pair="modelport sklearn"),
    Server("modelport sklearn +batching", "modelport", "project", MODELPORT_SERVE,
           "v2-modelport", "/v2/models/{name}/infer", {"MODELPORT_BATCHING": "on"},
           register=SKLEARN_RUNTIME, runtime="sklearn", pair="modelport sklearn",
           batching=True),
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    rows: int  # rows per request
    connections: int

    @property
    def name(self) -> str:
        return f"{self.rows} row{'s' if self.rows > 1 else ''} x {self.connections} conn"

    @property
    def key(self) -> str:
        return f"{self.rows}x{self.connections}"


CASES = (Case(1, 1), Case(1, 16), Case(1, 64), Case(64, 16))
MODELS = ("iris", "forest")

DURATION_S = 10.0
WARMUP_S = 2.0
QUICK_DURATION_S = 2.0
QUICK_WARMUP_S = 0.5
READY_TIMEOUT_S = 180.0
WRK_TIMEOUT = "5s"
