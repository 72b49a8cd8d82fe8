"""Safe formats carrying unsafe state: skops files whose allow-listed objects hold arrays that
scikit-learn's compiled code follows unchecked (a tree child 2**40 away: SIGSEGV on the first
request that reaches it; a node pointing to itself: a worker pinned for good), neighbour indexes
with indices out of range, and allow-listed classes used as functions. Each is refused without
trust at registration and again at every load; trusted, it is recorded so that loading it asks
for trust again."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KDTree, KNeighborsClassifier, KNeighborsRegressor, RadiusNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder
from sklearn.svm import SVC, SVR, NuSVC, NuSVR
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import Bunch

from modelport.errors import UntrustedArtifact
from modelport.ingest.package import package
from modelport.ingest.packaged import Packaged
from modelport.runtimes import sklearn as sklearn_runtime
from modelport.runtimes.sklearn_state import UncheckedState
from modelport.serving.loading import open_version
from modelport.types import ModelVersion
from tests.serving.test_loading import version_of

X, Y = load_iris(return_X_y=True)
SAMPLE = X[:20]
FAR = np.array([[5000.0, 3.0, 1.5, 0.2]])  # sepal_length 5000: the only row that reaches the crafted node
ROOT = Path(__file__).resolve().parents[2]


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


# --- other estimators skops trusts by default, whose predict hands file arrays to compiled code ---
COLORS = pd.DataFrame({"color": ["red", "green", "blue"] * 10})
TEXT = pd.DataFrame({"text": ["alpha beta", "beta gamma", "gamma alpha"] * 10})
BINARY = np.arange(30) % 2


def _fitted(model: Any, x: Any = X, y: Any = Y) -> Any:
    with warnings.catch_warnings():  # scikit-learn 1.9 deprecates SVC(probability=True), which files still hold
        warnings.simplefilter("ignore", FutureWarning)
        return model.fit(x, y) if y is not None else model.fit(x)


def svm(model: Any, y: Any, **state: Callable[[Any], Any]) -> Callable[[], Any]:
    """A fitted libsvm model with the attributes ``state`` names replaced (each from the fitted one)."""

    def build() -> Any:
        fitted = _fitted(clone(model), X @ X.T if model.kernel == "precomputed" else X, y)
        for name, change in state.items():
            setattr(fitted, name, change(getattr(fitted, name)))
        return fitted

    return build


def kmeans_centres_wider_than_the_rows() -> Any:
    """BLAS multiplies the rows by the centres with the centres' column count: it reads past each row."""
    model = KMeans(n_clusters=2, n_init=1, random_state=0).fit(X)
    model.cluster_centers_ = np.zeros((2, 200_000))
    return model


def neighbours(model: Any, **state: Callable[[Any], Any]) -> Callable[[], Any]:
    def build() -> Any:
        fitted = _fitted(clone(model))
        for name, change in state.items():
            setattr(fitted, name, change(getattr(fitted, name)))
        return fitted

    return build


def one_hot(**state: Callable[[Any], Any]) -> Callable[[], Any]:
    """A pipeline whose OneHotEncoder holds ``state``: its columns are written where they say."""

    def build() -> Any:
        model = make_pipeline(OneHotEncoder(sparse_output=False, drop="first"), LogisticRegression())
        model.fit(COLORS, BINARY)
        for name, change in state.items():
            setattr(model[0], name, change(getattr(model[0], name)))
        return model

    return build


def text_pipeline(vectorizer: Any, **state: Callable[[Any], Any]) -> Callable[[], Any]:
    def build() -> Any:
        model = make_pipeline(clone(vectorizer), LogisticRegression()).fit(TEXT["text"], BINARY)
        for name, change in state.items():
            setattr(model[0], name, change(getattr(model[0], name)))
        return model

    return build


def _far_columns(vocabulary: dict[str, int]) -> dict[str, int]:
    return {term: 2**31 - 1 - index for index, term in enumerate(vocabulary)}


def _int32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.int32)


