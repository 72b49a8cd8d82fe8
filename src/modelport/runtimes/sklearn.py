"""The native scikit-learn runtime: an estimator saved with skops (or, when trusted, pickle).

The artifact directory holds ``sklearn.json`` (which file, its format, the skops types the
owner trusted at registration) and the model file. Outputs follow the canonical names:
``label`` and ``probabilities`` for classifiers, ``prediction`` for regressors.

What loads without trust: what skops trusts by default (scikit-learn estimators, NumPy and
SciPy ufuncs and dtypes, containers) plus :data:`ALLOWED_TYPES`, a short list of classes that
estimators hold inside. Every other type or function a skops file names, ``builtins`` and the
functions of a ``FunctionTransformer`` included, runs code the file chooses: such a file loads
only when its version was registered with explicit trust. The decision is always made from
the model file itself, never from the manifest beside it.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from modelport.errors import InvalidModel, ModelNotReady, UntrustedArtifact
from modelport.runtimes import sklearn_state
from modelport.runtimes.base import Capabilities
from modelport.signature import count_rows
from modelport.types import Signature, dtype_of

MANIFEST = "sklearn.json"
# Classes (never functions) that fitted estimators hold and skops does not trust by default: tree
# structures, neighbour indexes and their metrics, MLP optimizers, the Bunch of ensembles, dtypes.
ALLOWED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.utils._bunch.Bunch",
        "numpy.dtype",  # SimpleImputer's fitted dtype
    }
)
Format = Literal["skops", "pickle"]


@dataclass(frozen=True)
class Column:
    """One column of the DataFrame a model registered from a mixed DataFrame predicts on: its
    name and pandas dtype (``float64``, ``int64``, ``str``, ``category``...), with the categories of
    a categorical column, so the runtime rebuilds the frame the model was fitted on."""

    name: str
    dtype: str
    categories: tuple[Any, ...] | None = None
    ordered: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if self.categories is not None:
            data["categories"] = list(self.categories)
            data["ordered"] = self.ordered
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        categories = data.get("categories")
        return cls(
            str(data["name"]),
            str(data["dtype"]),
            tuple(categories) if categories is not None else None,
            bool(data.get("ordered", False)),
        )

    @classmethod
    def of(cls, name: str, series: Any) -> Column:
        """The column ``name`` of a DataFrame, as its ``series`` is typed."""
        dtype = series.dtype
        if getattr(dtype, "name", "") == "category":
            return cls(name, "category", tuple(dtype.categories.tolist()), bool(dtype.ordered))
        return cls(name, str(dtype))


def frame_of(columns: Sequence[Column], inputs: Mapping[str, np.ndarray]) -> Any:
    """The DataFrame a per-column model predicts on: each input as its column, typed as registered."""
    import pandas as pd

    data = {}
    for column in columns:
        if column.categories is not None:
            dtype: Any = pd.CategoricalDtype(list(column.categories), ordered=column.ordered)
        else:
            dtype = pd.api.types.pandas_dtype(column.dtype)
        data[column.name] = pd.Series(inputs[column.name], dtype=dtype, copy=False)
    return pd.DataFrame(data)


def model_input(columns: Sequence[Column], inputs: Mapping[str, np.ndarray], *, vector: bool = False) -> Any:
    """What a per-column model predicts on: the DataFrame of its columns (:func:`frame_of`), or with
    ``vector`` (a text pipeline, fitted on a sequence of documents) its one column as a 1-D array:
    given a DataFrame, a text vectorizer would read the column's name as the only document."""
    if vector:
        (column,) = columns
        return np.asarray(inputs[column.name], dtype=object)
    return frame_of(columns, inputs)


