"""Benchmark modelport against the real peers, side by side, with wrk on 127.0.0.1.

    .venv/bin/python benchmarks/run.py            # everything (make bench)
    .venv/bin/python benchmarks/run.py --quick    # 2 s per case: a smoke run (make bench-quick)
    .venv/bin/python benchmarks/run.py --quick --servers hello,modelport --models iris --cases 1x16

What is run is in benchmarks/config.py. Each server is started alone, waited for, checked for
correct answers (the labels the model's own predict gives on the same payload), loaded with wrk
for each case, and stopped; a server that fails to start or answers wrongly is reported, not
loaded. Every server is stopped at the end, on errors and Ctrl-C too. Results go to
benchmarks/.work/results.json, docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import config
import joblib
import numpy as np
import report
from config import HOST, Case, Server

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
VENVS_DIR = BENCH / ".venvs"
WORK = BENCH / ".work"
PROJECT_BIN = ROOT / ".venv" / "bin"
RUNNING: list[subprocess.Popen[bytes]] = []


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- tools and environments


def find_uv() -> str:
    """uv as scripts/setup.sh finds it: on PATH, else in the project's .venv."""
    uv = shutil.which("uv") or str(PROJECT_BIN / "uv")
    if not Path(uv).exists():
        sys.exit("uv not found: run `make setup` (it installs uv into .venv) or put uv on PATH")
    return uv


def ensure_wrk() -> str:
    if not shutil.which("wrk"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            sys.exit("wrk not found: install the Debian package `wrk` (apt-get install wrk)")
        log("installing wrk (Debian package)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"],
                       check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    return shutil.which("wrk") or "wrk"


def venv_python(venv: str) -> Path:
    return ROOT / ".venv/bin/python" if venv == "project" else VENVS_DIR / venv / "bin/python"


def setup_venvs(names: set[str], uv: str, sklearn_version: str) -> None:
    for name in sorted(names - {"project"}):
        requirements = list(config.VENVS[name])
        if name in config.NEEDS_SKLEARN:
            requirements.append(f"scikit-learn=={sklearn_version}")
        if not venv_python(name).exists():
            log(f"creating benchmarks/.venvs/{name}")
            subprocess.run([uv, "venv", "-q", "-p", "3.11", str(VENVS_DIR / name)], check=True)
        log(f"installing into {name}: {' '.join(requirements)}")
        subprocess.run([uv, "pip", "install", "-q", "-p", str(venv_python(name)), *requirements], check=True)


def versions(venv: str, uv: str) -> dict[str, str]:
    out = subprocess.run([uv, "pip", "list", "--format", "json", "-p", str(venv_python(venv))],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return {p["name"]: p["version"] for p in json.loads(out) if p["name"] in config.REPORTED}


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(), "wrk": wrk_version,
            "loadavg_start": os.getloadavg()}  # fmt: skip


# ---------------------------------------------------------------- models and payloads


def train_models(work: Path) -> dict[str, dict[str, Any]]:
    """Both models, trained once with fixed seeds; saved for the peers (joblib) and modelport."""
    from sklearn.datasets import load_iris, make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X_iris, y_iris = load_iris(return_X_y=True)
    X_forest, y_forest = make_classification(n_samples=4000, n_features=32, n_informative=16,
                                             n_classes=3, random_state=42)  # fmt: skip
    X_forest = np.round(X_forest, 4)
    fitted = {
        "iris": (LogisticRegression(max_iter=1000).fit(X_iris, y_iris), X_iris),
        "forest": (RandomForestClassifier(n_estimators=300, max_depth=12, random_state=42, n_jobs=1)
                   .fit(X_forest, y_forest), X_forest),
    }  # fmt: skip
    models = {}
    rng = np.random.default_rng(7)
    for name, (model, X) in fitted.items():
        path = work / f"{name}.joblib"
        joblib.dump(model, path)
        np.save(work / f"{name}_sample.npy", X[:50].astype(np.float32))
        rows = X[rng.choice(len(X), size=64, replace=False)]
        models[name] = {"file": path, "sample": work / f"{name}_sample.npy", "rows": rows,
                        "labels": model.predict(rows).tolist(), "features": X.shape[1]}  # fmt: skip
    return models


def encode(protocol: str, rows: np.ndarray) -> bytes:
    if protocol in ("fixed", "instances", "instances-list"):
        body: dict[str, Any] = {"instances": rows.tolist()}
    elif protocol == "v2-mlserver":
        body = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                            "data": rows.ravel().tolist()}]}  # fmt: skip
    elif protocol == "v2-modelport":
        body = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                            "data": rows.ravel().tolist()}], "outputs": [{"name": "label"}]}  # fmt: skip
    else:
        raise ValueError(protocol)
    return json.dumps(body, separators=(",", ":")).encode()