def _shifted(n_support: np.ndarray) -> np.ndarray:
    """Per-class counts that still add up, one of them 2**30: libsvm reads 2**30 coefficients."""
    return _int32(n_support + np.array([2**30, -(2**30), 0]))


# name: (builder, what the refusal says, the sample it is registered with)
COMPILED: dict[str, tuple[Callable[[], Any], str, Any]] = {
    "SVC support_ longer than its support vectors": (
        svm(SVC(), Y, support_=lambda s: np.zeros(100_000, np.int32)),
        "does not split the 100000 support vectors",
        SAMPLE,
    ),
    "SVC _n_support negative": (svm(SVC(), Y, _n_support=_shifted), "does not split", SAMPLE),
    "NuSVC _dual_coef_ too short": (svm(NuSVC(), Y, _dual_coef_=lambda d: d[:, :1].copy()), "_dual_coef_", SAMPLE),
    "SVC _probA too short": (
        svm(SVC(probability=True), Y, _probA=lambda a: a[:1].copy(), _probB=lambda b: b[:1].copy()),
        "_probA/_probB hold 1/1 values, libsvm reads 3",
        SAMPLE,
    ),
    "SVC precomputed support_ 2**30": (
        svm(SVC(kernel="precomputed"), Y, support_=lambda s: np.full_like(s, 2**30)),
        "support_ names a training sample outside",
        (X @ X.T)[:20],
    ),
    "SVR support_ longer than its support vectors": (
        svm(SVR(), X[:, 0], support_=lambda s: np.zeros(100_000, np.int32)),
        "support_vectors_ has 23 rows for 100000",
        SAMPLE,
    ),
    "NuSVR _intercept_ empty": (svm(NuSVR(), X[:, 0], _intercept_=lambda i: i[:0].copy()), "_intercept_", SAMPLE),
    "KMeans centres wider than the rows": (kmeans_centres_wider_than_the_rows, "cluster_centers_ has shape", SAMPLE),
    "k-neighbours _y 2**40": (
        neighbours(KNeighborsClassifier(algorithm="brute", metric="manhattan"), _y=lambda y: np.full_like(y, 2**40)),
        "_y names a class outside 0..2",
        SAMPLE,
    ),
    "radius neighbours _y shorter than _fit_X": (
        neighbours(RadiusNeighborsClassifier(radius=3, metric="manhattan"), _y=lambda y: y[:1].copy()),
        "_y is not one target per sample",
        SAMPLE,
    ),
    "k-neighbours _fit_X narrower than the rows": (
        neighbours(KNeighborsRegressor(algorithm="brute"), _fit_X=lambda x: x[:, :1].copy()),
        "_fit_X has 1 columns",
        SAMPLE,
    ),
    "one-hot _n_features_outs too small": (
        one_hot(_n_features_outs=lambda outs: [1]),
        "_n_features_outs is [1]",
        COLORS,
    ),
    "one-hot dropped category -2**40": (
        one_hot(_drop_idx_after_grouping=lambda d: np.array([-(2**40)], dtype=object)),
        "_drop_idx_after_grouping[0] is",
        COLORS,
    ),
    "one-hot categories unsorted": (
        one_hot(categories_=lambda c: [c[0][::-1].copy()]),
        "categories_[0] is not sorted",
        COLORS,
    ),
    "count vectorizer columns 2**31-1": (
        text_pipeline(CountVectorizer(), vocabulary_=_far_columns),
        "vocabulary_ maps",
        TEXT,
    ),
    "hashing vectorizer n_features 0": (
        text_pipeline(HashingVectorizer(n_features=16), n_features=lambda n: 0),
        "n_features 0",
        TEXT,
    ),
}


