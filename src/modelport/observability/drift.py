"""Drift: captured traffic of a version compared with its reference profile.

Per feature (and for the prediction): the population stability index (PSI) over the profile's
bins, and a test of whether the traffic could come from the reference distribution: the
two-sample Kolmogorov–Smirnov test for a numeric feature, the chi-squared test of homogeneity
over the bins for a categorical one.

**The rule.** A feature is *drifted* when its PSI is above :data:`PSI_THRESHOLD` (0.2) **and**
the test's p-value is below :data:`P_VALUE` (0.01). Each half guards against the other's
weakness: with thousands of rows the test alone flags shifts too small to matter, while the PSI
alone is noisy when the reference or the traffic has few rows (ten bins over a 20-row sample
reach a PSI of 0.2 by chance). Traffic drawn from the reference distribution is not flagged;
a clear shift of one feature flags that feature alone.

PSI = Σ (c_i − r_i) · ln(c_i / r_i) over the bins, with r_i and c_i the reference's and the
traffic's shares of the bin, each count plus 0.5 so an empty bin stays finite; missing values
are a bin of their own when either side has any.

**Unseen values.** Of a categorical feature, the traffic's values that the reference never had
(``fibre`` where it had ``fiber``) are counted apart (:attr:`FeatureDrift.unseen`, with the most
frequent of them): a few percent of them barely move the PSI, yet each is a value the model was
never trained on. Not counted (None) for numeric features, and for a reference with more
distinct values than its profile keeps.

The p-values are computed in NumPy, without SciPy: the KS p-value from the limiting Kolmogorov
distribution, P(K > D·√(nm/(n+m))) (``scipy.stats.kstwobign.sf``), with n the reference values
the profile keeps (up to 1,000) and m the traffic's; ``scipy.stats.ks_2samp`` uses the
finite-sample distribution, whose p-values are a little smaller, so this errs toward not flagging.
The chi-squared p-value is the regularized upper incomplete gamma function Q(dof/2, χ²/2).

Captured traffic (:func:`iter_captured`): ``<root>/<model>/<version>/*.jsonl``, one JSON object
per request: ``{"time", "model", "version", "request_id", "inputs": {name: rows}, "outputs":
{name: rows}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInput, ModelportError
from modelport.observability.capture import REDACTED  # what capture writes instead of a redacted tensor
from modelport.observability.profile import (
    MISSING,
    NUMERIC,
    FeatureProfile,
    Profile,
    features,
    prediction_values,
    read_profile,
)
from modelport.serving.tasks import in_background
from modelport.types import ModelVersion, Signature, TensorSpec, dtype_of

logger = logging.getLogger("modelport")

PSI_THRESHOLD = 0.2
P_VALUE = 0.01
SMOOTHING = 0.5  # added to every bin's count before shares are taken
UNSEEN_SHOWN = 5  # the most frequent unseen values a report names


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the prediction's) drift, with the shares per bin for plots."""

    name: str
    kind: str  # NUMERIC | CATEGORICAL
    psi: float | None  # None when the traffic has no values of it
    pvalue: float | None  # KS (numeric) or chi-squared (categorical)
    drifted: bool
    values: int  # the traffic's values of the feature, missing ones included
    bins: tuple[str, ...]
    reference: tuple[float, ...]  # share of the reference in each bin
    current: tuple[float, ...]  # share of the traffic in each bin
    unseen: int | None = None  # categorical: the traffic's values its reference never had (None: not counted)
    unseen_values: tuple[tuple[str, int], ...] = ()  # the most frequent of them, with their counts

    @property
    def test(self) -> str:
        return "KS" if self.kind == NUMERIC else "χ²"

    @property
    def ks_pvalue(self) -> float | None:
        return self.pvalue if self.kind == NUMERIC else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "psi": self.psi,
            "ks_pvalue": self.ks_pvalue,
            "drifted": self.drifted,
            "unseen": self.unseen,
        }