def decode(protocol: str, answer: Any) -> list[int]:
    if protocol in ("fixed", "instances"):
        labels = answer["predictions"]
    elif protocol == "instances-list":
        labels = answer
    else:  # V2
        labels = answer["outputs"][0]["data"]
    return [int(x) for x in labels]


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def modelport_env_vars() -> set[str]:
    """The MODELPORT_* variables the running modelport reads (empty if it cannot tell)."""
    code = ("from modelport.settings import Settings\nprint(*Settings().to_env())\n"
            "from modelport.settings import ENVIRONMENT\nprint(*(v[0] for v in ENVIRONMENT.values()))")  # fmt: skip
    result = subprocess.run([str(venv_python("project")), "-c", code], capture_output=True, text=True)
    return set(result.stdout.split())  # whatever printed before a failure still counts


class Registrations:
    """Registers each model once per set of `register` options into a benchmark-local home."""

    def __init__(self, home: Path, models: dict[str, dict[str, Any]]) -> None:
        shutil.rmtree(home, ignore_errors=True)
        self.home = home
        self.models = models
        self.done: dict[tuple[str, tuple[str, ...]], tuple[str, str]] = {}

    def env(self) -> dict[str, str]:
        return {**os.environ, "MODELPORT_HOME": str(self.home)}

    def ref(self, model: str, options: tuple[str, ...], suffix: str) -> tuple[str, str]:
        """(reference, runtime) of the registration as MODEL_SUFFIX; raises RuntimeError with the
        CLI's words."""
        if (model, options) not in self.done:
            name = f"{model}_{suffix}" if options else model
            data = self.models[model]
            command = [str(PROJECT_BIN / "modelport"), "register", str(data["file"]), "--name", name,
                       "--sample", str(data["sample"]), "--trust-pickle", *options]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, env=self.env())
            found = re.search(r"registered (\S+), served by the (\w+) runtime", result.stdout)
            if result.returncode == 0 and found:
                self.done[(model, options)] = (found.group(1), found.group(2))
            else:
                words = [w for w in (result.stderr or result.stdout).splitlines() if w.strip(" │╭╰─")]
                self.done[(model, options)] = ("", f"`modelport register {' '.join(options)}` failed: "
                                                   f"{words[-1].strip(' │') if words else '?'}")  # fmt: skip
        ref, runtime = self.done[(model, options)]
        if not ref:
            raise RuntimeError(runtime)
        return ref, runtime