@pytest.mark.parametrize("name", list(COMPILED))
def test_state_compiled_predict_code_trusts_is_checked_before_anything_predicts(name: str, tmp_path: Path) -> None:
    """The check runs before registration predicts the sample (which, on these files, reads or
    writes out of bounds, or dies): refused without trust, and no prediction is made."""
    build, problem, sample = COMPILED[name]
    path = _skops_file(build(), tmp_path / "model.skops")
    untrusted = sio.get_untrusted_types(file=path)
    assert not sklearn_runtime.unsafe_types(untrusted)  # every class is trusted by skops or allow-listed
    with pytest.raises(UncheckedState, match=re.escape(problem)):  # passed before: nothing looked
        sklearn_runtime.checked(sio.load(path, trusted=untrusted))
    with pytest.raises(UntrustedArtifact) as caught:
        package(path, workdir=tmp_path / "work", sample_input=sample)
    assert problem in caught.value.message
    assert "--trust-pickle" in caught.value.message


PAIRS = pd.DataFrame({"color": ["red", "green", "blue"] * 10, "size": ["S", "M", "L"] * 10})


def one_hot_columns_far_before_the_output() -> Any:
    """Block sizes that still add up to the output's width, the second block starting 2**40 before
    it: the densified rows are written 8 TiB before their buffer."""
    model = OneHotEncoder(sparse_output=False).fit(PAIRS)
    model._n_features_outs = [-(2**40), 2**40 + 6]
    return model


# name: (the crafted model, the method serving calls, a request that reaches the crafted state)
KILLERS: dict[str, tuple[Callable[[], Any], str, Any]] = {
    "SVC support_ longer than its support vectors": (
        svm(SVC(), Y, support_=lambda s: np.zeros(1_000_000, np.int32)),
        "predict",
        X[:3],
    ),
    "KMeans centres wider than the rows": (kmeans_centres_wider_than_the_rows, "predict", X),
    "k-neighbours _y 2**40": (COMPILED["k-neighbours _y 2**40"][0], "predict", X[:3]),
    "one-hot columns 2**40 before the output": (one_hot_columns_far_before_the_output, "transform", PAIRS[:3]),
    "count vectorizer columns 2**31-1": (COMPILED["count vectorizer columns 2**31-1"][0], "predict", TEXT["text"]),
    "hashing vectorizer n_features 0": (COMPILED["hashing vectorizer n_features 0"][0], "predict", TEXT["text"]),
}