@dataclass(frozen=True)
class DriftReport:
    """Traffic against a profile: ``rows`` compared, ``skipped`` records that did not fit the
    signature (missing inputs, other shapes, values of another type)."""

    rows: int
    skipped: int
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None
    profile: Profile = field(repr=False)

    @property
    def drifted(self) -> list[str]:
        return [feature.name for feature in self.features if feature.drifted]

    @property
    def unseen(self) -> dict[str, int]:
        """Features (and the prediction) with unseen values: how many values each."""
        compared = [*self.features, *([self.prediction] if self.prediction is not None else [])]
        return {feature.name: feature.unseen for feature in compared if feature.unseen}

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "features": [feature.to_dict() for feature in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
        }


def compute_drift(profile: Profile, records: Iterable[Mapping[str, Any]]) -> DriftReport:
    """Compare captured records (as :func:`iter_captured` yields them) with ``profile``."""
    signature = profile.signature
    kinds = {feature.name: feature.kind for feature in profile.features}
    columns: dict[str, list[np.ndarray]] = {name: [] for name in kinds}
    predicted: list[np.ndarray] = []
    rows = skipped = 0
    for record in records:
        try:
            got = _record_features(signature, kinds, record)
        except (InvalidInput, ValueError, TypeError, KeyError, AttributeError):
            skipped += 1
            continue
        for name, values in got.items():
            columns[name].append(values)
        rows += len(next(iter(got.values()))) if got else 0
        if profile.prediction is not None and profile.prediction_output is not None:
            answer = _record_prediction(record, profile.prediction_output, profile.prediction.kind)
            if answer is not None:
                predicted.append(answer)
    compared = tuple(_compare(feature, columns[feature.name]) for feature in profile.features)
    prediction = _compare(profile.prediction, predicted) if profile.prediction is not None else None
    return DriftReport(rows, skipped, compared, prediction, profile)