@dataclass(frozen=True)
class Manifest:
    file: str
    format: Format
    trusted_types: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()  # a model fitted on a mixed DataFrame: one input per column
    # trusted at registration although what its objects hold does not pass sklearn_state.check:
    # the check is skipped, so loading needs trust (a forged flag only asks for more trust)
    unchecked: bool = False
    vector: bool = False  # the one column goes to the model as a 1-D array (:func:`model_input`)

    @property
    def runs_code(self) -> bool:
        """True when loading unpickles, imports types or functions that skops and
        :data:`ALLOWED_TYPES` do not vouch for (they run code the file chooses), or skips the
        check of what the objects hold."""
        return self.format == "pickle" or bool(unsafe_types(self.trusted_types)) or self.unchecked

    @classmethod
    def read(cls, artifact: Path) -> Manifest:
        path = Path(artifact) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            fmt = data["format"]
            if fmt not in ("skops", "pickle"):
                raise ValueError(f"unknown format {fmt!r}")
            return cls(
                file=str(data["file"]),
                format=fmt,
                trusted_types=tuple(data.get("trusted_types", ())),
                columns=tuple(Column.from_dict(c) for c in data.get("columns", ())),
                unchecked=data.get("unchecked_state") is True,
                vector=data.get("vector") is True,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidModel(f"cannot read {path}: {exc}") from exc


def unsafe_types(types: Sequence[str]) -> list[str]:
    """The names among skops' untrusted ``types`` that need explicit trust (all but :data:`ALLOWED_TYPES`)."""
    return sorted(t for t in types if t not in ALLOWED_TYPES)


def inspect(artifact: Path) -> Manifest:
    """The artifact's manifest with ``trusted_types`` read from the model file itself.

    What a skops file would import is what decides whether loading it runs code; the manifest
    on disk is only a record (an exported directory's can be written by anyone).
    """
    manifest = Manifest.read(artifact)
    if manifest.format != "skops":
        return manifest
    path = Path(artifact) / manifest.file
    import skops.io as sio

    try:
        untrusted = tuple(sio.get_untrusted_types(file=path))
    except Exception as exc:  # skops raises anything a broken file provokes
        raise InvalidModel(f"cannot read scikit-learn model {path}: {exc}") from exc
    return replace(manifest, trusted_types=untrusted)


def checked(estimator: Any) -> Any:
    """``estimator`` once :func:`sklearn_state.check` passed it (neighbour indexes rebuilt), else
    :class:`sklearn_state.UncheckedState` saying what it holds that compiled code cannot run on."""
    return sklearn_state.check(estimator, classes=ALLOWED_TYPES)


def save(
    estimator: object,
    directory: Path,
    *,
    format: Format = "skops",
    columns: Sequence[Column] = (),
    unchecked: bool = False,
    vector: bool = False,
) -> Manifest:
    """Store ``estimator`` in ``directory`` with its manifest (and the ``columns`` of the DataFrame
    it takes, for a per-column model; ``vector``: it takes its one column as a 1-D array). Trust is
    the caller's decision: check :func:`unsafe_types` of ``skops.io.get_untrusted_types`` and
    :func:`checked` before saving; ``unchecked``: the owner trusted a skops file that :func:`checked` refuses."""
    if vector and len(columns) != 1:
        raise ValueError("vector: the model takes one column as a 1-D array, so give exactly one column")
    directory.mkdir(parents=True, exist_ok=True)
    if format == "skops":
        import skops.io as sio

        data = sio.dumps(estimator)
        untrusted = tuple(sio.get_untrusted_types(data=data))
        manifest = Manifest("model.skops", "skops", untrusted, tuple(columns), unchecked=unchecked, vector=vector)
    else:
        data = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
        manifest = Manifest("model.pkl", "pickle", columns=tuple(columns), vector=vector)
    (directory / manifest.file).write_bytes(data)
    text: dict[str, Any] = {
        "file": manifest.file,
        "format": manifest.format,
        "trusted_types": list(manifest.trusted_types),
    }
    if manifest.columns:
        text["columns"] = [column.to_dict() for column in manifest.columns]
    if manifest.unchecked:
        text["unchecked_state"] = True
    if manifest.vector:
        text["vector"] = True
    (directory / MANIFEST).write_text(json.dumps(text, indent=2) + "\n", encoding="utf-8")
    return manifest


def load_estimator(artifact: Path) -> tuple[Any, Manifest]:
    manifest = Manifest.read(artifact)
    path = Path(artifact) / manifest.file
    try:
        if manifest.format == "skops":
            import skops.io as sio

            untrusted = sio.get_untrusted_types(file=path)
            unexpected = sorted(set(untrusted) - set(manifest.trusted_types))
            if unexpected:
                raise UntrustedArtifact(
                    f"{path} contains types that were not trusted at registration: {', '.join(unexpected)}; "
                    "re-register the model"
                )
            estimator = sio.load(path, trusted=list(untrusted))
            if manifest.unchecked:  # trusted at registration as it is (the loader asked for trust)
                return estimator, manifest
            try:
                return checked(estimator), manifest
            except sklearn_state.UncheckedState as exc:
                raise UntrustedArtifact(
                    f"{path.name} holds state scikit-learn's compiled code would run on unchecked ({exc.message}); "
                    "serving it could crash or hang the server: re-register it with --trust-pickle (CLI) or "
                    "trust_pickle=True (Python) only if you trust its source"
                ) from None
        with path.open("rb") as fh:
            return pickle.load(fh), manifest  # trusted at registration: the manifest says pickle
    except UntrustedArtifact:
        raise
    except Exception as exc:  # skops and pickle raise anything a broken file provokes
        raise InvalidModel(f"cannot load scikit-learn model {path}: {exc}") from exc


def as_frame(x: np.ndarray, feature_names: Sequence[str] | None) -> Any:
    """The input as the estimator was fitted: a DataFrame when it knows column names."""
    if feature_names is None:
        return x
    import pandas as pd

    return pd.DataFrame(x, columns=list(feature_names), copy=False)


def canonical_label(labels: np.ndarray) -> np.ndarray:
    """Class labels as INT64 (integer or bool classes) or BYTES (object array of str)."""
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64, copy=False)
    if labels.dtype.kind in "OUS":
        return labels.astype(str).astype(object)
    return labels


