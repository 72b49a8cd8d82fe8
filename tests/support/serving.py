"""Helpers for serving tests: a model source over artifact directories, in-process app clients,
a real uvicorn server on a free port, and registering the real Iris model."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import httpx
import numpy as np
import uvicorn
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from modelport.errors import NotFound
from modelport.reference import Reference
from modelport.runtimes import create
from modelport.runtimes.base import Runtime
from modelport.runtimes.fake import FakeRuntime, write_artifact
from modelport.settings import Settings
from modelport.types import ModelVersion, Signature

# A fixed 4-feature, 3-class linear model for the fake runtime (iris-shaped, string labels).
WEIGHTS = [[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-2.0, 0.1, 1.5], [-1.0, 0.4, 2.0]]
BIAS = [2.0, 0.5, -3.0]
CLASSES = ["setosa", "versicolor", "virginica"]
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@dataclass
class DirectorySource:
    """A real :class:`ModelSource` over versions whose artifacts are plain directories.

    It resolves references the way the registry does (version, alias, latest) and opens
    artifacts with the built-in runtimes; it lets manager and protocol tests run without a DB.
    """

    versions: list[tuple[ModelVersion, Path]]
    opened: int = 0

    def resolve(self, ref: Reference) -> ModelVersion:
        mine = [v for v, _ in self.versions if v.name == ref.name]
        if not mine:
            raise NotFound(f"no model named {ref.name!r}")
        if ref.version is not None:
            found = [v for v in mine if v.version == ref.version]
        elif ref.alias is not None:
            found = [v for v in mine if ref.alias in v.aliases]
        else:
            found = [max(mine, key=lambda v: v.version)]
        if not found:
            raise NotFound(f"{ref} does not exist")
        return found[0]

    def open(self, version: ModelVersion) -> Runtime:
        path = next(p for v, p in self.versions if v is version)
        runtime = create(version.runtime)
        runtime.load(path, version.signature)
        self.opened += 1
        return runtime


class ExplodingRuntime(FakeRuntime):
    """The fake model, failing on rows whose first feature is negative (a real runtime fault: 500)."""

    kind: ClassVar[str] = "exploding"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if float(next(iter(inputs.values()))[0, 0]) < 0:
            raise FloatingPointError("cannot score negative lengths")
        return super().predict(inputs)


class ExplodingSource(DirectorySource):
    """A :class:`DirectorySource` whose versions all open as :class:`ExplodingRuntime`."""

    def open(self, version: ModelVersion) -> Runtime:
        runtime = ExplodingRuntime()
        runtime.load(next(p for v, p in self.versions if v is version), version.signature)
        return runtime


def fake_version(
    root: Path,
    name: str = "iris",
    number: int = 1,
    *,
    aliases: Sequence[str] = (),
    weights: Sequence[Sequence[float]] = WEIGHTS,
    features: Sequence[str] | None = FEATURES,
) -> tuple[ModelVersion, Path]:
    """Write a fake-runtime artifact and describe it as a registered version."""
    directory = root / f"{name}-{number}"
    signature = write_artifact(directory, weights, bias=BIAS, classes=CLASSES, feature_names=features)
    example = {"input": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    signature = Signature(signature.inputs, signature.outputs, example=example)
    version = ModelVersion(
        name=name,
        version=number,
        runtime="fake",
        framework="fake",
        artifact=f"sha256:{number:064x}",
        signature=signature,
        created_at=datetime.now(UTC),
        aliases=tuple(aliases),
    )
    return version, directory


def with_signature(pair: tuple[ModelVersion, Path], signature: Signature) -> tuple[ModelVersion, Path]:
    return replace(pair[0], signature=signature), pair[1]


class Served(Protocol):
    """What these helpers serve: an ASGI app whose Starlette router holds the lifespan, a
    :class:`~modelport.server.app.ModelportApp` or a plain ``Starlette`` app."""

    @property
    def router(self) -> Router: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


@asynccontextmanager
async def client_for(app: Served) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client with the app's lifespan (startup and shutdown) really run."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://modelport.test") as client:
            yield client


@contextmanager
def running(app: Served, **options: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on loopback port 0 (the port the system chose is read
    back from the bound socket); yields ``host:port``. ``options`` go to uvicorn's Config."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def register_iris(
    settings: Settings, iris: Any, *, aliases: Sequence[str] = ("production",), strength: float = 1.0
) -> tuple[ModelVersion, Any]:
    """Fit a real LogisticRegression on Iris and register it (ONNX runtime) in ``settings``' registry.

    Returns the registered version and the fitted estimator (to compare predictions with).
    """
    from sklearn.linear_model import LogisticRegression

    from modelport.api import register

    frame, labels = iris
    model = LogisticRegression(C=strength, max_iter=500).fit(frame, labels)
    version = register(model, name="iris", sample_input=frame.head(20), alias=aliases, settings=settings)
    return version, model
