"""Shared fixtures: a throwaway modelport home and small real models' data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelport.settings import Settings

# A third-party plugin distribution (runtimes and a store, by entry point): see tests/plugins/README.md.
PLUGINS = Path(__file__).parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

pytest_plugins = ["tests.postgres"]  # the session-scoped `postgres_url` fixture

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose registry and artifacts live in a fresh temporary home."""
    return Settings(home=tmp_path / "home")


@pytest.fixture(scope="session")
def iris() -> tuple[pd.DataFrame, np.ndarray]:
    """Iris features with clean column names and string class labels."""
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.data.copy()
    frame.columns = IRIS_FEATURES
    labels = np.asarray(data.target_names)[data.target]
    return frame, labels
