"""Shared fixtures: a throwaway modelport home and small real models' data."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelport.settings import Settings

# A third-party plugin distribution (runtimes and a store, by entry point): see tests/plugins/README.md.
PLUGINS = Path(__file__).parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

pytest_plugins = [
    "tests.support.postgres",  # session-scoped `postgres_url` fixture
    "tests.support.s3",  # session-scoped `s3_server` fixture
    "tests.support.budget",  # --time-budget: a test not marked slow fails past it
    "pytester",  # tests/project/test_time_budget.py runs pytest on small test files
]

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose registry and artifacts live in a fresh temporary home."""
    return Settings(home=tmp_path / "home")


@pytest.fixture
async def fake_manager(tmp_path: Path) -> AsyncIterator[Any]:
    """A manager serving ``iris@1``, the fake linear model (tests.support.serving.fake_version), loaded."""
    from modelport.serving.manager import ModelManager
    from tests.support.serving import DirectorySource, fake_version

    manager = ModelManager(DirectorySource([fake_version(tmp_path)]))
    await manager.load(["iris"])
    yield manager
    manager.close()


@pytest.fixture(scope="session")
def iris() -> tuple[pd.DataFrame, np.ndarray]:
    """Iris features with clean column names and string class labels."""
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.data.copy()
    frame.columns = IRIS_FEATURES
    labels = np.asarray(data.target_names)[data.target]
    return frame, labels


_SERVER_LOGGERS = ("modelport", "uvicorn", "uvicorn.error", "uvicorn.access")
_PRISTINE = [
    (lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in map(logging.getLogger, _SERVER_LOGGERS)
]


@pytest.fixture(autouse=True)
def _server_loggers_restored() -> Iterator[None]:
    """A server started in-process, or the CLI run by ``CliRunner``, configures these loggers
    (handlers on streams that are closed afterwards, no propagation). Before and after each test
    they are put back as they were when the session started, whatever ran before (module-scoped
    fixtures included), so ``caplog`` sees every record and no handler writes to a closed stream."""
    _restore()
    yield
    _restore()


def _restore() -> None:
    for lg, handlers, level, propagate, disabled in _PRISTINE:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
        lg.disabled = disabled
