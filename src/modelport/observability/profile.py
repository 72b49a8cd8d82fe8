"""A version's reference profile: what its inputs and predictions looked like at registration.

Computed from the reference data given at registration (the sample input when none is given)
and stored beside the model as ``reference_profile.json`` in the version's artifact, so exports
carry it. Per feature: a numeric one keeps ten bins cut at the reference's deciles, the count in
each, and up to :data:`SAMPLE_VALUES` sorted reference values (evenly spaced order statistics)
for the Kolmogorov–Smirnov test; a categorical or text one keeps the counts of its
:data:`TOP_CATEGORIES` most frequent values and of all the others together, and the others'
values themselves (up to :data:`KNOWN_OTHERS`), so traffic's unseen values can be told apart.
Missing values (NaN, null) are counted apart. The prediction output is profiled the same way.

**Categorical or numeric.** Text, booleans and other objects are categorical. A number column is
categorical when it holds codes rather than quantities: the prediction of a classifier (its
``label`` output: class ids are names, not amounts), and a column of whole numbers (an integer
type, or floats that are all whole, as a DataFrame's 0/1 flags become in a float matrix) with at
most :data:`CATEGORICAL_VALUES` distinct values in the reference, each seen
:data:`ROWS_PER_VALUE` times on average (so a 20-row sample does not turn counts into
categories). Every other number column is numeric.

Features come from the model's inputs (:func:`features`): a 2-D input with feature names gives
one feature per named column, a 2-D input without names one per column named ``input[j]``, and a
1-D input is one feature named like the input. Binary inputs and inputs of more than two
dimensions (images, sequences) have no features here.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInput, InvalidModel
from modelport.types import Signature, TensorSpec

PROFILE_FILE = "reference_profile.json"
FORMAT = 1
BINS = 10  # numeric features: bins cut at the reference's deciles (fewer when values repeat)
SAMPLE_VALUES = 1000  # numeric features: sorted reference values kept for the KS test
TOP_CATEGORIES = 20  # categorical features: the most frequent values kept; the rest count as one
KNOWN_OTHERS = 1000  # categorical features: the rest's distinct values kept, to tell unseen values
CATEGORICAL_VALUES = 10  # whole-number columns with at most this many distinct values are categorical ...
ROWS_PER_VALUE = 5  # ... when the reference has at least this many rows per distinct value
OTHER = "(other)"
UNSEEN = "(unseen)"  # the other bin's label when the reference had no other values
MISSING = "(missing)"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
PREFERRED_OUTPUTS = ("label", "prediction")  # the output whose distribution is "the prediction"
CATEGORICAL_OUTPUTS = ("label",)  # a classifier's prediction: categorical whatever its type


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's reference distribution, as bins: ``counts`` has one count per bin.

    Numeric: ``edges`` are the inner bin edges; value v falls in bin
    ``searchsorted(edges, v, "left")``, so bin i holds edges[i-1] < v <= edges[i]. Categorical:
    bin i holds ``categories[i]``, the last bin every other value; ``others`` are the reference's
    values in that last bin (None when it had more than :data:`KNOWN_OTHERS`: unseen values are
    then not told apart). ``missing`` counts NaN and null.
    """

    name: str
    kind: str  # NUMERIC | CATEGORICAL
    counts: tuple[int, ...]
    missing: int = 0
    edges: tuple[float, ...] = ()
    sample: tuple[float, ...] = ()  # numeric: sorted reference values for the KS test
    categories: tuple[str, ...] = ()
    others: tuple[str, ...] | None = ()

    @classmethod
    def of(cls, name: str, values: np.ndarray, *, categorical: bool = False) -> FeatureProfile:
        """The profile of ``values``: categorical when ``categorical`` says so or when
        :func:`is_categorical`, else numeric."""
        if not (categorical or is_categorical(values)):
            numbers = values.astype(np.float64)
            present = np.sort(numbers[~np.isnan(numbers)])
            quantiles = np.linspace(0.0, 1.0, BINS + 1)[1:-1]
            edges = np.unique(np.quantile(present, quantiles)) if present.size else np.empty(0)
            profile = cls(name, NUMERIC, (), edges=tuple(float(e) for e in edges), sample=_spread(present))
        else:
            frequent = Counter(key for key in map(category, values) if key is not None)
            ranked = sorted(frequent.items(), key=lambda item: (-item[1], item[0]))
            rest = sorted(key for key, _ in ranked[TOP_CATEGORIES:])
            profile = cls(
                name,
                CATEGORICAL,
                (),
                categories=tuple(key for key, _ in ranked[:TOP_CATEGORIES]),
                others=tuple(rest) if len(rest) <= KNOWN_OTHERS else None,
            )
        counts, missing = profile.bin(values)
        return replace(profile, counts=tuple(int(c) for c in counts), missing=missing)

    def bin(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """Counts per bin of ``values`` (any array of this feature's values) and how many are missing."""
        if self.kind == NUMERIC:
            numbers = np.asarray(values, dtype=np.float64)
            absent = np.isnan(numbers)
            where = np.searchsorted(np.asarray(self.edges, dtype=np.float64), numbers[~absent], side="left")
            return np.bincount(where, minlength=len(self.edges) + 1), int(absent.sum())
        index = {key: i for i, key in enumerate(self.categories)}
        other = len(self.categories)
        counts = np.zeros(other + 1, dtype=np.int64)
        missing = 0
        for key in map(category, values):
            if key is None:
                missing += 1
            else:
                counts[index.get(key, other)] += 1
        return counts, missing

    def unseen(self, values: np.ndarray) -> Counter[str] | None:
        """The values of a categorical feature that its reference never had, with their counts;
        None for a numeric feature, or when the reference had too many values to keep."""
        if self.kind != CATEGORICAL or self.others is None:
            return None
        known = {*self.categories, *self.others}
        return Counter(key for key in map(category, values) if key is not None and key not in known)

    def labels(self) -> list[str]:
        """A short label per bin, for tables and plots."""
        if self.kind == CATEGORICAL:
            return [*self.categories, UNSEEN if self.others == () else OTHER]
        if not self.edges:
            return ["all values"]
        shown = [f"{edge:.4g}" for edge in self.edges]
        middle = [f"{low}–{high}" for low, high in itertools.pairwise(shown)]
        return [f"≤ {shown[0]}", *middle, f"> {shown[-1]}"]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "counts": list(self.counts)}
        data["missing"] = self.missing
        if self.kind == NUMERIC:
            data.update(edges=list(self.edges), sample=list(self.sample))
        else:
            data["categories"] = list(self.categories)
            data["others"] = None if self.others is None else list(self.others)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureProfile:
        counts = tuple(int(c) for c in data["counts"])
        if "others" in data:
            others = None if data["others"] is None else tuple(str(v) for v in data["others"])
        else:  # a profile written before others were kept: complete when its other bin is empty
            others = () if not counts or not counts[-1] else None
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            counts=counts,
            missing=int(data.get("missing", 0)),
            edges=tuple(float(e) for e in data.get("edges", ())),
            sample=tuple(float(v) for v in data.get("sample", ())),
            categories=tuple(str(c) for c in data.get("categories", ())),
            others=others if data["kind"] == CATEGORICAL else (),
        )