@pytest.mark.slow  # a Python process per case, which the crafted model would kill
@pytest.mark.parametrize("name", list(KILLERS))
def test_one_request_to_other_crafted_estimators_no_longer_kills_the_process(name: str, tmp_path: Path) -> None:
    """In a process of its own, the serving load path and one request: before the checks the
    process died (SIGSEGV for libsvm, k-means, neighbours, the one-hot columns and the
    vocabulary; SIGFPE for n_features 0); now loading refuses the file."""
    build, method, rows = KILLERS[name]
    directory = tmp_path / "artifact"
    sklearn_runtime.save(build(), directory)  # the manifest lists the file's types, as registration writes them
    request = tmp_path / "request.pkl"
    # the test's own rows (an array, a frame or a column of text); pandas-stubs 3.1 lacks pandas.to_pickle
    pd.to_pickle(rows, request)  # type: ignore[attr-defined]
    script = (
        "import sys, pandas as pd\n"
        "from pathlib import Path\n"
        "from modelport.errors import UntrustedArtifact\n"
        "from modelport.runtimes.sklearn import load_estimator\n"
        "try:\n"
        "    estimator, _ = load_estimator(Path(sys.argv[1]))\n"
        "except UntrustedArtifact as exc:\n"
        "    print('refused:', exc.message); sys.exit(0)\n"
        f"print(getattr(estimator, {method!r})(pd.read_pickle(sys.argv[2])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(directory), str(request)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"the process ended with {result.returncode}: {result.stderr[-500:]}"
    assert result.stdout.startswith("refused: model.skops holds state"), result.stdout


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
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.ensemble import (
        BaggingClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        IsolationForest,
        RandomTreesEmbedding,
    )
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import BallTree, KernelDensity, KNeighborsTransformer, LocalOutlierFactor
    from sklearn.preprocessing import KBinsDiscretizer
    from sklearn.svm import OneClassSVM

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
    kernel = X @ X.T
    rare = pd.DataFrame({"color": ["red", "green", "blue"] * 10 + ["teal", "teal", "mauve"]})
    missing = pd.DataFrame({"size": [1.0, 2.0, np.nan] * 10})
    others: list[tuple[Any, Any, Any, str]] = [  # (model, what it is fitted on and given, targets, method)
        (SVC(), X, Y, "predict"),
        (SVC(probability=True), X, Y, "predict_proba"),
        (SVC(kernel="precomputed"), kernel, Y, "decision_function"),
        (NuSVC(kernel="poly"), X, Y, "decision_function"),
        (SVR(kernel="linear"), X, X[:, 0], "predict"),
        (NuSVR(), X, X[:, 0], "predict"),
        (OneClassSVM(), X, None, "score_samples"),
        (BaggingClassifier(SVC(), n_estimators=3, max_features=2, random_state=0), X, Y, "predict"),
        (KMeans(n_clusters=3, n_init=1, random_state=0), X, None, "predict"),
        (MiniBatchKMeans(n_clusters=3, n_init=1, random_state=0), X, None, "transform"),
        (KNeighborsClassifier(algorithm="brute", metric="manhattan"), X, Y, "predict_proba"),
        (KNeighborsClassifier(), X, np.c_[Y, Y % 2], "predict"),
        (KNeighborsClassifier(metric="precomputed"), kernel, Y, "predict"),
        (RadiusNeighborsClassifier(radius=3, metric="manhattan"), X, Y, "predict_proba"),
        (KNeighborsRegressor(algorithm="kd_tree"), X, X[:, 0], "predict"),
        (KNeighborsTransformer(), X, None, "transform"),
        (LocalOutlierFactor(novelty=True), X, None, "score_samples"),
        (make_pipeline(OneHotEncoder(drop="if_binary"), LogisticRegression()), COLORS, BINARY, "predict_proba"),
        (OneHotEncoder(min_frequency=2, handle_unknown="infrequent_if_exist", drop="first"), rare, None, "transform"),
        (OneHotEncoder(max_categories=2, sparse_output=False), rare, None, "transform"),
        (OneHotEncoder(handle_unknown="ignore"), missing, None, "transform"),
        (KBinsDiscretizer(n_bins=3, encode="onehot-dense"), X, None, "transform"),
        (RandomTreesEmbedding(n_estimators=3, random_state=0), X, None, "transform"),
        (make_pipeline(CountVectorizer(), LogisticRegression()), TEXT["text"], BINARY, "predict_proba"),
        (make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression()), TEXT["text"], BINARY, "predict"),
        (make_pipeline(HashingVectorizer(n_features=16), LogisticRegression()), TEXT["text"], BINARY, "predict"),
        (DictVectorizer(sparse=False), [{"a": 1.0, "b": 2.0}, {"c": 3.0}], None, "transform"),
    ]
    for model, x, y, method in others:
        _fitted(model, x, y)
        data = sio.dumps(model)
        untrusted = sio.get_untrusted_types(data=data)
        assert not sklearn_runtime.unsafe_types(untrusted), model
        loaded = sklearn_runtime.checked(sio.loads(data, trusted=untrusted))
        got, want = getattr(loaded, method)(x), getattr(model, method)(x)
        np.testing.assert_allclose(*(a.toarray() if hasattr(a, "toarray") else a for a in (got, want)))


@pytest.mark.slow  # a Python process, which the crafted tree would kill
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
    from tests.support.serving import client_for

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


# --- XGBoost and LightGBM model files: trees their compiled predict follows unchecked ---
VERSICOLOR = X[50:53]  # petal length > 3: the rows that take the root's right branch (the sample takes the left)


def _xgboost_model() -> dict[str, Any]:
    import xgboost

    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1, "seed": 0}
    booster = xgboost.train(params, xgboost.DMatrix(X, label=Y), num_boost_round=2)
    model: dict[str, Any] = json.loads(booster.save_raw(raw_format="json"))
    return model