def output_names(estimator: object) -> tuple[str, ...]:
    """The canonical outputs of an estimator: classifiers give labels (and probabilities)."""
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        return ("label", "probabilities") if hasattr(estimator, "predict_proba") else ("label",)
    if is_regressor(estimator):
        return ("prediction",)
    raise InvalidModel(
        f"{type(estimator).__name__} is neither a classifier nor a regressor; "
        "modelport serves scikit-learn classifiers and regressors (or a Pipeline ending in one)"
    )


def predict_outputs(estimator: Any, x: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named canonical outputs of ``estimator`` on ``x`` (as from :func:`as_frame`)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "probabilities":
            out[name] = np.asarray(estimator.predict_proba(x), dtype=np.float32)
        elif name == "label":
            out[name] = canonical_label(np.asarray(estimator.predict(x)))
        else:
            out[name] = np.asarray(estimator.predict(x), dtype=np.float32)
    return out


class SklearnRuntime:
    kind: ClassVar[str] = "sklearn"
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=True, thread_safe=True, runs_code=False)

    def __init__(self) -> None:
        self._estimator: Any = None
        self._feature_names: list[str] | None = None
        self._columns: tuple[Column, ...] = ()
        self._vector = False
        self._outputs: tuple[str, ...] = ()
        self._empty: dict[str, np.ndarray] = {}
        self._controller: Any = None
        self._threads = 1

    def load(self, artifact: Path, signature: Signature, *, threads: int = 1) -> None:
        from threadpoolctl import ThreadpoolController

        estimator, manifest = load_estimator(artifact)
        outputs = tuple(spec.name for spec in signature.outputs)
        unknown = [name for name in outputs if name not in ("label", "probabilities", "prediction")]
        if unknown:
            raise InvalidModel(f"the scikit-learn runtime cannot produce output {unknown[0]!r}")
        if "probabilities" in outputs and not hasattr(estimator, "predict_proba"):
            raise InvalidModel(f"{type(estimator).__name__} has no predict_proba for output 'probabilities'")
        names = getattr(estimator, "feature_names_in_", None)
        self._feature_names = [str(n) for n in names] if names is not None else None
        self._columns = manifest.columns
        if manifest.vector and len(self._columns) != 1:
            raise InvalidModel(
                f"{MANIFEST} says the model takes one column as a 1-D array, and lists {len(self._columns)}"
            )
        self._vector = manifest.vector
        columns = [column.name for column in self._columns]
        unmatched = [spec.name for spec in signature.inputs if columns and spec.name not in columns]
        if unmatched:
            raise InvalidModel(f"the model has no column {unmatched[0]!r} (its columns: {', '.join(columns)})")
        self._outputs = outputs
        # scikit-learn refuses zero rows; a zero-row request is answered with zero-row outputs
        self._empty = {
            spec.name: np.empty((0, *(max(d, 0) for d in spec.shape[1:])), dtype=dtype_of(spec.datatype))
            for spec in signature.outputs
        }
        self._threads = max(1, threads)
        self._controller = ThreadpoolController()
        self._estimator = estimator

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        estimator = self._estimator
        if estimator is None:
            raise ModelNotReady("the scikit-learn model is not loaded; call load() first")
        if not count_rows(inputs):
            return {name: arr.copy() for name, arr in self._empty.items()}
        if self._columns:
            frame = model_input(self._columns, inputs, vector=self._vector)
        else:
            (x,) = inputs.values()
            frame = as_frame(x, self._feature_names)
        with self._controller.limit(limits=self._threads):
            return predict_outputs(estimator, frame, self._outputs)

    def unload(self) -> None:
        self._estimator = None
