"""A tabular model's registration sample (scikit-learn, XGBoost, LightGBM) and its missing values.

:func:`sample_of` takes the sample as the signature's inputs and as the model takes it: a numeric
table is the one input "input" [-1, features]; a DataFrame with text or categorical columns is one
1-D input per column; a text pipeline (one that starts with a text vectorizer) registered with a
one-column DataFrame takes that column as the 1-D sequence of texts it was fitted on.

Whether an input takes missing values (NaN) is asked of the model itself: :func:`nan_probes` puts
NaN in the sample, :func:`missing_value_answers` has the model answer it, and
:func:`onnx_differs_on_nan` says where the ONNX graph answers differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import InvalidModel
from modelport.ingest.packaged import reason
from modelport.ingest.verification import disagreement
from modelport.runtimes import onnx as onnx_runtime
from modelport.runtimes import sklearn as sklearn_runtime
from modelport.signature import DEFAULT_INPUT, sample_arrays
from modelport.types import datatype_of, dtype_of

PROBE_ROWS = 32  # sample rows a column is set missing in, to see how the model answers


@dataclass(frozen=True)
class Sample:
    """A tabular model's registration sample, as the signature's inputs and as the model takes it.

    A numeric table is the one input "input" [-1, features]; a DataFrame with text or categorical
    columns is one 1-D input per column, and ``columns`` says how to rebuild the frame from them;
    ``vector``: the model takes its one column as a 1-D array (a text pipeline), not as a frame.
    """

    arrays: dict[str, np.ndarray]
    feature_names: tuple[str, ...] | None
    fitted_names: tuple[str, ...] | None
    columns: tuple[sklearn_runtime.Column, ...] = ()
    vector: bool = False

    @property
    def rows(self) -> int:
        return len(next(iter(self.arrays.values())))

    def model_input(self, arrays: Mapping[str, np.ndarray]) -> Any:
        """What the estimator predicts on (a DataFrame where it was fitted on one), as the runtime builds it."""
        if self.columns:
            return sklearn_runtime.model_input(self.columns, arrays, vector=self.vector)
        return sklearn_runtime.as_frame(arrays[DEFAULT_INPUT], self.fitted_names)

    def datatypes(self, runtime: str) -> dict[str, str]:
        """Each input's datatype when served by ``runtime``: a table is FP32 in ONNX, FP64 natively;
        a column is FP32, INT64, BOOL or BYTES in ONNX, and natively its own dtype's (so values
        are range-checked for the column the model rebuilds)."""
        if not self.columns:
            return {DEFAULT_INPUT: "FP32" if runtime == "onnx" else "FP64"}
        return {name: _column_datatype(arr, runtime) for name, arr in self.arrays.items()}

    def onnx_feed(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: arrays[name].astype(dtype_of(datatype)) for name, datatype in self.datatypes("onnx").items()}


def _column_datatype(column: np.ndarray, runtime: str) -> str:
    kind = column.dtype.kind
    if kind not in "biuf":
        return "BYTES"
    if runtime != "onnx":
        return datatype_of(column.dtype)
    return {"f": "FP32", "i": "INT64", "u": "INT64", "b": "BOOL"}[kind]


def sample_of(estimator: Any, sample: object) -> Sample:
    """The sample as a float64 table with its feature names, or (a DataFrame with text or
    categorical columns) as one array per column; checked against the columns the model was fitted
    on (its ``feature_names_in_``)."""
    arrays, names = sample_arrays(sample)
    fitted = getattr(estimator, "feature_names_in_", None)
    fitted_names = tuple(str(n) for n in fitted) if fitted is not None else None
    columns = names is not None and tuple(arrays) == names and all(arr.ndim == 1 for arr in arrays.values())
    if fitted_names is not None and names is not None and names != fitted_names:
        raise InvalidModel(
            f"the sample's columns ({', '.join(names)}) differ from those the model was fitted on "
            f"({', '.join(fitted_names)}); give the sample with the training columns in order"
        )
    if columns and names is not None:
        frame: Any = sample
        typed = tuple(
            sklearn_runtime.Column.of(name, frame[label]) for name, label in zip(names, frame.columns, strict=True)
        )
        vector = len(typed) == 1 and fitted_names is None and _takes_documents(estimator)
        return Sample(arrays, None, fitted_names, typed, vector)
    x = arrays.get(DEFAULT_INPUT)
    if x is not None and x.ndim == 1 and _takes_documents(estimator):
        raise InvalidModel(
            "the sample for a text pipeline is a one-column DataFrame of texts, e.g. pd.DataFrame({'text': texts}): "
            "the column is the model's input, named by it, and the model is given its texts"
        )
    if len(arrays) != 1 or x is None or x.ndim != 2:
        raise InvalidModel(
            "the sample for a scikit-learn model must be one 2-D table (rows x features), "
            "or a DataFrame (text and categorical columns become one input each)"
        )
    if x.dtype.kind not in "biuf":
        raise InvalidModel(
            "the sample for a scikit-learn model must be numeric, or a DataFrame: give text and categorical "
            "columns as a DataFrame, and each column becomes an input of its own"
        )
    return Sample({DEFAULT_INPUT: x.astype(np.float64)}, fitted_names or names, fitted_names)


def _takes_documents(estimator: Any) -> bool:
    """Whether the model starts with a text vectorizer (CountVectorizer, TfidfVectorizer,
    HashingVectorizer, also as a Pipeline's first step): it is fitted on a sequence of texts, and
    reads a DataFrame as the sequence of its column names."""
    first = estimator
    while hasattr(first, "steps") and first.steps:  # a Pipeline: its first step
        first = first.steps[0][1]
    return callable(getattr(first, "build_analyzer", None))


def canonical_labels(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``outputs`` with the ``label`` output as scikit-learn's runtime answers it (INT64 or BYTES:
    :func:`sklearn_runtime.canonical_label`), so an ONNX graph's labels compare with the model's."""
    return {
        name: sklearn_runtime.canonical_label(np.asarray(arr)) if name == "label" else arr
        for name, arr in outputs.items()
    }


def nan_probes(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """For each float input, the sample with missing values (NaN) put in it: a table gets one
    NaN per row, in a different feature each; a column is missing in every row."""
    probes = {}
    for name, arr in arrays.items():
        if arr.dtype.kind != "f":
            continue
        head = {key: value[:PROBE_ROWS] for key, value in arrays.items()}
        if arr.ndim == 2 and arr.shape[1]:
            diagonal = np.arange(arr.shape[1])
            probe = arr[diagonal % len(arr)].copy()
            probe[diagonal, diagonal] = np.nan
        else:
            probe = np.full_like(head[name], np.nan)
        probes[name] = {**head, name: probe}
    return probes


def missing_value_answers(
    estimator: Any, taken: Sample, probes: Mapping[str, Mapping[str, np.ndarray]], names: tuple[str, ...]
) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """The model's own answers on each input's NaN probe, for the inputs where it accepts missing
    values (answers without raising, all finite), and why it refuses them where it does.

    scikit-learn's ``allow_nan`` tag cannot decide this: a Pipeline's tag is False even when it
    starts with an imputer, and a StandardScaler's is True though it only passes NaN on; so the
    model itself is asked."""
    answers: dict[str, dict[str, np.ndarray]] = {}
    refusal = ""
    for name, probe in probes.items():
        try:
            got = sklearn_runtime.predict_outputs(estimator, taken.model_input(probe), names)
        except Exception as exc:  # estimators raise ValueError and others for NaN they do not take
            refusal = refusal or reason(exc)
            continue
        bad = [output for output, arr in got.items() if arr.dtype.kind == "f" and not np.isfinite(arr).all()]
        if bad:
            refusal = refusal or f"its output {bad[0]!r} is NaN when an input value is missing"
            continue
        answers[name] = got
    return answers, refusal


def onnx_differs_on_nan(
    data: bytes,
    taken: Sample,
    probes: Mapping[str, Mapping[str, np.ndarray]],
    answers: Mapping[str, Mapping[str, np.ndarray]],
) -> list[str]:
    """The inputs whose NaN probe the ONNX graph ``data`` answers differently from the model."""
    if not answers:
        return []
    session = onnx_runtime.session(data)
    differ = []
    for name, want in answers.items():
        try:
            got = dict(zip(want, session.run(list(want), taken.onnx_feed(probes[name])), strict=True))
        except Exception:  # ONNX Runtime raises its own types
            differ.append(name)
            continue
        if disagreement(canonical_labels(got), want)[0]:
            differ.append(name)
    return differ