def _trees(model: dict[str, Any]) -> list[dict[str, Any]]:
    trees: list[dict[str, Any]] = model["learner"]["gradient_booster"]["model"]["trees"]
    return trees


def xgboost_file(edit: Callable[[dict[str, Any]], None], suffix: str = ".json") -> Callable[[Path], Path]:
    """An XGBoost model file with ``edit`` made to its JSON (as UBJ: loaded and saved by XGBoost,
    which loads these edits without complaint and crashes only when predicting)."""

    def build(directory: Path) -> Path:
        model = _xgboost_model()
        assert _trees(model)[0]["split_indices"][0] == 2  # petal length: the sample goes left, VERSICOLOR right
        assert _trees(model)[0]["right_children"][0] == 2
        edit(model)
        path = directory / "model.json"
        path.write_text(json.dumps(model))
        if suffix == ".ubj":
            import xgboost

            xgboost.Booster(model_file=str(path)).save_model(str(directory / "model.ubj"))
            path.unlink()
            path = directory / "model.ubj"
        return path

    return build


def _tree0(key: str, index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(model: dict[str, Any]) -> None:
        _trees(model)[0][key][index] = value

    return edit


def _xgboost_categories(model: dict[str, Any]) -> None:
    """The root made a categorical split whose categories run 10**6 past the list: XGBoost's
    loader reads them (SIGSEGV at load, before any predict)."""
    tree = _trees(model)[0]
    tree["split_type"][0] = 1
    tree.update(categories=[1], categories_nodes=[0], categories_segments=[10**6], categories_sizes=[10**6])


def _xgboost_ubj_count(directory: Path) -> Path:
    """A real UBJ file whose first typed array claims 2**60 items."""
    path = xgboost_file(lambda model: None, ".ubj")(directory)
    data = path.read_bytes()
    at = data.index(b"[$l#L", data.index(b"left_children")) + 5
    path.write_bytes(data[:at] + (2**60).to_bytes(8, "big") + data[at + 8 :])
    return path


def _lightgbm_model(**params: Any) -> str:
    import lightgbm

    base = {"objective": "multiclass", "num_class": 3, "num_leaves": 4, "verbose": -1, "num_threads": 1, "seed": 0}
    booster = lightgbm.train({**base, **params}, lightgbm.Dataset(X, label=Y), num_boost_round=2)
    text: str = booster.model_to_string()
    return text


def _resized(text: str) -> str:
    """``text`` with its tree_sizes as the Tree= blocks now are (so only the edit is wrong)."""
    starts = [m.start() for m in re.finditer(r"^Tree=", text, re.MULTILINE)]
    bounds = [*starts, text.index("end of trees")]
    sizes = " ".join(str(len(text[a:b].encode())) for a, b in itertools.pairwise(bounds))
    return re.sub(r"^tree_sizes=.*$", f"tree_sizes={sizes}", text, count=1, flags=re.MULTILINE)


def lightgbm_file(
    edits: dict[str, Callable[[list[str]], None]], *, header: Callable[[str], str] = str, **params: Any
) -> Callable[[Path], Path]:
    """A LightGBM text model whose Tree=0 lines ``edits`` names are changed (their values as lists)."""

    def build(directory: Path) -> Path:
        text = _lightgbm_model(**params)
        block = text[text.index("Tree=0\n") : text.index("Tree=1\n")]
        lines = block.split("\n")
        for number, line in enumerate(lines):
            key, _, value = line.partition("=")
            if key in edits:
                values = value.split(" ")
                edits[key](values)
                lines[number] = f"{key}={' '.join(values)}"
        text = header(_resized(text.replace(block, "\n".join(lines))))
        path = directory / "model.txt"
        path.write_text(text)
        return path

    return build


def _item(index: int, value: Any) -> Callable[[list[str]], None]:
    def edit(values: list[str]) -> None:
        values[index] = str(value)

    return edit


def _lightgbm_categorical_root(values: list[str]) -> None:
    values[0] = "1"  # decision_type: the root made a categorical split


def _lightgbm_linear_leaf_feature(directory: Path) -> Path:
    """A linear tree whose first leaf's model reads feature 10**6 (LightGBM reads it unchecked)."""
    path = lightgbm_file({}, linear_tree=True, objective="regression", num_class=1)(directory)
    text = path.read_text()
    text = re.sub(r"^num_features=0 ", "num_features=1 ", text, count=1, flags=re.MULTILINE)
    text = re.sub(r"^leaf_features=", "leaf_features=1000000 ", text, count=1, flags=re.MULTILINE)
    text = re.sub(r"^leaf_coeff=", "leaf_coeff=1 ", text, count=1, flags=re.MULTILINE)
    path.write_text(_resized(text))
    return path


# name: (library, the crafted file, what the refusal says)
BOOSTED: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "xgboost child 10**6": ("xgboost", xgboost_file(_tree0("right_children", 0, 10**6)), "child 1000000 is outside"),
    "xgboost child pointing to the root": ("xgboost", xgboost_file(_tree0("right_children", 0, 0)), "reached twice"),
    "xgboost split feature 10**6": (
        "xgboost",
        xgboost_file(_tree0("split_indices", 0, 10**6)),
        "a split names a feature outside 0..3",
    ),
    "xgboost tree_info -1": (
        "xgboost",
        xgboost_file(lambda m: m["learner"]["gradient_booster"]["model"]["tree_info"].__setitem__(0, -1)),
        "tree_info names an output outside 0..2",
    ),
    "xgboost two trees with one id": (
        "xgboost",
        xgboost_file(lambda m: _trees(m)[1].__setitem__("id", 0)),
        "tree 1 says it is tree 0",
    ),
    "xgboost categories past the list (loader)": (
        "xgboost",
        xgboost_file(_xgboost_categories),
        "categories are outside the categories list",
    ),
    "xgboost UBJ child 10**6": (
        "xgboost",
        xgboost_file(_tree0("right_children", 0, 10**6), ".ubj"),
        "child 1000000 is outside",
    ),
    "xgboost UBJ count 2**60": ("xgboost", _xgboost_ubj_count, "runs past the document"),
    "lightgbm child 10**6": ("lightgbm", lightgbm_file({"right_child": _item(0, 10**6)}), "child 1000000 is outside"),
    "lightgbm leaf -10**6": ("lightgbm", lightgbm_file({"right_child": _item(0, -(10**6))}), "child -1000000"),
    "lightgbm child pointing to the root": ("lightgbm", lightgbm_file({"right_child": _item(0, 0)}), "reached twice"),
    "lightgbm split feature 10**6": (
        "lightgbm",
        lightgbm_file({"split_feature": _item(0, 10**6)}),
        "a split names a feature outside 0..3",
    ),
    "lightgbm categorical split without bitsets": (
        "lightgbm",
        lightgbm_file({"decision_type": _lightgbm_categorical_root, "num_cat": _item(0, 5)}),
        "cat_boundaries has 0 values, and the tree needs 6",
    ),
    "lightgbm linear leaf feature 10**6": (
        "lightgbm",
        _lightgbm_linear_leaf_feature,
        "a linear leaf names a feature outside 0..3",
    ),
    "lightgbm tree_sizes past the file (loader)": (
        "lightgbm",
        lightgbm_file({}, header=lambda t: t.replace("tree_sizes=", "tree_sizes=100000000 ", 1)),
        "tree_sizes are not the sizes of its Tree= blocks",
    ),
    "lightgbm 1000 trees per iteration": (
        "lightgbm",
        lightgbm_file({}, header=lambda t: t.replace("num_tree_per_iteration=3", "num_tree_per_iteration=1000")),
        "num_tree_per_iteration 1000",
    ),
}


