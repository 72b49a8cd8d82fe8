"""The Lambda handler's cold start with the quickstart model: what docs/lambda.md reports.

.venv/bin/python benchmarks/lambda_cold_start.py [--runs 5]

In a throwaway directory the quickstart model is trained and registered (iris@production) and
exported as ``modelport build`` bakes it. Then, --runs times, a fresh ``python -c`` process (as a
new Lambda execution environment starts a fresh interpreter) times ``import modelport.serverless``
and the first ``handler(event, None)`` call with the published API Gateway HTTP API (v2) sample
event turned into a V2 prediction: that first call builds the app and loads and warms the model,
which is the cold start's own share (the interpreter's start and Lambda's image pull are not in it).
A second call shows a warm event's time. Prints a Markdown table: median and range of each.

This runs the handler in-process on this machine, not in Lambda: Lambda's CPU share follows the
function's memory setting, so a real cold start differs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVENT = ROOT / "tests" / "events" / "apigw-v2-request-no-authorizer.json"
BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}]}

CHILD = """
import json, sys, time
started = time.perf_counter()
from modelport.serverless import handler
imported = time.perf_counter()
event = json.loads(sys.argv[1])
first = handler(event, None)
called = time.perf_counter()
second = handler(event, None)
warm = time.perf_counter()
assert first["statusCode"] == 200 and second["statusCode"] == 200, (first, second)
print(json.dumps({"import": imported - started, "first": called - imported, "warm": warm - called}))
"""


def event() -> dict[str, object]:
    document: dict[str, object] = json.loads(EVENT.read_text())
    body = json.dumps(BODY)
    context = document["requestContext"]
    assert isinstance(context, dict)
    document["rawPath"] = context["http"]["path"] = "/v2/models/iris/infer"
    context["http"]["method"] = "POST"
    headers = document["headers"]
    assert isinstance(headers, dict)
    headers.update({"content-type": "application/json", "content-length": str(len(body))})
    document["body"] = body
    return document


def export_quickstart(root: Path) -> Path:
    from rich.console import Console

    from modelport.cli.quickstart import train_and_register
    from modelport.registry.export import export_version
    from modelport.registry.registry import Registry
    from modelport.settings import Settings

    settings = Settings(home=root / "home")
    version = train_and_register(settings, Console(quiet=True))
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), root / "model", archive=False)
    return root / "model"


def one_run(model_dir: Path, home: Path, payload: str) -> dict[str, float]:
    env = {
        **os.environ,
        "MODELPORT_SAGEMAKER_MODEL_DIR": str(model_dir),
        "MODELPORT_HOME": str(home),
        "MODELPORT_INSECURE_OPEN": "1",
    }
    for name in ("MODELPORT_MODELS", "MODELPORT_SERVE_ALIAS", "MODELPORT_VERSION_POLICY"):
        env.pop(name, None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, payload], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the handler failed:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["process"] = total
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelport-lambda-bench-") as tmp:
        root = Path(tmp)
        model_dir = export_quickstart(root)
        payload = json.dumps(event())
        runs = [one_run(model_dir, root / f"lambda-home-{i}", payload) for i in range(args.runs)]

    def cell(key: str, scale: float = 1.0, unit: str = "s", digits: int = 2) -> str:
        values = [r[key] * scale for r in runs]
        return f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}–{max(values):.{digits}f})"

    cold = [r["import"] + r["first"] for r in runs]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or platform.machine(),
    )
    print(f"Lambda handler cold start, quickstart model (iris@production, ONNX), {args.runs} fresh processes")
    print(f"machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; {datetime.now(UTC):%Y-%m-%d}")
    print()
    print("| measure | median (range) |")
    print("|---|---|")
    print(f"| import modelport.serverless | {cell('import')} |")
    print(f"| first handler call (app built, model loaded and warmed, prediction) | {cell('first')} |")
    print(f"| cold start = import + first call | {statistics.median(cold):.2f} s ({min(cold):.2f}–{max(cold):.2f}) |")
    print(f"| warm call (second event) | {cell('warm', 1000, 'ms', 1)} |")
    print(f"| whole process (interpreter start to exit) | {cell('process')} |")


if __name__ == "__main__":
    main()
