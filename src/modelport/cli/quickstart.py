"""``modelport quickstart``: train the Iris example, register it, serve it, show a prediction."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import httpx
from rich.console import Console

from modelport.errors import ModelportError
from modelport.server.spawn import port_free, serving
from modelport.settings import Settings
from modelport.types import ModelVersion

NAME = "iris"
ALIAS = "production"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
EXAMPLE = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
READY_TIMEOUT_S = 120.0


def train_and_register(settings: Settings, console: Console) -> ModelVersion:
    """Fit a scaled LogisticRegression on the Iris data scikit-learn ships, register it."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from modelport.api import register

    data = load_iris(as_frame=True)
    frame = data.data.set_axis(FEATURES, axis=1)
    labels = data.target_names[data.target]
    x_train, x_test, y_train, y_test = train_test_split(frame, labels, test_size=0.3, random_state=0, stratify=labels)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))
    console.print(f"trained LogisticRegression on Iris: test accuracy {accuracy:.3f}")
    version = register(
        model,
        name=NAME,
        sample_input=x_test,
        alias=ALIAS,
        metrics={"accuracy": round(accuracy, 4)},
        params={"C": 1.0, "max_iter": 1000},
        tags={"example": "quickstart"},
        description="Iris species from flower measurements (modelport quickstart)",
        settings=settings,
    )
    console.print(f"registered [bold]{version.ref}[/] as {NAME}@{ALIAS} ({version.runtime} runtime)")
    for note in version.notes:
        console.print(f"  - {note}")
    return version


def _show_usage(console: Console, base: str) -> None:
    v2 = f"{base}/v2/models/{NAME}/versions/{ALIAS}/infer"
    tf = f"{base}/v1/models/{NAME}/labels/{ALIAS}:predict"
    row = ", ".join(f'"{k}": {v}' for k, v in EXAMPLE.items())
    console.print()
    console.print(f"[bold]API docs (try it out):[/]  {base}/docs")
    console.print(f"[bold]Open Inference (V2):[/]    {v2}")
    console.print(f"[bold]TF Serving REST:[/]        {tf}")
    console.print()
    console.print("try it:")
    console.print(f"  curl -s {tf} -d '{{\"instances\": [{{{row}}}]}}'", soft_wrap=True)
    console.print(
        f'  curl -s {v2} -H \'content-type: application/json\' -d \'{{"inputs": [{{"name": "input", '
        f'"shape": [1, 4], "datatype": "FP32", "data": [{", ".join(str(v) for v in EXAMPLE.values())}]}}]}}\'',
        soft_wrap=True,
    )


def _predict(console: Console, base: str) -> dict[str, Any]:
    url = f"{base}/v1/models/{NAME}/labels/{ALIAS}:predict"
    response = httpx.post(url, json={"instances": [EXAMPLE]}, timeout=10.0)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    prediction = answer["predictions"][0]
    console.print()
    console.print(f"prediction for {EXAMPLE}:")
    console.print(
        f"  [bold green]{prediction['label']}[/] (probabilities {[round(p, 4) for p in prediction['probabilities']]}), "
        f"served by version {response.headers.get('modelport-model-version')}"
    )
    return answer


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread,
    whatever this process inherited, as ``modelport serve`` (uvicorn) handles both itself.

    A program started in the background by a non-interactive shell (``cmd &``, and every process
    such a program starts) begins with SIGINT ignored, and Python then never raises
    KeyboardInterrupt: the quickstart ignored Ctrl-C and ``kill -INT`` for good. SIGTERM's default
    action killed it on the spot and left its server process running, orphaned, on the port."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(*, port: int, serve_forever: bool, console: Console) -> int:
    """The whole quickstart; returns the exit code."""
    if port and not port_free(port):
        raise ModelportError(f"port {port} is in use (is another modelport server running?); pass --port (0: any)")
    with _stopped_by_signals():
        return _run(port, serve_forever, console)


def _run(port: int, serve_forever: bool, console: Console) -> int:
    settings = Settings.from_env()
    train_and_register(settings, console)
    try:
        with serving([f"{NAME}@{ALIAS}"], port=port or None, capture=False, ready_timeout_s=READY_TIMEOUT_S) as server:
            _show_usage(console, server.base)
            _predict(console, server.base)
            if serve_forever:
                console.print()
                console.print(f"serving on {server.base}; press Ctrl-C to stop")
                server.process.wait()
    except KeyboardInterrupt:
        pass
    console.print("stopped")
    return 0