def _check_model_file(library: str) -> Callable[[Path], None]:
    from modelport.runtimes import lightgbm as lightgbm_runtime
    from modelport.runtimes import xgboost as xgboost_runtime

    module = xgboost_runtime if library == "xgboost" else lightgbm_runtime
    check: Callable[[Path], None] = module.check_model_file  # missing before: the libraries read files unchecked
    return check


@pytest.mark.parametrize("name", list(BOOSTED))
def test_crafted_boosted_model_file_is_refused_before_the_library_reads_it(name: str, tmp_path: Path) -> None:
    library, build, problem = BOOSTED[name]
    path = build(tmp_path)
    with pytest.raises(UntrustedArtifact, match=re.escape(problem)):
        _check_model_file(library)(path)
    for trust in (False, True):  # a trust flag cannot make an index 10**6 past the nodes safe
        with pytest.raises(UntrustedArtifact) as caught:
            package(path, workdir=tmp_path / f"work-{trust}", sample_input=SAMPLE, trust_pickle=trust)
        assert problem in caught.value.message
        assert "could crash or hang the server" in caught.value.message


@pytest.mark.slow  # a Python process per case, which the crafted booster would kill or pin
@pytest.mark.parametrize(
    ("library", "crafted"),
    [
        ("xgboost", "xgboost child 10**6"),
        ("xgboost", "xgboost child pointing to the root"),
        ("lightgbm", "lightgbm child 10**6"),
        ("lightgbm", "lightgbm child pointing to the root"),
    ],
)
def test_one_request_to_a_crafted_booster_no_longer_kills_or_pins_the_process(
    library: str, crafted: str, tmp_path: Path
) -> None:
    """A sound model registered natively, its stored file swapped for a crafted one (as whoever
    can write artifacts or a model directory can), then loaded by the serving runtime and sent
    three rows that take the crafted branch, in a process of its own: before the checks XGBoost
    died with SIGSEGV or spun for good on the cycle, LightGBM likewise; now loading refuses it."""
    sound = xgboost_file(lambda model: None) if library == "xgboost" else lightgbm_file({})
    packaged = package(sound(tmp_path), workdir=tmp_path / "work", sample_input=SAMPLE, runtime=library)
    stored = next(p for p in packaged.directory.iterdir() if p.suffix in (".json", ".txt") and p.stem == "model")
    (tmp_path / "crafted").mkdir()
    stored.write_bytes(BOOSTED[crafted][1](tmp_path / "crafted").read_bytes())
    runtime = {"xgboost": "xgboost.XGBoostRuntime", "lightgbm": "lightgbm.LightGBMRuntime"}[library]
    signature = json.dumps(packaged.signature.to_dict())
    module, _, cls = runtime.partition(".")
    script = (
        "import json, sys, numpy as np\n"
        "from modelport.errors import UntrustedArtifact\n"
        f"from modelport.runtimes.{module} import {cls}\n"
        "from modelport.types import Signature\n"
        f"runtime = {cls}()\n"
        "try:\n"
        f"    runtime.load(sys.argv[1], Signature.from_dict(json.loads({signature!r})))\n"
        "except UntrustedArtifact as exc:\n"
        "    print('refused:', exc.message); sys.exit(0)\n"
        f"print(runtime.predict({{'input': np.array({VERSICOLOR.tolist()!r})}}))\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, str(packaged.directory)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("one request pinned the process for a minute (the crafted cycle)")
    assert result.returncode == 0, f"the process ended with {result.returncode}: {result.stderr[-500:]}"
    assert result.stdout.startswith(f"refused: {stored.name} holds trees"), result.stdout


def test_real_boosted_model_files_pass_the_check_and_load() -> None:
    """What the libraries write passes: classifiers and regressors, JSON and UBJ, dart,
    categorical and multi-target XGBoost; categorical, linear-tree, random-forest and one-leaf
    LightGBM. And the UBJSON reader reads XGBoost's UBJ as XGBoost's own JSON says."""
    import lightgbm
    import xgboost

    from modelport.runtimes import lightgbm as lightgbm_runtime
    from modelport.runtimes import xgboost as xgboost_runtime

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 6, 300)
    frame = pd.DataFrame({"a": pd.Categorical(codes), "b": rng.normal(size=300)})
    target = (codes % 3 == 0) + rng.normal(0, 0.1, 300)
    xgboost_models = [
        xgboost.XGBClassifier(n_estimators=3, max_depth=3).fit(X, Y),
        xgboost.XGBRegressor(n_estimators=3, booster="dart").fit(X, X[:, 0]),
        xgboost.XGBRegressor(n_estimators=3, enable_categorical=True, max_cat_to_onehot=1).fit(frame, target),
        xgboost.XGBRegressor(n_estimators=3, multi_strategy="multi_output_tree").fit(X, X[:, :2]),
        xgboost.XGBClassifier(n_estimators=3, gamma=5, max_depth=6).fit(X, Y),  # pruned: deleted nodes
    ]
    with tempfile.TemporaryDirectory() as directory:
        for model in xgboost_models:
            for suffix in (".json", ".ubj"):
                path = Path(directory) / f"model{suffix}"
                model.get_booster().save_model(str(path))
                xgboost_runtime.open_booster(path)
            raw = json.loads(model.get_booster().save_raw(raw_format="json"))
            decoded = xgboost_runtime._ubjson(path.read_bytes())
            assert json.loads(json.dumps(decoded, default=lambda a: a.tolist())).keys() == raw.keys()
        lightgbm_models = [
            lightgbm.LGBMClassifier(n_estimators=3, num_leaves=4, verbose=-1).fit(X, Y),
            lightgbm.LGBMRegressor(
                n_estimators=3, num_leaves=4, max_cat_to_onehot=1, min_data_per_group=1, verbose=-1
            ).fit(frame, target),
            lightgbm.LGBMRegressor(n_estimators=3, linear_tree=True, verbose=-1).fit(X, X[:, 0]),
            lightgbm.LGBMClassifier(
                boosting_type="rf", n_estimators=3, subsample=0.5, subsample_freq=1, verbose=-1
            ).fit(X, Y % 2),
            lightgbm.LGBMRegressor(n_estimators=2, verbose=-1).fit(X, np.ones(len(X))),  # one-leaf trees
        ]
        for model in lightgbm_models:
            path = Path(directory) / "model.txt"
            model.booster_.save_model(str(path))
            lightgbm_runtime.open_booster(path)


