"""Reference profiles kept at registration, and drift of captured traffic against them: real models
registered in a temporary home, traffic written as capture files, the CLI run in-process."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import scipy.special
import scipy.stats
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner, Result

import modelport
from modelport.cli.main import app
from modelport.errors import InvalidInput
from modelport.ingest.package import package
from modelport.observability.drift import (
    chi_squared_pvalue,
    compute_drift,
    iter_captured,
    ks_pvalue,
    upper_gamma,
)
from modelport.observability.profile import (
    CATEGORICAL_VALUES,
    PROFILE_FILE,
    ROWS_PER_VALUE,
    FeatureProfile,
    Profile,
    features,
    read_profile,
)
from modelport.registry.export import export_version
from modelport.registry.registry import Registry
from modelport.settings import Settings
from modelport.signature import to_inputs
from modelport.types import ModelVersion, Signature, TensorSpec
from tests.support.tabular import mixed_frame, mixed_pipeline

FEATURES = ["f0", "f1", "f2", "f3"]
NOW = datetime.now(UTC)


def draw(rows: int, seed: int) -> pd.DataFrame:
    """Rows of one fixed distribution: a normal, a skewed, a uniform and a small-integer feature."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "f0": rng.normal(0.0, 1.0, rows),
            "f1": rng.exponential(2.0, rows),
            "f2": rng.uniform(-1.0, 1.0, rows),
            "f3": rng.poisson(3.0, rows).astype(np.float64),
        }
    )


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    return np.where(frame["f0"] + frame["f2"] - 0.2 * frame["f1"] > 0, "yes", "no")


class Home:
    """A modelport home with the numeric model registered twice: version 1 with 3,000 rows of
    reference data, version 2 with only its 20-row sample."""

    def __init__(self, root: Path) -> None:
        self.settings = Settings(home=root / "home")
        self.reference = draw(3000, seed=0)
        self.model = LogisticRegression(max_iter=500).fit(self.reference, labels_of(self.reference))
        sample = self.reference.head(20)
        self.full = modelport.register(
            self.model, name="num", sample_input=sample, reference_data=self.reference, settings=self.settings
        )
        self.small = modelport.register(self.model, name="num", sample_input=sample, settings=self.settings)

    def profile(self, version: ModelVersion) -> Profile:
        with Registry.open(self.settings) as registry:
            profile = read_profile(registry.artifact_path(version))
        assert profile is not None
        return profile


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("drift"))