@dataclass(frozen=True)
class Profile:
    """A version's reference profile: its inputs' features and its prediction's distribution."""

    rows: int
    source: str  # "reference_data" or "sample_input"
    inputs: tuple[TensorSpec, ...]  # the signature's inputs, so traffic maps onto the same features
    features: tuple[FeatureProfile, ...]
    prediction: FeatureProfile | None = None
    prediction_output: str | None = None  # the output it was read from

    @property
    def signature(self) -> Signature:
        return Signature(self.inputs, ())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rows": self.rows,
            "source": self.source,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "features": [feature.to_dict() for feature in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "prediction_output": self.prediction_output,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        prediction = data.get("prediction")
        return cls(
            rows=int(data["rows"]),
            source=str(data["source"]),
            inputs=tuple(TensorSpec.from_dict(spec) for spec in data["inputs"]),
            features=tuple(FeatureProfile.from_dict(f) for f in data["features"]),
            prediction=FeatureProfile.from_dict(prediction) if prediction else None,
            prediction_output=data.get("prediction_output"),
        )


def features(signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's inputs as one 1-D array per feature (see the module docstring).

    Raises InvalidInput when an input is missing or has another number of dimensions than its spec.
    """
    columns: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.binary or len(spec.shape) > 2:
            continue
        arr = inputs.get(spec.name)
        if arr is None:
            raise InvalidInput(f"missing input {spec.name!r}", input_name=spec.name)
        if arr.ndim != len(spec.shape):
            raise InvalidInput(f"input {spec.name!r}: {arr.ndim}-D, expected {len(spec.shape)}-D", input_name=spec.name)
        if arr.ndim == 1:
            columns[spec.name] = arr
            continue
        names = spec.feature_names or tuple(f"{spec.name}[{j}]" for j in range(arr.shape[1]))
        if len(names) != arr.shape[1]:
            raise InvalidInput(f"input {spec.name!r}: {arr.shape[1]} columns, expected {len(names)}")
        for j, name in enumerate(names):
            columns[name] = arr[:, j]
    return columns


def prediction_output(signature: Signature) -> str | None:
    """The output whose distribution stands for the model's prediction: ``label`` or
    ``prediction`` when there is one, else the first output of at most two dimensions."""
    usable = [spec.name for spec in signature.outputs if len(spec.shape) <= 2 and not spec.binary]
    return next((name for name in PREFERRED_OUTPUTS if name in usable), usable[0] if usable else None)


def prediction_values(values: np.ndarray) -> np.ndarray | None:
    """An output's values as one value per row: a 2-D output's first column."""
    if values.ndim == 1:
        return values
    if values.ndim == 2 and values.shape[1]:
        return values[:, 0]
    return None


def prediction_name(output: str, values: np.ndarray) -> str:
    return output if values.ndim == 1 else f"{output}[0]"


def build_profile(
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray] | None,
    *,
    source: str,
) -> Profile:
    """The profile of reference ``inputs`` (validated against ``signature``) and the model's
    ``outputs`` on them."""
    columns = features(signature, inputs)
    rows = len(next(iter(inputs.values()))) if inputs else 0
    if not rows:
        raise InvalidInput("the reference data has no rows")
    profiles = tuple(FeatureProfile.of(name, values) for name, values in columns.items())
    output = prediction_output(signature)
    prediction = None
    if output is not None and outputs is not None and output in outputs:
        got = np.asarray(outputs[output])
        values = prediction_values(got)
        if values is not None:
            categorical = output in CATEGORICAL_OUTPUTS
            prediction = FeatureProfile.of(prediction_name(output, got), values, categorical=categorical)
    return Profile(rows, source, signature.inputs, profiles, prediction, output if prediction else None)


def write_profile(directory: Path, profile: Profile) -> Path:
    path = directory / PROFILE_FILE
    path.write_bytes(orjson.dumps(profile.to_dict()))
    return path


def read_profile(artifact: Path) -> Profile | None:
    """The profile stored in a version's artifact directory, or None for a version without one."""
    path = artifact / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        return Profile.from_dict(orjson.loads(path.read_bytes()))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidModel(f"{path} is not a readable reference profile: {exc}") from None


def is_categorical(values: np.ndarray) -> bool:
    """Whether a feature's reference ``values`` are categories (see the module docstring): not
    numbers, or whole numbers with at most :data:`CATEGORICAL_VALUES` distinct values and
    :data:`ROWS_PER_VALUE` rows per value."""
    if values.dtype.kind not in "iuf":
        return True
    numbers = values.astype(np.float64)
    present = numbers[~np.isnan(numbers)]
    if not present.size or not np.all(np.isfinite(present)) or np.any(present != np.round(present)):
        return False
    distinct = np.unique(present).size
    return distinct <= CATEGORICAL_VALUES and present.size >= ROWS_PER_VALUE * distinct


def category(value: Any) -> str | None:
    """A categorical value as the text it is counted under; None for a missing one. A whole
    float is counted as the integer it is (``1.0`` and ``1`` are both ``"1"``)."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def _spread(ordered: np.ndarray) -> tuple[float, ...]:
    """At most SAMPLE_VALUES of sorted values, evenly spaced by rank (all of them when fewer)."""
    if ordered.size > SAMPLE_VALUES:
        ordered = ordered[np.linspace(0, ordered.size - 1, SAMPLE_VALUES).round().astype(np.int64)]
    return tuple(float(v) for v in ordered)