@pytest.mark.parametrize("crafted", ["child 10**6", "cycle", "feature 10**6"])
def test_onnx_runtime_refuses_a_crafted_tree_ensemble_on_its_own(crafted: str) -> None:
    """The ONNX copy of a boosted model is no way in: crafted files never reach the conversion
    (the check comes first), and ONNX Runtime's TreeEnsemble checks node ids and cycles when the
    session is made and feature indices when it runs (this locks that behaviour in)."""
    from onnx import TensorProto, helper

    from modelport.runtimes import onnx as onnx_runtime

    false_ids = {"child 10**6": [10**6, 0, 0], "cycle": [0, 0, 0]}.get(crafted, [2, 0, 0])
    features = [10**6, 0, 0] if crafted == "feature 10**6" else [2, 0, 0]
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["input"],
        ["prediction"],
        domain="ai.onnx.ml",
        n_targets=1,
        nodes_treeids=[0, 0, 0],
        nodes_nodeids=[0, 1, 2],
        nodes_featureids=features,
        nodes_values=[3.0, 0.0, 0.0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=false_ids,
        target_treeids=[0, 0],
        target_nodeids=[1, 2],
        target_ids=[0, 0],
        target_weights=[1.0, 2.0],
    )
    graph = helper.make_graph(
        [node],
        "crafted",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    data = helper.make_model(graph, opset_imports=opsets).SerializeToString()
    with pytest.raises(Exception, match=r"requests feature 1000000|tree_ensemble"):  # ORT raises its own types
        onnx_runtime.session(data).run(None, {"input": VERSICOLOR.astype(np.float32)})