def capture(
    settings: Settings,
    version: ModelVersion,
    frame: pd.DataFrame,
    *,
    when: datetime = NOW,
    per_line: int = 10,
    columns: bool = False,
    name: str = "20261130T120000Z-1.jsonl",
    extra: Sequence[bytes] = (),
) -> Path:
    """Write ``frame`` as capture lines of ``per_line`` rows, with the model's real outputs: one
    2-D input (``columns``: one 1-D input per column), as the capture writer does."""
    with modelport.load(version.ref, settings=settings) as model:
        outputs = model.predict(frame)
    folder = settings.home / "capture" / version.name / str(version.version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("ab") as out:
        for start in range(0, len(frame), per_line):
            part = frame.iloc[start : start + per_line]
            if columns:
                inputs = {column: part[column].tolist() for column in part.columns}
            else:
                inputs = {"input": part.to_numpy().tolist()}
            record = {
                "time": when.isoformat(),
                "model": version.name,
                "version": version.version,
                "request_id": f"r-{start}",
                "inputs": inputs,
                "outputs": {key: value[start : start + per_line].tolist() for key, value in outputs.items()},
            }
            out.write(orjson.dumps(record) + b"\n")
        for line in extra:
            out.write(line + b"\n")
    return path


def clear_capture(settings: Settings, version: ModelVersion) -> None:
    for path in (settings.home / "capture" / version.name / str(version.version)).glob("*.jsonl"):
        path.unlink()


@pytest.fixture
def cli(home: Home) -> Callable[..., Result]:
    runner = CliRunner()
    env = {"MODELPORT_HOME": str(home.settings.home), "COLUMNS": "200", "NO_COLOR": "1"}

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke


@pytest.fixture
def traffic(home: Home) -> Iterator[Callable[..., Path]]:
    """Capture writer for version 1 (num@1), emptied after each test."""

    def write(frame: pd.DataFrame, **options: Any) -> Path:
        return capture(home.settings, home.full, frame, **options)

    yield write
    clear_capture(home.settings, home.full)


def drift_json(cli: Callable[..., Result], *args: str) -> dict[str, Any]:
    result = cli("drift", *args, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = orjson.loads(result.stdout)
    return data


def flagged(data: dict[str, Any]) -> list[str]:
    return [feature["name"] for feature in data["features"] if feature["drifted"]]


# --- the profile kept at registration ----------------------------------------------------------


def test_registration_profiles_the_reference_data_and_the_predictions(home: Home) -> None:
    profile = home.profile(home.full)
    assert (profile.rows, profile.source) == (3000, "reference_data")
    assert [f.name for f in profile.features] == FEATURES
    f0 = profile.features[0]
    assert f0.kind == "numeric"
    assert sum(f0.counts) == 3000
    assert len(f0.counts) == 10
    assert len(f0.edges) == 9
    assert f0.edges[4] == pytest.approx(float(np.quantile(home.reference["f0"], 0.5)))
    assert len(f0.sample) == 1000
    assert list(f0.sample) == sorted(f0.sample)
    f3 = profile.features[3]  # a handful of integers: fewer, distinct edges
    assert len(f3.edges) == len(set(f3.edges)) < 9
    assert sum(f3.counts) == 3000
    assert profile.prediction is not None
    assert profile.prediction_output == "label"
    assert profile.prediction.kind == "categorical"
    assert set(profile.prediction.categories) == {"yes", "no"}
    predicted = home.model.predict(home.reference)
    counts = dict(zip(profile.prediction.categories, profile.prediction.counts, strict=False))
    assert counts == {"yes": int((predicted == "yes").sum()), "no": int((predicted == "no").sum())}


def test_without_reference_data_the_sample_is_profiled_with_a_warning(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    profile = home.profile(home.small)
    assert (profile.rows, profile.source) == (20, "sample_input")
    with caplog.at_level(logging.WARNING, logger="modelport"):
        modelport.register(home.model, name="again", sample_input=home.reference.head(20), settings=home.settings)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("sample input (20 rows)" in m and "reference_data=" in m for m in warned), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modelport"):
        modelport.register(
            home.model, name="again", sample_input=home.reference.head(20), reference_data=home.reference,
            settings=home.settings,
        )  # fmt: skip
    assert not [r for r in caplog.records if "reference profile" in r.getMessage()]


def test_the_profile_travels_with_an_export(home: Home, tmp_path: Path) -> None:
    with Registry.open(home.settings) as registry:
        archive = export_version(home.full, registry.artifact_path(home.full), tmp_path / "out")
    kept = Profile.from_dict(orjson.loads((tmp_path / "out" / PROFILE_FILE).read_bytes()))
    assert kept == home.profile(home.full)
    import tarfile

    with tarfile.open(archive) as tar:
        assert PROFILE_FILE in tar.getnames()


def test_reference_data_that_does_not_fit_the_inputs_is_refused(home: Home) -> None:
    with pytest.raises(InvalidInput, match="reference data does not fit the model's inputs: missing feature 'f3'"):
        modelport.register(
            home.model, name="bad", sample_input=home.reference.head(20),
            reference_data=home.reference.drop(columns="f3"), settings=home.settings,
        )  # fmt: skip


def test_features_flatten_named_unnamed_and_one_dimensional_inputs() -> None:
    signature = Signature(
        (
            TensorSpec("x", "FP64", (-1, 2), feature_names=("a", "b")),
            TensorSpec("y", "FP64", (-1, 2)),
            TensorSpec("w", "BYTES", (-1,)),
            TensorSpec("image", "FP32", (-1, 2, 2)),
        ),
        (),
    )
    inputs = {
        "x": np.array([[1.0, 2.0]]),
        "y": np.array([[3.0, 4.0]]),
        "w": np.array(["z"], dtype=object),
        "image": np.zeros((1, 2, 2)),
    }
    got = features(signature, inputs)
    assert {name: values.tolist() for name, values in got.items()} == {
        "a": [1.0], "b": [2.0], "y[0]": [3.0], "y[1]": [4.0], "w": ["z"],
    }  # fmt: skip
    with pytest.raises(InvalidInput, match="'y': 1-D, expected 2-D"):
        features(signature, {**inputs, "y": np.array([3.0])})


# --- drift: the rule -----------------------------------------------------------------------------


def test_traffic_from_the_reference_distribution_is_not_flagged(
    home: Home, cli: Callable[..., Result], traffic: Callable[..., Path]
) -> None:
    traffic(draw(5000, seed=11))
    data = drift_json(cli, "num@1")
    assert data["rows"] == 5000
    assert flagged(data) == []
    assert all(feature["psi"] < 0.05 for feature in data["features"]), data
    assert data["prediction"]["drifted"] is False
    assert data["prediction"]["psi"] < 0.05


def test_a_shift_of_one_feature_is_flagged_on_that_feature_alone(
    home: Home, cli: Callable[..., Result], traffic: Callable[..., Path]
) -> None:
    shifted = draw(5000, seed=12)
    shifted["f1"] = shifted["f1"] + 2.0  # the mean of the exponential moves from 2 to 4
    traffic(shifted)
    data = drift_json(cli, "num@1")
    assert flagged(data) == ["f1"]
    f1 = next(feature for feature in data["features"] if feature["name"] == "f1")
    assert f1["psi"] > 0.2
    assert f1["ks_pvalue"] < 1e-6
    table = cli("drift", "num@1")
    assert table.exit_code == 0, table.output
    assert table.stdout.count("DRIFTED") == 1
    assert "5000 captured rows against the reference profile (3000 rows of reference data); drifted: f1" in table.stdout


def test_a_small_reference_does_not_flag_chance_though_its_psi_is_high(home: Home) -> None:
    """Ten bins over 20 rows: PSI alone passes 0.2 by chance; the KS test keeps it unflagged."""
    frame = draw(3000, seed=13)
    records = [{"inputs": {"input": frame.iloc[i : i + 10].to_numpy().tolist()}} for i in range(0, 3000, 10)]
    report = compute_drift(home.profile(home.small), records)
    assert report.rows == 3000
    assert report.drifted == []
    assert max(feature.psi or 0.0 for feature in report.features) > 0.2
    shifted = frame.assign(f0=frame["f0"] + 3.0)
    records = [{"inputs": {"input": shifted.iloc[i : i + 10].to_numpy().tolist()}} for i in range(0, 3000, 10)]
    assert compute_drift(home.profile(home.small), records).drifted == ["f0"]


def test_categorical_features_drift_on_their_frequencies(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    frame, labels = mixed_frame(3000, seed=0)
    version = modelport.register(
        mixed_pipeline(frame, labels), name="mixed", sample_input=frame.head(30), reference_data=frame,
        settings=settings,
    )  # fmt: skip
    profile = read_profile(Registry.open(settings).artifact_path(version))
    assert profile is not None
    color = next(f for f in profile.features if f.name == "color")
    assert color.kind == "categorical"
    assert set(color.categories) == {"red", "green", "blue"}
    runner = CliRunner()
    env = {"MODELPORT_HOME": str(settings.home), "COLUMNS": "200", "NO_COLOR": "1"}

    capture(settings, version, mixed_frame(4000, seed=5)[0], columns=True)
    same = orjson.loads(runner.invoke(app, ["drift", "mixed@1", "--json"], env=env).stdout)
    assert same["rows"] == 4000
    assert flagged(same) == []
    assert {f["name"]: f["ks_pvalue"] for f in same["features"]}["color"] is None
    clear_capture(settings, version)

    moved, _ = mixed_frame(4000, seed=6)
    rng = np.random.default_rng(6)
    moved["color"] = rng.choice(["blue", "purple"], len(moved), p=[0.7, 0.3])  # mostly blue, and a new colour
    capture(settings, version, moved, columns=True)
    data = orjson.loads(runner.invoke(app, ["drift", "mixed@1", "--json"], env=env).stdout)
    assert flagged(data) == ["color"]
    psi = {f["name"]: f["psi"] for f in data["features"]}
    assert psi["color"] > 1.0
    assert psi["size"] < 0.05
    assert psi["count"] < 0.05


# --- the CLI ------------------------------------------------------------------------------------


def test_json_has_exactly_the_documented_shape(
    home: Home, cli: Callable[..., Result], traffic: Callable[..., Path]
) -> None:
    traffic(draw(500, seed=14))
    data = drift_json(cli, "num@1")
    assert list(data) == ["model", "version", "rows", "features", "prediction"]
    assert (data["model"], data["version"], data["rows"]) == ("num", 1, 500)
    assert [feature["name"] for feature in data["features"]] == FEATURES
    for entry in [*data["features"], data["prediction"]]:
        assert list(entry) == ["name", "psi", "ks_pvalue", "drifted", "unseen"]
        assert isinstance(entry["psi"], float)
        assert isinstance(entry["drifted"], bool)
    assert all(isinstance(feature["ks_pvalue"], float) for feature in data["features"])
    assert all(feature["unseen"] is None for feature in data["features"])  # numeric: not counted
    assert data["prediction"]["name"] == "label"
    assert data["prediction"]["ks_pvalue"] is None
    assert data["prediction"]["unseen"] == 0


def test_html_report_has_one_inline_plot_per_feature(
    home: Home, cli: Callable[..., Result], traffic: Callable[..., Path], tmp_path: Path
) -> None:
    shifted = draw(2000, seed=15)
    shifted["f2"] = shifted["f2"] * 0.2 + 0.8
    traffic(shifted)
    report = tmp_path / "report.html"
    result = cli("drift", "num@1", "--html", str(report))
    assert result.exit_code == 0, result.output
    page = report.read_text(encoding="utf-8")
    assert page.count("<figure class='feature'") == 4
    assert page.count("<figure class='prediction'") == 1
    assert page.count("<svg") == 5
    for name in FEATURES:
        assert f"data-name='{name}'" in page
    drifted = re.findall(r"<figcaption>([^<]*) — PSI [0-9.]+ \(drifted\)</figcaption>", page)
    assert drifted == ["f2", "label"]  # f2 squeezed into its top fifth, and the predictions moved with it
    assert "<script" not in page
    assert "src=" not in page
    assert "<link" not in page


def test_since_leaves_out_older_traffic(home: Home, cli: Callable[..., Result], traffic: Callable[..., Path]) -> None:
    old = draw(2000, seed=16)
    old["f0"] = old["f0"] + 2.0
    traffic(old, when=NOW - timedelta(days=3), name="20261127T120000Z-1.jsonl")
    traffic(draw(2000, seed=17), when=NOW - timedelta(minutes=5))
    everything = drift_json(cli, "num@1")
    assert everything["rows"] == 4000
    assert flagged(everything) == ["f0"]
    recent = drift_json(cli, "num@1", "--since", "1h")
    assert recent["rows"] == 2000
    assert flagged(recent) == []
    since = (NOW - timedelta(days=4)).replace(tzinfo=None).isoformat()  # an ISO time, UTC when it has no offset
    assert drift_json(cli, "num@1", "--since", since)["rows"] == 4000
    none = cli("drift", "num@1", "--since", "1s")
    assert none.exit_code == 1
    assert "no captured requests for num@1" in none.output
    assert "since" in none.output


def test_unreadable_lines_are_skipped_and_counted(
    home: Home, cli: Callable[..., Result], traffic: Callable[..., Path]
) -> None:
    bad = [b"{not json", b"[1, 2]", b'{"time": "2026-11-30T12:00:00+00:00", "inputs": {"input": [[1, 2]]}}']
    traffic(draw(300, seed=18), extra=bad)
    result = cli("drift", "num@1", "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["rows"] == 300
    assert "3 captured lines skipped" in result.stderr
    captured = iter_captured(home.settings.home / "capture", "num", 1)
    assert sum(1 for _ in captured) == 31
    assert captured.skipped == 2


def test_redacted_inputs_have_no_values_and_the_rest_still_compare(home: Home) -> None:
    frame = draw(1000, seed=19)
    records = [{"inputs": {"input": "[redacted]"}, "outputs": {"label": ["yes"] * 10}} for _ in range(100)]
    report = compute_drift(home.profile(home.full), records)
    assert report.skipped == 0
    assert all(feature.psi is None for feature in report.features)
    assert report.prediction is not None
    assert report.prediction.values == 1000
    assert report.prediction.drifted  # every prediction "yes": the prediction shifted
    records = [{"inputs": {"input": frame.iloc[i : i + 10].to_numpy().tolist()}} for i in range(0, 1000, 10)]
    assert compute_drift(home.profile(home.full), records).rows == 1000


def test_cli_errors_are_one_line(home: Home, cli: Callable[..., Result], tmp_path: Path) -> None:
    unknown = cli("drift", "nosuchmodel")
    assert unknown.exit_code == 1
    assert unknown.output.strip().count("\n") == 0
    assert "not found" in unknown.output
    assert "Traceback" not in unknown.output
    empty = cli("drift", "num@1")
    assert empty.exit_code == 1
    assert empty.output.startswith("error: no captured requests for num@1")
    assert empty.output.count("\n") == 1
    bad = cli("drift", "num@1", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since expects a duration" in bad.output
    # A version registered before profiles were kept: its artifact has none.
    with Registry.open(home.settings) as registry:
        packaged = package(home.model, workdir=tmp_path / "work", sample_input=home.reference.head(20))
        old = registry.register(
            "old", packaged.directory, runtime=packaged.runtime, framework=packaged.framework,
            signature=packaged.signature, environment=packaged.environment,
        )  # fmt: skip
    assert not (packaged.directory / PROFILE_FILE).exists()
    capture(home.settings, old, draw(100, seed=20))
    missing = cli("drift", "old")
    assert missing.exit_code == 1
    assert missing.output.count("\n") == 1
    assert "old@1 has no reference profile" in missing.output
    assert "--reference" in missing.output


def test_cli_register_takes_reference_data_or_warns(home: Home, cli: Callable[..., Result], tmp_path: Path) -> None:
    sio.dump(home.model, tmp_path / "model.skops")
    home.reference.head(20).to_csv(tmp_path / "sample.csv", index=False)
    home.reference.to_csv(tmp_path / "reference.csv", index=False)
    args = ["register", str(tmp_path / "model.skops"), "--name", "clim", "--sample", str(tmp_path / "sample.csv")]
    # Without reference data first: the CLI's log handler keeps the stream of its first run.
    without = cli(*args)
    assert without.exit_code == 0, without.output
    assert "WARNING: the reference profile for drift comes from the sample input (20 rows)" in without.stderr
    assert "--reference data.csv" in without.stderr
    with_reference = cli(*args, "--reference", str(tmp_path / "reference.csv"))
    assert with_reference.exit_code == 0, with_reference.output
    assert "reference profile" not in with_reference.output
    with Registry.open(home.settings) as registry:
        first, second = registry.get("clim@1"), registry.get("clim@2")
        profiles = [read_profile(registry.artifact_path(v)) for v in (first, second)]
    assert [(p.rows, p.source) for p in profiles if p] == [(20, "sample_input"), (3000, "reference_data")]
    assert "--reference" in cli("register", "--help").output


# --- the statistics, against SciPy ----------------------------------------------------------------


def asymptotic(a: np.ndarray, b: np.ndarray) -> float:
    """SciPy's KS statistic under the limiting Kolmogorov distribution (what ks_pvalue documents)."""
    d = scipy.stats.ks_2samp(a, b).statistic
    return float(scipy.stats.kstwobign.sf(d * np.sqrt(len(a) * len(b) / (len(a) + len(b)))))


@pytest.mark.parametrize(("n", "m", "shift"), [(200, 300, 0.0), (1000, 5000, 0.05), (50, 4000, 0.5), (500, 500, 2.0)])
def test_ks_pvalue_matches_scipy(n: int, m: int, shift: float) -> None:
    rng = np.random.default_rng(n + m)
    a, b = rng.normal(size=n), rng.normal(shift, 1.0, m)
    got = ks_pvalue(a, b)
    assert got == pytest.approx(asymptotic(a, b), rel=1e-6, abs=1e-12)
    # ks_2samp's own p-value uses the finite-sample distribution: the asymptotic one is close, a bit larger
    exact = scipy.stats.ks_2samp(a, b).pvalue
    assert exact * 0.8 - 1e-12 <= got <= exact * 1.3 + 1e-12


def test_ks_pvalue_with_ties_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.poisson(3.0, 400).astype(float), rng.poisson(3.3, 900).astype(float)
    assert ks_pvalue(a, b) == pytest.approx(asymptotic(a, b), rel=1e-6)


@pytest.mark.parametrize(
    ("reference", "current"),
    [([50, 30, 20], [55, 25, 20]), ([500, 300, 200, 0], [100, 300, 500, 40]), ([5, 5], [5, 6])],
)
def test_chi_squared_pvalue_matches_scipy(reference: list[int], current: list[int]) -> None:
    table = np.array([reference, current])
    table = table[:, table.sum(axis=0) > 0]
    want = scipy.stats.chi2_contingency(table, correction=False).pvalue
    assert chi_squared_pvalue(np.array(reference), np.array(current)) == pytest.approx(want, rel=1e-8, abs=1e-300)


@pytest.mark.parametrize("a", [0.5, 1.0, 2.5, 10.0, 60.0])
@pytest.mark.parametrize("x", [0.01, 0.7, 3.0, 11.0, 80.0])
def test_upper_gamma_matches_scipy(a: float, x: float) -> None:
    assert upper_gamma(a, x) == pytest.approx(float(scipy.special.gammaincc(a, x)), rel=1e-9, abs=1e-300)


def test_to_inputs_and_features_agree_on_a_dataframe(home: Home) -> None:
    """The flattening that profiles a registration is the one that reads traffic."""
    signature = home.full.signature
    got = features(signature, to_inputs(signature, home.reference.head(5)))
    assert list(got) == FEATURES
    assert got["f1"].tolist() == home.reference["f1"].head(5).tolist()


def test_a_model_without_feature_names_is_profiled_per_column(home: Home) -> None:
    """Registered from an ndarray: a reference table maps onto its columns in order, named input[j]."""
    model = LogisticRegression(max_iter=500).fit(home.reference.to_numpy(), labels_of(home.reference))
    version = modelport.register(
        model, name="plain", sample_input=home.reference.head(20).to_numpy(),
        reference_data=home.reference, settings=home.settings,
    )  # fmt: skip
    profile = home.profile(version)
    assert [f.name for f in profile.features] == ["input[0]", "input[1]", "input[2]", "input[3]"]
    assert profile.features[1].edges == home.profile(home.full).features[1].edges


def test_float32_traffic_written_by_capture_matches_its_own_profile(tmp_path: Path, iris: Any) -> None:
    """Capture writes a float32 2.8 as ``2.8``; the profile keeps the float32 itself (2.7999999523).
    Read back unrounded, every such value fell one bin off: the reference data, captured, drifted."""
    from modelport.observability.capture import line_of

    frame, labels = iris
    settings = Settings(home=tmp_path / "home")
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    version = modelport.register(
        model, name="iris", sample_input=frame.head(20), reference_data=frame, settings=settings
    )
    with Registry.open(settings) as registry:
        profile = read_profile(registry.artifact_path(version))
    assert profile is not None
    rows = frame.to_numpy(dtype=np.float32)
    records = [
        orjson.loads(line_of((0.0, "iris", 1, None, {"input": rows[i : i + 5]}, {}, None), frozenset()))
        for i in range(0, len(rows), 5)
    ]
    report = compute_drift(profile, records)
    assert report.rows == len(rows)
    assert report.drifted == []
    assert max(feature.psi or 0.0 for feature in report.features) < 0.01, [(f.name, f.psi) for f in report.features]


def test_the_servers_drift_gauges_wait_for_enough_rows(tmp_path: Path, iris: Any) -> None:
    """A handful of captured rows flags chance: the gauges appear only from ``min_rows`` rows."""
    import os

    from modelport.observability.capture import file_name, line_of
    from modelport.observability.drift import DriftGauges

    frame, labels = iris
    settings = Settings(home=tmp_path / "home")
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    version = modelport.register(
        model, name="iris", sample_input=frame.head(20), reference_data=frame, settings=settings
    )
    root = tmp_path / "capture"
    folder = root / "iris" / "1"
    folder.mkdir(parents=True)
    rows = frame.sample(150, random_state=3).to_numpy(dtype=np.float32)
    with Registry.open(settings) as registry:
        gauges = DriftGauges(root, min_rows=100)

        def captured(part: np.ndarray, serial: int) -> None:
            no_outputs: dict[str, np.ndarray] = {}
            sample = (datetime.now(UTC).timestamp(), "iris", 1, None, {"input": part}, no_outputs, None)
            (folder / file_name(0, os.getpid(), serial)).write_bytes(line_of(sample, frozenset()))

        captured(rows[:60], 1)
        gauges.refresh([version], registry.artifact_path)
        assert list(gauges.samples()) == []  # 60 rows: not enough to judge
        captured(rows[60:], 2)
        gauges.refresh([version], registry.artifact_path)
        found = {key[2]: value for family, key, value in gauges.samples() if family == "modelport_drift_detected"}
    assert found == dict.fromkeys([*frame.columns, DriftGauges.PREDICTION], 0.0)


# --- categories: class ids, flags, unseen values; --fail-on-drift ---------------------------------


def coded(rows: int, seed: int) -> pd.DataFrame:
    """A numeric table with codes in it: a 0/1 flag and a 4-valued plan code (whole numbers that
    become floats in the model's float matrix), a count with many values and a measurement."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "senior": rng.integers(0, 2, rows),
            "plan": rng.integers(1, 5, rows),
            "age": rng.integers(18, 90, rows),
            "charges": rng.normal(70.0, 20.0, rows).round(2),
        }
    )


def test_class_ids_and_flags_are_profiled_as_categories(tmp_path: Path) -> None:
    """Class ids were profiled as numbers (KS, bins "≤ 0, 0–1, 1–2, > 2"), and so were 0/1 flags."""
    settings = Settings(home=tmp_path / "home")
    frame = coded(3000, seed=0)
    classes = (frame["plan"] - 1 + frame["senior"]).clip(0, 2).to_numpy()  # class ids 0, 1, 2
    model = LogisticRegression(max_iter=1000).fit(frame, classes)
    version = modelport.register(
        model, name="codes", sample_input=frame.head(20), reference_data=frame, settings=settings
    )
    with Registry.open(settings) as registry:
        profile = read_profile(registry.artifact_path(version))
    assert profile is not None
    kinds = {feature.name: feature.kind for feature in profile.features}
    assert kinds == {"senior": "categorical", "plan": "categorical", "age": "numeric", "charges": "numeric"}
    senior = profile.features[0]
    assert senior.categories == ("0", "1") or senior.categories == ("1", "0")  # most frequent first
    assert senior.labels() == [*senior.categories, "(unseen)"]
    assert profile.prediction is not None
    assert profile.prediction_output == "label"
    assert profile.prediction.kind == "categorical"
    assert set(profile.prediction.categories) == {"0", "1", "2"}

    capture(settings, version, coded(2000, seed=1))
    report = compute_drift(profile, iter_captured(settings.home / "capture", "codes", 1))
    assert report.rows == 2000
    assert report.drifted == []
    by_name = {feature.name: feature for feature in report.features}
    assert by_name["senior"].test == "χ²"
    assert by_name["senior"].bins == (*senior.categories, "(unseen)")
    assert by_name["senior"].unseen == 0
    assert by_name["age"].test == "KS"
    assert by_name["age"].unseen is None
    assert report.prediction is not None
    assert report.prediction.test == "χ²"


def test_whole_number_columns_are_categorical_up_to_the_documented_number_of_values() -> None:
    few = np.arange(CATEGORICAL_VALUES).repeat(ROWS_PER_VALUE)
    assert FeatureProfile.of("x", few).kind == "categorical"
    assert FeatureProfile.of("x", few.astype(np.float32)).kind == "categorical"  # whole floats: flags in a matrix
    assert FeatureProfile.of("x", np.arange(CATEGORICAL_VALUES + 1).repeat(ROWS_PER_VALUE)).kind == "numeric"
    assert FeatureProfile.of("x", few[1:]).kind == "numeric"  # fewer rows than ROWS_PER_VALUE per value
    assert FeatureProfile.of("x", np.array([0.0, 0.5, 1.0] * 20)).kind == "numeric"
    with_nan = np.array([0.0, 1.0, np.nan] * 20)
    flag = FeatureProfile.of("x", with_nan)
    assert (flag.kind, flag.missing, flag.counts) == ("categorical", 20, (20, 20, 0))
    assert FeatureProfile.of("x", np.arange(3).repeat(2), categorical=True).kind == "categorical"


def unseen_traffic(rows: int, seed: int, share: float) -> pd.DataFrame:
    """The mixed table with ``share`` of its colours misspelt: 'gren' and, ten times rarer, 'rde'."""
    frame, _ = mixed_frame(rows, seed=seed)
    rng = np.random.default_rng(seed)
    drawn = rng.random(rows)
    frame.loc[drawn < share, "color"] = "gren"
    frame.loc[drawn < share / 10, "color"] = "rde"
    return frame


def test_unseen_categories_are_counted_per_feature_in_the_table_json_and_html(tmp_path: Path) -> None:
    """A misspelt category is served silently (the one-hot encoder ignores it) and was a sliver
    of the "(other)" bar: now it is counted and named."""
    settings = Settings(home=tmp_path / "home")
    frame, labels = mixed_frame(3000, seed=0)
    version = modelport.register(
        mixed_pipeline(frame, labels), name="mixed", sample_input=frame.head(30), reference_data=frame,
        settings=settings,
    )  # fmt: skip
    traffic = unseen_traffic(4000, seed=7, share=0.03)
    typos = int((traffic["color"] == "gren").sum()), int((traffic["color"] == "rde").sum())
    assert typos[0] > typos[1] > 0
    capture(settings, version, traffic, columns=True)
    runner = CliRunner()
    env = {"MODELPORT_HOME": str(settings.home), "COLUMNS": "200", "NO_COLOR": "1"}

    data = orjson.loads(runner.invoke(app, ["drift", "mixed@1", "--json"], env=env).stdout)
    unseen = {feature["name"]: feature["unseen"] for feature in data["features"]}
    assert unseen == {"color": sum(typos), "size": None, "count": 0}  # count: ten whole values, categorical
    assert flagged(data) == []  # 3 %: too small a shift for the drift rule, so counted apart

    table = runner.invoke(app, ["drift", "mixed@1"], env=env)
    assert table.exit_code == 0, table.output
    assert f"{sum(typos)}: 'gren' {typos[0]}, 'rde' {typos[1]}" in table.stdout
    assert f"values the reference never had in: color ({sum(typos)})" in table.stdout

    page = tmp_path / "report.html"
    assert runner.invoke(app, ["drift", "mixed@1", "--html", str(page)], env=env).exit_code == 0
    html = page.read_text(encoding="utf-8")
    assert "<th>unseen</th>" in html
    assert f"<td class='unseen'>{sum(typos)}: &#x27;gren&#x27; {typos[0]}, &#x27;rde&#x27; {typos[1]}</td>" in html
    assert "(unseen): now" in html  # the bar of the values the reference never had is named so


def test_unseen_values_are_not_counted_when_the_reference_had_too_many_to_keep() -> None:
    """A free-text column: every value is new, so "unseen" says nothing and is not counted."""
    text = np.array([f"note {i}" for i in range(1500)], dtype=object)
    profile = FeatureProfile.of("note", text)
    assert profile.kind == "categorical"
    assert profile.others is None
    assert profile.unseen(np.array(["new"], dtype=object)) is None
    kept = FeatureProfile.of("note", text[:300])
    assert kept.others is not None
    assert len(kept.others) == 280  # beyond the 20 most frequent
    assert dict(kept.unseen(np.array(["note 299", "new", "new"], dtype=object)) or {}) == {"new": 2}
    assert FeatureProfile.from_dict(kept.to_dict()) == kept
    old = {key: value for key, value in kept.to_dict().items() if key != "others"}  # written before others
    assert FeatureProfile.from_dict(old).others is None
    complete = FeatureProfile.of("c", np.array(["a", "b"] * 5, dtype=object)).to_dict()
    del complete["others"]
    assert FeatureProfile.from_dict(complete).others == ()  # an empty other bin: the categories are all


def test_fail_on_drift_exits_3_when_a_feature_drifted(
    home: Home, cli: Callable[..., Result], traffic: Callable[..., Path]
) -> None:
    traffic(draw(3000, seed=21))
    stable = cli("drift", "num@1", "--fail-on-drift")
    assert stable.exit_code == 0, stable.output
    clear_capture(home.settings, home.full)
    shifted = draw(3000, seed=22)
    shifted["f1"] = shifted["f1"] + 2.0
    traffic(shifted)
    assert cli("drift", "num@1").exit_code == 0  # without the flag, drift is a finding, not a failure
    failed = cli("drift", "num@1", "--fail-on-drift", "--json")
    assert failed.exit_code == 3, failed.output
    assert flagged(orjson.loads(failed.stdout)) == ["f1"]  # the report is still printed
    assert "drifted: f1 (exit code 3, --fail-on-drift)" in failed.stderr
    assert "--fail-on-drift" in cli("drift", "--help").output


async def test_the_server_exports_unseen_values_per_categorical_feature(tmp_path: Path) -> None:
    import asyncio

    from prometheus_client.parser import text_string_to_metric_families

    from modelport.server.app import build_app
    from tests.support.serving import client_for

    settings = Settings(home=tmp_path / "home")
    frame, labels = mixed_frame(3000, seed=0)
    modelport.register(
        mixed_pipeline(frame, labels), name="mixed", sample_input=frame.head(30), reference_data=frame,
        alias="production", settings=settings,
    )  # fmt: skip
    traffic = unseen_traffic(200, seed=8, share=0.1)
    typos = int(traffic["color"].isin(["gren", "rde"]).sum())
    assert typos
    served = settings.with_(models=("mixed@production",), capture_rate=1.0, drift_interval=0.05)
    found: dict[str, float] = {}
    async with client_for(build_app(served)) as client:
        for start in range(0, len(traffic), 20):
            rows = traffic.iloc[start : start + 20].to_dict(orient="records")
            answer = await client.post("/v1/models/mixed:predict", json={"instances": rows})
            assert answer.status_code == 200, answer.text
        for _ in range(500):  # capture writes, then a refresh compares (once 100 rows are in): bounded
            text = (await client.get("/metrics")).text
            found = {
                sample.labels["feature"]: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "modelport_drift_unseen_values"
            }
            if found.get("color") == typos:  # a refresh may come while the last requests are written
                break
            await asyncio.sleep(0.02)
    assert found == {"color": typos, "count": 0, "(prediction)": 0}