def _record_features(
    signature: Signature, kinds: Mapping[str, str], record: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """One record's values per feature; an input missing from it (or not the right shape) raises."""
    given = record["inputs"]
    missing = [spec.name for spec in signature.inputs if spec.name not in given]
    if missing:
        raise InvalidInput(f"missing input {missing[0]!r}")
    shown = tuple(spec for spec in signature.inputs if not _redacted(given[spec.name]))
    arrays = {spec.name: _as_received(given[spec.name], spec) for spec in shown}
    got = {name: _typed(values, kinds[name]) for name, values in features(Signature(shown, ()), arrays).items()}
    if len({len(values) for values in got.values()}) > 1:
        raise InvalidInput("inputs with different numbers of rows")
    return got


def _as_received(value: Any, spec: TensorSpec) -> np.ndarray:
    """Captured values as the model received them: a float input in its own precision. Capture
    writes a float32 2.8 as ``2.8`` (the shortest text that reads back as that float32), while the
    profile holds the float32 itself (2.799999952...); compared unrounded, every such value would
    fall one bin off and identical traffic would look drifted."""
    dtype = dtype_of(spec.datatype)
    if dtype.kind == "f":
        return np.array(value, dtype=dtype)  # null -> NaN (missing)
    return np.array(value, dtype=object)


def _redacted(value: Any) -> bool:
    return isinstance(value, str) and value == REDACTED


def _record_prediction(record: Mapping[str, Any], output: str, kind: str) -> np.ndarray | None:
    try:
        values = prediction_values(np.array(record["outputs"][output], dtype=object))
        return None if values is None else _typed(values, kind)
    except (KeyError, TypeError, ValueError):
        return None


def _typed(values: np.ndarray, kind: str) -> np.ndarray:
    if kind != NUMERIC:
        return values
    return np.array([math.nan if v is None else v for v in values.tolist()], dtype=np.float64)


def _compare(feature: FeatureProfile, parts: list[np.ndarray]) -> FeatureDrift:
    values = np.concatenate(parts) if parts else np.empty(0, dtype=np.float64 if feature.kind == NUMERIC else object)
    counts, missing = feature.bin(values)
    reference = np.asarray([*feature.counts, feature.missing], dtype=np.float64)
    current = np.asarray([*counts, missing], dtype=np.float64)
    labels = [*feature.labels(), MISSING]
    if not feature.missing and not missing:  # no missing bin when neither side has missing values
        reference, current, labels = reference[:-1], current[:-1], labels[:-1]
    ref_share = reference / max(reference.sum(), 1.0)
    cur_share = current / max(current.sum(), 1.0)
    psi = pvalue = None
    if current.sum():
        psi = population_stability(reference, current)
        if feature.kind == NUMERIC:
            present = values[~np.isnan(values)] if values.size else values
            sample = np.asarray(feature.sample, dtype=np.float64)
            pvalue = ks_pvalue(sample, present) if present.size and sample.size else None
        else:
            pvalue = chi_squared_pvalue(reference, current)
    drifted = psi is not None and pvalue is not None and psi > PSI_THRESHOLD and pvalue < P_VALUE
    unseen = feature.unseen(values) if current.sum() else None
    return FeatureDrift(
        feature.name,
        feature.kind,
        psi,
        pvalue,
        drifted,
        int(current.sum()),
        tuple(labels),
        tuple(float(s) for s in ref_share),
        tuple(float(s) for s in cur_share),
        None if unseen is None else sum(unseen.values()),
        () if unseen is None else tuple(unseen.most_common(UNSEEN_SHOWN)),
    )


# --- statistics ----------------------------------------------------------------------------


def population_stability(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two count vectors over the same bins (each count plus :data:`SMOOTHING`)."""
    r = np.asarray(reference, dtype=np.float64) + SMOOTHING
    c = np.asarray(current, dtype=np.float64) + SMOOTHING
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def ks_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov–Smirnov p-value (two-sided, asymptotic) of samples ``a`` and ``b``."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    pooled = np.concatenate([a, b])
    gap = np.abs(np.searchsorted(a, pooled, side="right") / a.size - np.searchsorted(b, pooled, side="right") / b.size)
    n, m = a.size, b.size
    return kolmogorov_sf(float(gap.max()) * math.sqrt(n * m / (n + m)))


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution: the series in exp(−2k²x²), or for small x the
    equivalent series in exp(−(2k−1)²π²/(8x²)), each converging fast where it is used."""
    if x <= 0.0:
        return 1.0
    if x < 1.18:
        ks = np.arange(1, 8)
        total = float(np.sum(np.exp(-((2 * ks - 1) ** 2) * math.pi**2 / (8 * x * x))))
        p = 1.0 - math.sqrt(2 * math.pi) / x * total
    else:
        ks = np.arange(1, 12)
        p = 2.0 * float(np.sum((-1.0) ** (ks - 1) * np.exp(-2.0 * ks**2 * x * x)))
    return min(max(p, 0.0), 1.0)


def chi_squared_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    """The chi-squared test of homogeneity of two count vectors over the same bins."""
    table = np.vstack([np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or not table[0].sum() or not table[1].sum():
        return 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return upper_gamma(0.5 * (table.shape[1] - 1), 0.5 * statistic)


def upper_gamma(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x): a series below a + 1, a continued
    fraction (modified Lentz) above (Numerical Recipes, 6.2)."""
    if x <= 0.0:
        return 1.0
    scale = math.exp(-x + a * math.log(x) - math.lgamma(a))
    if x < a + 1.0:
        term = total = 1.0 / a
        denominator = a
        for _ in range(1000):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return min(max(1.0 - total * scale, 0.0), 1.0)
    tiny = 1e-300
    b = x + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(max(scale * h, 0.0), 1.0)


# --- captured traffic ----------------------------------------------------------------------


class Captured:
    """The captured records of one version, read file by file (in name order) while iterated.

    A line that is not a JSON object with a readable ``time`` is skipped; ``skipped`` says how
    many were, once iterated. With ``since``, records older than it are left out (not skipped).
    """

    def __init__(self, directory: Path, since: datetime | None = None) -> None:
        self.directory = directory
        self.since = since
        self.skipped = 0

    @property
    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl")) if self.directory.is_dir() else []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skipped = 0
        for path in self.files:
            with path.open("rb") as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    record = _parse(line)
                    if record is None:
                        self.skipped += 1
                    elif self.since is None or record["time"] >= self.since:
                        yield record


def iter_captured(root: Path, model: str, version: int, since: datetime | None = None) -> Captured:
    """The records captured for ``model`` version ``version`` under ``root`` (the capture root,
    ``<MODELPORT_HOME>/capture`` by default), from ``since`` on when given; ``time`` becomes a
    timezone-aware datetime (UTC when the line gives no offset)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return Captured(Path(root) / model / str(version), since)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("time"), str):
        return None
    try:
        when = datetime.fromisoformat(record["time"])
    except ValueError:
        return None
    record["time"] = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return record


class DriftGauges:
    """The server's drift gauges: every ``interval`` seconds, each served version that has a
    reference profile is compared with the traffic captured in the last ``window`` seconds; the
    results are what ``/metrics`` shows as ``modelport_drift_psi``, ``modelport_drift_detected``
    and, for categorical features, ``modelport_drift_unseen_values`` (the prediction as feature
    ``(prediction)``). Versions without a profile, or with fewer than
    ``min_rows`` captured rows in the window (a handful of rows flags chance), have no gauges.
    Made with the app; it computes only while :meth:`running` (the server follows a registry)."""

    PREDICTION = "(prediction)"

    def __init__(
        self,
        capture_root: Path,
        *,
        interval: float = 60.0,
        window: float = 3600.0,
        min_rows: int = 100,
    ) -> None:
        self.min_rows = min_rows
        self.capture_root = capture_root
        self.interval = interval
        self.window = window
        self._profiles: dict[tuple[str, int], Profile | None] = {}
        self._reports: dict[tuple[str, int], DriftReport] = {}

    def refresh(self, versions: Iterable[ModelVersion], artifact: Callable[[ModelVersion], Path]) -> None:
        """Recompute the reports of ``versions``, whose reference profiles are in the directories
        ``artifact`` gives (in a thread: it reads files)."""
        since = datetime.now(UTC) - timedelta(seconds=self.window)
        reports: dict[tuple[str, int], DriftReport] = {}
        for version in versions:
            key = (version.name, version.version)
            if key not in self._profiles:
                try:
                    self._profiles[key] = read_profile(artifact(version))
                except ModelportError as exc:
                    logger.warning("drift of %s: %s", version.ref, exc.message)
                    self._profiles[key] = None
            profile = self._profiles[key]
            if profile is None:
                continue
            report = compute_drift(profile, iter_captured(self.capture_root, version.name, version.version, since))
            if report.rows >= self.min_rows:
                reports[key] = report
        self._reports = reports

    def samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """(family, labels, value) for the metrics."""
        for (name, number), report in list(self._reports.items()):
            features = [*report.features, *([report.prediction] if report.prediction is not None else [])]
            for feature in features:
                label = self.PREDICTION if feature is report.prediction else feature.name
                labels = (name, str(number), label)
                if feature.psi is not None:
                    yield "modelport_drift_psi", labels, feature.psi
                yield "modelport_drift_detected", labels, 1.0 if feature.drifted else 0.0
                if feature.unseen is not None:
                    yield "modelport_drift_unseen_values", labels, float(feature.unseen)

    @contextlib.asynccontextmanager
    async def running(
        self, served: Callable[[], Iterable[ModelVersion]], artifact: Callable[[ModelVersion], Path]
    ) -> AsyncIterator[None]:
        """Refresh the versions ``served`` names every ``interval`` seconds while the block runs (0: never)."""
        if self.interval <= 0:
            yield
            return

        async def forever() -> None:
            while True:
                try:
                    await asyncio.to_thread(self.refresh, list(served()), artifact)
                except Exception as exc:  # a bad capture file must not end the loop
                    logger.warning("cannot compute drift: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(self.interval)

        async with in_background(forever(), "modelport-drift"):
            yield
