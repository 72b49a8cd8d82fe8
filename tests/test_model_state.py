"""Safe formats carrying unsafe state: skops files whose allow-listed objects hold arrays that
scikit-learn's compiled code follows unchecked (a tree child 2**40 away: SIGSEGV on the first
request that reaches it; a node pointing to itself: a worker pinned for good), neighbour indexes
with indices out of range, and allow-listed classes used as functions. Each is refused without
trust at registration and again at every load; trusted, it is recorded so that loading it asks
for trust again."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.neighbors import KDTree, KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import Bunch

from modelport.errors import UntrustedArtifact
from modelport.packaging.ingest import Packaged, package
from modelport.runtimes import sklearn as sklearn_runtime
from modelport.serving.loading import open_version
from modelport.types import ModelVersion
from tests.test_loading import version_of

X, Y = load_iris(return_X_y=True)
SAMPLE = X[:20]
FAR = np.array([[5000.0, 3.0, 1.5, 0.2]])  # sepal_length 5000: the only row that reaches the crafted node
ROOT = Path(__file__).resolve().parent.parent


def _leaf_reached_by_the_sample(tree: Any) -> int:
    return int(tree.apply(SAMPLE.astype(np.float32))[0])


def _crafted_tree(tree: Any, right: Callable[[int, int], int]) -> None:
    """Turn the leaf the sample's first row ends in into a split on sepal_length <= 1000: left to
    another leaf (so the sample takes sound paths), right to ``right(leaf, node_count)``."""
    leaf = _leaf_reached_by_the_sample(tree)
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    other = int(np.flatnonzero(nodes["left_child"] == -1)[-1])
    nodes["left_child"][leaf], nodes["right_child"][leaf] = other, right(leaf, len(nodes))
    nodes["feature"][leaf], nodes["threshold"][leaf] = 0, 1000.0
    tree.__setstate__({**state, "nodes": nodes})


def tree_out_of_range() -> Any:
    model = DecisionTreeClassifier(random_state=0).fit(X, Y)
    _crafted_tree(model.tree_, lambda leaf, count: 2**40)
    return model


def tree_deeper_than_it_says() -> Any:
    """Harmless to predict with (only ``decision_path`` sizes a buffer by max_depth), and refused all the same."""
    model = DecisionTreeClassifier(random_state=0).fit(X, Y)
    model.tree_.__setstate__({**model.tree_.__getstate__(), "max_depth": 1})
    return model


def tree_pointing_to_itself() -> Any:
    model = DecisionTreeClassifier(random_state=0).fit(X, Y)
    _crafted_tree(model.tree_, lambda leaf, count: leaf)
    return model


def forest_out_of_range() -> Any:
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y)
    _crafted_tree(model.estimators_[1].tree_, lambda leaf, count: 2**40)
    return model


def hist_gradient_boosting(right: Callable[[int, int], int]) -> Callable[[], Any]:
    def build() -> Any:
        model = HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(X, Y)
        nodes = model._predictors[0][0].nodes
        leaf = int(np.flatnonzero(nodes["is_leaf"] == 1)[0])
        nodes["is_leaf"][leaf], nodes["feature_idx"][leaf], nodes["num_threshold"][leaf] = 0, 0, 1000.0
        nodes["left"][leaf], nodes["right"][leaf] = leaf + 1, right(leaf, len(nodes))
        return model

    return build


def neighbours_index_out_of_range() -> Any:
    model = KNeighborsClassifier(algorithm="kd_tree").fit(X, Y)
    state = list(model._tree.__getstate__())
    state[1] = state[1].copy()
    state[1][:] = 2**40  # every index the query follows points far outside the data
    model._tree.__setstate__(tuple(state))
    return model


def class_as_function(cls: type) -> Callable[[], Any]:
    def build() -> Any:
        return make_pipeline(FunctionTransformer(np.asarray), DecisionTreeClassifier().fit(X, Y)).set_params(
            functiontransformer__func=cls
        )

    return build


CRAFTED = {
    "tree child 2**40": (tree_out_of_range, "child is outside the tree"),
    "tree node pointing to itself": (tree_pointing_to_itself, "not after it"),
    "tree deeper than its max_depth": (tree_deeper_than_it_says, "below the tree's depth"),
    "forest member child 2**40": (forest_out_of_range, "child is outside the tree"),
    "hist gradient boosting child 2**31": (hist_gradient_boosting(lambda leaf, count: 2**31), "outside the tree"),
    "hist gradient boosting self-loop": (hist_gradient_boosting(lambda leaf, count: leaf), "not after it"),
    "function transformer of numpy.dtype": (class_as_function(np.dtype), "class numpy.dtype, used as a function"),
    "function transformer of Bunch": (class_as_function(Bunch), "Bunch, used as a function"),
    "function transformer of KDTree": (class_as_function(KDTree), "KDTree, used as a function"),
}


def _skops_file(model: Any, path: Path) -> Path:
    sio.dump(model, path)
    return path


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_skops_file_is_refused_at_registration_without_trust(name: str, tmp_path: Path) -> None:
    build, problem = CRAFTED[name]
    path = _skops_file(build(), tmp_path / "model.skops")
    assert not sklearn_runtime.unsafe_types(sio.get_untrusted_types(file=path))  # every class is allow-listed
    with pytest.raises(UntrustedArtifact) as caught:
        package(path, workdir=tmp_path / "work", sample_input=SAMPLE)
    assert problem in caught.value.message
    assert "--trust-pickle" in caught.value.message


def _version_of(packaged: Packaged, *, trusted: bool) -> ModelVersion:
    return version_of(packaged, trusted_code=trusted)


@pytest.fixture
def native(tmp_path: Path) -> Packaged:
    """A sound decision tree registered for the native runtime (its stored skops file is what an
    attacker who can write artifacts or a model directory replaces)."""
    model = DecisionTreeClassifier(random_state=0).fit(X, Y)
    return package(model, workdir=tmp_path / "clean", sample_input=SAMPLE, runtime="sklearn")


@pytest.mark.parametrize("name", ["tree child 2**40", "tree node pointing to itself", "function transformer of KDTree"])
def test_a_stored_file_swapped_for_a_crafted_one_is_refused_at_load(name: str, native: Packaged) -> None:
    build, problem = CRAFTED[name]
    model_file = _skops_file(build(), native.directory / "model.skops")
    manifest = json.loads((native.directory / "sklearn.json").read_text())  # forged to list the file's types
    manifest["trusted_types"] = sio.get_untrusted_types(file=model_file)
    (native.directory / "sklearn.json").write_text(json.dumps(manifest))
    with pytest.raises(UntrustedArtifact, match=problem):
        open_version(_version_of(native, trusted=False), native.directory)


def test_a_forged_unchecked_flag_asks_for_trust_instead_of_skipping_the_check(native: Packaged) -> None:
    _skops_file(tree_out_of_range(), native.directory / "model.skops")
    manifest = json.loads((native.directory / "sklearn.json").read_text())
    (native.directory / "sklearn.json").write_text(json.dumps({**manifest, "unchecked_state": True}))
    with pytest.raises(UntrustedArtifact, match="iris@3 runs code when loaded"):
        open_version(_version_of(native, trusted=False), native.directory)


def test_a_trusted_owner_can_register_what_does_not_validate_and_it_stays_trusted_code(tmp_path: Path) -> None:
    path = _skops_file(tree_deeper_than_it_says(), tmp_path / "model.skops")
    packaged = package(path, workdir=tmp_path / "work", sample_input=SAMPLE, runtime="sklearn", trust_pickle=True)
    assert packaged.trusted_code
    assert json.loads((packaged.directory / "sklearn.json").read_text())["unchecked_state"] is True
    runtime = open_version(_version_of(packaged, trusted=True), packaged.directory)
    assert runtime.predict({"input": SAMPLE.astype(np.float32)})["label"].shape == (20,)
    with pytest.raises(UntrustedArtifact, match="runs code when loaded"):
        open_version(_version_of(packaged, trusted=False), packaged.directory)


def test_neighbour_indexes_are_rebuilt_from_their_data_never_followed(tmp_path: Path) -> None:
    path = _skops_file(neighbours_index_out_of_range(), tmp_path / "model.skops")
    packaged = package(path, workdir=tmp_path / "work", sample_input=SAMPLE, runtime="sklearn")
    estimator, _ = sklearn_runtime.load_estimator(packaged.directory)
    indices = np.asarray(estimator._tree.get_arrays()[1])
    assert sorted(indices) == list(range(len(X)))  # rebuilt by scikit-learn, not the stored 2**40s
    reference = KNeighborsClassifier(algorithm="kd_tree").fit(X, Y)
    np.testing.assert_array_equal(estimator.predict(X), reference.predict(X))


def test_real_estimators_pass_the_check_and_predict_as_before() -> None:
    from sklearn.ensemble import (
        BaggingClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        IsolationForest,
    )
    from sklearn.neighbors import BallTree, KernelDensity

    models = [
        RandomForestClassifier(n_estimators=5, random_state=0),
        ExtraTreesRegressor(n_estimators=5, random_state=0),
        GradientBoostingClassifier(n_estimators=5, random_state=0),
        HistGradientBoostingClassifier(max_iter=5, random_state=0),
        BaggingClassifier(DecisionTreeClassifier(), n_estimators=4, max_features=2, random_state=0),
        IsolationForest(n_estimators=5, random_state=0),
        KNeighborsClassifier(algorithm="ball_tree", metric="minkowski", p=3),
        KernelDensity(),
    ]
    for model in models:
        model.fit(X, Y)
        data = sio.dumps(model)
        loaded = sklearn_runtime.checked(sio.loads(data, trusted=sio.get_untrusted_types(data=data)))
        method = "score_samples" if hasattr(model, "score_samples") and not hasattr(model, "predict") else "predict"
        np.testing.assert_allclose(getattr(loaded, method)(X), getattr(model, method)(X))
    assert isinstance(BallTree(X).get_arrays()[0], np.ndarray)


def test_one_request_to_the_crafted_tree_no_longer_kills_the_process(native: Packaged) -> None:
    """The finding itself, in a process of its own: before the check, loading the file and
    predicting sepal_length=5000 died with SIGSEGV; now loading refuses it."""
    model_file = _skops_file(tree_out_of_range(), native.directory / "model.skops")
    manifest = json.loads((native.directory / "sklearn.json").read_text())
    (native.directory / "sklearn.json").write_text(
        json.dumps({**manifest, "trusted_types": sio.get_untrusted_types(file=model_file)})
    )
    packaged = native
    signature = json.dumps(packaged.signature.to_dict())
    script = (
        "import json, sys, numpy as np\n"
        "from modelport.errors import UntrustedArtifact\n"
        "from modelport.runtimes.sklearn import SklearnRuntime\n"
        "from modelport.types import Signature\n"
        "runtime = SklearnRuntime()\n"
        "try:\n"
        f"    runtime.load(sys.argv[1], Signature.from_dict(json.loads({signature!r})))\n"
        "except UntrustedArtifact as exc:\n"
        "    print('refused:', exc.message); sys.exit(0)\n"
        f"print(runtime.predict({{'input': np.array({FAR.tolist()!r}, dtype=np.float32)}}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(packaged.directory)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"the process ended with {result.returncode}: {result.stderr[-500:]}"
    assert result.stdout.startswith("refused: model.skops holds state"), result.stdout


async def test_a_sagemaker_model_directory_with_a_crafted_tree_is_refused_and_never_served(tmp_path: Path) -> None:
    """On a multi-model endpoint the attack took only a model directory and one invoke."""
    from modelport.server.app import build_app
    from modelport.settings import Settings
    from tests.serving import client_for

    directory = tmp_path / "models" / "evil" / "model"
    directory.mkdir(parents=True)
    _skops_file(tree_out_of_range(), directory / "model.skops")
    (directory / "sample.json").write_text(json.dumps(SAMPLE.tolist()))
    settings = Settings(
        home=tmp_path / "home", sagemaker=True, sagemaker_multi_model=True, sagemaker_models_dir=tmp_path / "models"
    )
    async with client_for(build_app(settings)) as client:
        response = await client.post("/models", json={"model_name": "evil", "url": str(directory)})
        assert response.status_code == 403, response.text
        assert "child is outside the tree" in response.json()["error"]
        invoked = await client.post("/models/evil/invoke", json=FAR.tolist())
        assert invoked.status_code == 404