def prepare(server: Server, model: str, models: dict[str, dict[str, Any]], regs: Registrations,
            known_env: set[str]) -> dict[str, str]:  # fmt: skip
    """The template fields for one server and model; raises RuntimeError('skip: ...') when the
    running modelport lacks what the configuration needs."""
    fields = {"port": str(free_port()), "port2": str(free_port()), "port3": str(free_port()),
              "peers": str(BENCH / "peers"), "model_file": str(models[model]["file"]),
              "modelport": str(PROJECT_BIN / "modelport"), "bin": str(venv_python(server.venv).parent),
              "name": model, "ref": "", "repo": ""}  # fmt: skip
    if server.group == "modelport":
        missing = [f"this modelport does not read {v}" for v in server.env
                   if v.startswith("MODELPORT_") and v not in known_env]  # fmt: skip
        try:
            ref, runtime = regs.ref(model, server.register, server.runtime)
            if server.runtime and runtime != server.runtime:
                missing.append(f"registered with the {runtime} runtime, not {server.runtime}")
            fields["ref"], fields["name"] = ref, ref.split("@")[0]
        except RuntimeError as e:
            missing.append(str(e))
        if missing:
            raise RuntimeError("skipped: " + "; ".join(missing))
    if server.group == "mlserver":
        repo = WORK / f"mlserver-{model}"
        (repo / "model").mkdir(parents=True, exist_ok=True)
        settings = {"name": "model", "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": str(models[model]["file"])}}  # fmt: skip
        (repo / "model" / "model-settings.json").write_text(json.dumps(settings, indent=2))
        fields["repo"] = str(repo)
    return fields


def fill(template: str, fields: dict[str, str]) -> str:
    return template.format(**fields)


@contextlib.contextmanager
def running(server: Server, fields: dict[str, str], logfile: Path,
            extra_env: dict[str, str]) -> Iterator[tuple[list[str], subprocess.Popen[bytes]]]:  # fmt: skip
    """Start the server in its own process group; always stop the whole group afterwards."""
    command = [fill(part, fields) for part in server.command]
    env = {**os.environ, **extra_env,
           "BENTOML_HOME": str(WORK / "bentoml-home"), "BENTOML_DO_NOT_TRACK": "true",
           **{k: fill(v, fields) for k, v in server.env.items()}}  # fmt: skip
    with logfile.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=WORK, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    RUNNING.append(proc)
    try:
        yield command, proc
    finally:
        stop(proc)
        RUNNING.remove(proc)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no worker of its group outlives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(url: str, body: bytes, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until the server answers 200 to a real request; raises if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"failed to start: exited with code {proc.returncode} before it was ready")
        try:
            status, answer = post(url, body, timeout=5.0)
            if status == 200:
                return
            last = f"HTTP {status}: {answer[:200].decode(errors='replace')}"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.25)
    raise RuntimeError(f"failed to start: not ready after {timeout_s:.0f} s ({last})")


def check(url: str, protocol: str, data: dict[str, Any]) -> str:
    """'' when the answers match the model's own predict, for 1 row and for 64 rows; else why."""
    if protocol == "fixed":
        return ""
    for n in (1, len(data["rows"])):
        status, answer = post(url, encode(protocol, data["rows"][:n]))
        if status != 200:
            return f"{n} rows: HTTP {status}: {answer[:200].decode(errors='replace')}"
        try:
            got = decode(protocol, json.loads(answer))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return f"{n} rows: unreadable answer ({e!r}): {answer[:200].decode(errors='replace')}"
        if got != data["labels"][:n]:
            wrong = sum(a != b for a, b in zip(got, data["labels"][:n], strict=False))
            return f"{n} rows: {wrong} of {n} labels differ from the model's own predict"
    return ""


# ---------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk_script(path: Path, body: bytes) -> Path:
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = [==[{body.decode()}]==]\n")  # fmt: skip
    return path


def wrk_command(url: str, script: Path, case: Case, duration_s: float) -> list[str]:
    threads = min(2, case.connections)  # wrk shares the cores with the server: keep it small
    return ["wrk", f"-t{threads}", f"-c{case.connections}", f"-d{duration_s:g}s", "--latency",
            "--timeout", config.WRK_TIMEOUT, "-s", str(script), url]  # fmt: skip


def parse_wrk(out: str) -> dict[str, Any]:
    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        return float(found.group(1)) if found else 0.0

    # wrk pads "1.02s" with a trailing space to line up with "ms" and "us".
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in sockets.groups()) if sockets else 0
    return {"rps": number(r"Requests/sec:\s+([\d.]+)"), "requests": int(number(r"(\d+) requests in")),
            "p50_ms": _ms(latency["50"]) if "50" in latency else None,
            "p99_ms": _ms(latency["99"]) if "99" in latency else None,
            "non2xx": int(number(r"Non-2xx or 3xx responses: (\d+)")), "socket_errors": socket_errors}  # fmt: skip


