"""Every framework ingest asks satisfies one protocol, and asking it about a model it does not
claim loads none of the heavy libraries."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelport.errors import InvalidModel
from modelport.ingest.frameworks import FRAMEWORKS, Framework
from modelport.ingest.package import package

HEAVY = ("xgboost", "lightgbm", "onnxmltools", "torch", "tensorflow", "keras", "tf2onnx")


@pytest.mark.parametrize("framework", FRAMEWORKS, ids=lambda framework: framework.name)
def test_every_framework_satisfies_the_protocol(framework: Framework) -> None:
    assert isinstance(framework, Framework)
    for method in ("claims", "package", "register_converters"):
        mine = inspect.signature(getattr(framework, method))
        protocol = inspect.signature(getattr(Framework, method))
        wanted = [(p.name, p.kind) for p in protocol.parameters.values() if p.name != "self"]
        assert [(p.name, p.kind) for p in mine.parameters.values()] == wanted, method


def test_frameworks_have_one_name_each_and_claim_nothing_of_each_other(tmp_path: Path) -> None:
    assert len({framework.name for framework in FRAMEWORKS}) == len(FRAMEWORKS)
    assert [framework.name for framework in FRAMEWORKS] == ["boosting", "pytorch", "tensorflow"]
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "model.pt2").write_bytes(b"")
    (tmp_path / "model.txt").write_text("tree\nversion=v4\n")
    claimed = {path.name: [f.name for f in FRAMEWORKS if f.claims(path)] for path in tmp_path.iterdir()}
    assert claimed == {"saved": ["tensorflow"], "model.pt2": ["pytorch"], "model.txt": ["boosting"]}


@pytest.mark.slow  # a fresh Python process
def test_asking_the_frameworks_about_other_models_imports_no_heavy_library(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"weights": [1, 2]}')
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "plain").mkdir()
    code = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from modelport.ingest.frameworks import FRAMEWORKS
        root = Path({str(tmp_path)!r})
        others = [
            LogisticRegression(), make_pipeline(StandardScaler(), LogisticRegression()), np.zeros(3), object(),
            root / "other.json", root / "notes.txt", root / "plain", root / "model.onnx", root / "missing.keras",
        ]
        claimed = [(f.name, repr(other)) for f in FRAMEWORKS for other in others if f.claims(other)]
        for framework in FRAMEWORKS:
            framework.register_converters(others[1])
        print(json.dumps({{"claimed": claimed, "loaded": sorted(set(sys.modules) & set({HEAVY!r}))}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"claimed": [], "loaded": []}


def test_a_model_no_framework_claims_is_refused_with_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match=r"cannot register a builtins\.object; give a scikit-learn estimator"):
        package(object(), workdir=tmp_path)