def load(url: str, body: bytes, case: Case, duration_s: float, warmup_s: float, script: Path,
         logfile: Path) -> dict[str, Any]:  # fmt: skip
    wrk_script(script, body)
    if warmup_s > 0:
        subprocess.run(wrk_command(url, script, case, warmup_s), capture_output=True, timeout=warmup_s + 60)
    command = wrk_command(url, script, case, duration_s)
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60).stdout
    with logfile.open("a") as raw:
        raw.write(f"$ {shlex.join(command)}\n{out}\n")
    result = parse_wrk(out)
    result["errors"] = result["non2xx"] + result["socket_errors"]
    result["wrk"] = shlex.join(command).replace(f"{ROOT}/", "")
    return result


# ---------------------------------------------------------------- driver


def selected(items: tuple[Any, ...], wanted: str, key: Callable[[Any], str]) -> list[Any]:
    if not wanted:
        return list(items)
    words = [w.strip().lower() for w in wanted.split(",") if w.strip()]
    return [item for item in items if any(w in key(item).lower() for w in words)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: short cases, marked as smoke figures")
    parser.add_argument("--duration", type=float, help="seconds per case (default 10, --quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each case (default 2, --quick 0.5)")
    parser.add_argument("--servers", default="", help="comma list of substrings of server names or groups")
    parser.add_argument("--models", default="", help="comma list: iris, forest")
    parser.add_argument("--cases", default="", help="comma list of ROWSxCONNECTIONS, e.g. 1x1,64x16")
    parser.add_argument("--no-install", action="store_true", help="use benchmarks/.venvs as they are")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite the page and chart from benchmarks/.work/results.json")  # fmt: skip
    parser.add_argument("--output", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs/benchmarks.png")
    return parser.parse_args(argv)


def bench_server(server: Server, model: str, trained: dict[str, dict[str, Any]], regs: Registrations,
                 known_env: set[str], cases: list[Case], duration: float, warmup: float,
                 commands: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """One server with one model: prepare, start, wait, check, load every case, stop."""
    data = trained[model]
    title = f"{model} / {server.name}"
    row: dict[str, Any] = {"model": model, "server": server.name, "group": server.group,
                           "pair": server.pair, "batching": server.batching, "cases": {}}  # fmt: skip
    try:
        fields = prepare(server, model, trained, regs, known_env)
    except RuntimeError as e:
        row["status"] = str(e)
        log(f"{title}: {e}")
        return row
    url = f"http://{HOST}:{fields['port']}{fill(server.path, fields)}"
    logfile = WORK / "logs" / f"{model}-{re.sub(r'[^a-z0-9]+', '-', server.name.lower()).strip('-')}.log"
    wrk_log = logfile.with_suffix(".wrk.txt")
    wrk_log.unlink(missing_ok=True)
    extra_env = regs.env() if server.group == "modelport" else {"BENCH_MODEL": str(data["file"])}
    log(f"{title}: starting")
    with running(server, fields, logfile, extra_env) as (command, proc):
        shown_env = {k: v for k, v in extra_env.items() if k.startswith(("BENCH_", "MODELPORT_"))}
        shown_env |= {k: fill(v, fields) for k, v in server.env.items()}
        shown = shlex.join([*(f"{k}={v}" for k, v in shown_env.items()), *command])
        commands[title] = shown.replace(f"{ROOT}/", "")  # paths relative to the repository
        try:
            t0 = time.monotonic()
            wait_ready(url, encode(server.protocol, data["rows"][:1]), proc, config.READY_TIMEOUT_S)
            row["ready_s"] = round(time.monotonic() - t0, 1)
            problem = check(url, server.protocol, data)
            if problem:
                raise RuntimeError(f"wrong answers, not loaded: {problem}")
        except RuntimeError as e:
            row["status"] = f"{e} (log: {logfile.relative_to(ROOT)})"
            log(f"{title}: {row['status']}")
            return row
        row["status"] = "ok" if server.protocol != "fixed" else "ok (fixed answer, not checked)"
        for case in cases:
            body = encode(server.protocol, data["rows"][: case.rows])
            result = load(url, body, case, duration, warmup, WORK / "request.lua", wrk_log)
            row["cases"][case.key] = result
            log(f"{title} / {case.name}: {result['rps']:.0f} req/s, p50 {report.fmt(result['p50_ms'])} ms, "
                f"p99 {report.fmt(result['p99_ms'])} ms, errors {result['errors']}")  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        write_outputs(json.loads((WORK / "results.json").read_text()), args.output, args.chart)
        return 0
    duration = args.duration or (config.QUICK_DURATION_S if args.quick else config.DURATION_S)
    warmup = args.warmup if args.warmup is not None else (config.QUICK_WARMUP_S if args.quick else config.WARMUP_S)
    servers = selected(config.SERVERS, args.servers, lambda s: f"{s.name} {s.group}")
    models = [m for m in config.MODELS if not args.models or m in args.models.split(",")]
    cases = [c for c in config.CASES if not args.cases or c.key in args.cases.split(",")]
    if not (servers and models and cases):
        sys.exit("nothing selected: check --servers, --models and --cases")

    import sklearn

    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "logs").mkdir(exist_ok=True)
    ensure_wrk()
    uv = find_uv()
    venvs = {s.venv for s in servers} | {"chart"}
    if not args.no_install:
        setup_venvs(venvs, uv, sklearn.__version__)
    log("training the models")
    trained = train_models(WORK)
    regs = Registrations(WORK / "modelport-home", trained)
    known_env = modelport_env_vars()
    started, machine_info = dt.datetime.now(dt.UTC), machine()
    results: list[dict[str, Any]] = []
    commands: dict[str, str] = {}

    for model in models:
        for server in servers:
            results.append(bench_server(server, model, trained, regs, known_env, cases, duration, warmup, commands))

    info = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick, "duration_s": duration,
            "warmup_s": warmup, "machine": {**machine_info, "loadavg_end": os.getloadavg()},
            "argv": shlex.join([".venv/bin/python", "benchmarks/run.py", *sys.argv[1:]]),
            "versions": {v: versions(v, uv) for v in sorted(venvs - {"chart"})}, "commands": commands,
            "cases": [c.key for c in cases], "results": results}  # fmt: skip
    (WORK / "results.json").write_text(json.dumps(info, indent=2, default=str))
    write_outputs(info, args.output, args.chart)
    return 0


KEPT = re.compile(r"<!-- begin: (\S+) -->.*?<!-- end: \1 -->\n?", re.S)


def write_outputs(info: dict[str, Any], output: Path, chart_path: Path) -> None:
    # Sections other benchmarks wrote between <!-- begin: NAME --> and <!-- end: NAME --> are kept.
    kept = "".join(m.group(0) for m in KEPT.finditer(output.read_text())) if output.exists() else ""
    text = report.markdown(info, os.path.relpath(chart_path, output.parent))
    output.write_text(text + ("\n" + kept if kept else ""))
    log(f"wrote {output}")
    chart = subprocess.run([str(venv_python("chart")), str(BENCH / "chart.py"), str(WORK / "results.json"),
                            str(chart_path)], capture_output=True, text=True)  # fmt: skip
    if chart.returncode != 0:
        log(f"chart failed: {chart.stderr.strip()[-500:]}")
    else:
        log(f"wrote {chart_path}")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every `running` block, which stops its server


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: stopping servers")
        sys.exit(130)
    finally:
        for leftover in list(RUNNING):
            stop(leftover, grace_s=5.0)
