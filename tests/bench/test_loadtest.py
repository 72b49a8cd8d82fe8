"""``modelport bench``: payloads from signatures (pure), short real runs against real servers, the CLI."""

from __future__ import annotations

import ast
import io
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner, Result

from modelport.bench.benchmark import BenchOptions, bench
from modelport.bench.load import (
    Endpoint,
    RequestRejected,
    build_payload,
    compare,
    histogram,
    locustfile,
    parse_threshold,
    parse_url,
    run_load,
    signature_from_metadata,
    summarize,
)
from modelport.cli.main import app as cli
from modelport.errors import InvalidSetting
from modelport.protocols.v2 import decode_request
from modelport.server.app import build_app
from modelport.settings import Settings
from modelport.signature import to_inputs, validate_inputs
from modelport.types import Signature, TensorSpec
from tests.conftest import IRIS_FEATURES
from tests.support.serving import register_iris, running

FEATURES = tuple(IRIS_FEATURES)
IRIS = Signature(
    inputs=(TensorSpec("input", "FP32", (-1, 4), feature_names=FEATURES),),
    outputs=(TensorSpec("label", "BYTES", (-1,)),),
    example={"input": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
)
MIXED = Signature(  # several inputs, every kind of datatype, free inner dimensions, no example
    inputs=(
        TensorSpec("dense", "FP32", (-1, 3)),
        TensorSpec("count", "INT64", (-1,)),
        TensorSpec("mask", "BOOL", (-1, 2)),
        TensorSpec("text", "BYTES", (-1,)),
        TensorSpec("pixels", "UINT8", (-1, -1, 2)),
    ),
    outputs=(TensorSpec("score", "FP32", (-1,)),),
)


def _v2_inputs(signature: Signature, payload: dict[str, Any]) -> dict[str, Any]:
    """Decode and validate a V2 body exactly as the server does."""
    request, _ = decode_request(orjson.dumps(payload), None, signature)
    return validate_inputs(signature, request.inputs)


def _tfserving_inputs(signature: Signature, payload: dict[str, Any]) -> dict[str, Any]:
    return validate_inputs(signature, to_inputs(signature, payload["instances"]))


# -- payloads -----------------------------------------------------------------------------------


def test_v2_payload_repeats_the_registered_example_rows_to_rows_per_request() -> None:
    payload = build_payload(IRIS, "v2", rows_per_request=3)
    (tensor,) = payload["inputs"]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("input", [3, 4], "FP32")
    assert tensor["data"] == [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3, 5.1, 3.5, 1.4, 0.2]
    assert _v2_inputs(IRIS, payload)["input"].shape == (3, 4)


def test_tfserving_payload_writes_rows_keyed_by_feature_name() -> None:
    payload = build_payload(IRIS, "tfserving", rows_per_request=2)
    assert payload == {
        "instances": [
            dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True)),
            dict(zip(FEATURES, [6.7, 3.0, 5.2, 2.3], strict=True)),
        ]
    }
    assert _tfserving_inputs(IRIS, payload)["input"].shape == (2, 4)


@pytest.mark.parametrize("rows", [1, 4])
def test_payloads_synthesized_for_every_datatype_pass_the_servers_validation(rows: int) -> None:
    v2 = _v2_inputs(MIXED, build_payload(MIXED, "v2", rows))
    tf = _tfserving_inputs(MIXED, build_payload(MIXED, "tfserving", rows))
    for arrays in (v2, tf):
        shapes = {name: arr.shape for name, arr in arrays.items()}
        assert shapes == {
            "dense": (rows, 3),
            "count": (rows,),
            "mask": (rows, 2),
            "text": (rows,),
            "pixels": (rows, 1, 2),
        }
        assert arrays["text"].tolist() == ["a"] * rows


def test_payload_refuses_rows_a_fixed_batch_dimension_does_not_take() -> None:
    fixed = Signature((TensorSpec("x", "FP32", (1, 2)),), ())
    assert build_payload(fixed, "v2", 1)["inputs"][0]["shape"] == [1, 2]
    with pytest.raises(InvalidSetting, match="exactly 1 rows per request"):
        build_payload(fixed, "v2", 8)
    with pytest.raises(InvalidSetting, match="unknown protocol"):
        build_payload(IRIS, "grpc", 1)


def test_signature_from_v2_metadata_keeps_feature_names() -> None:
    doc = {
        "name": "iris",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4], "parameters": {"feature_names": FEATURES}}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}],
    }
    signature = signature_from_metadata(doc)
    assert signature.inputs == IRIS.inputs
    assert build_payload(signature, "tfserving")["instances"][0] == dict.fromkeys(FEATURES, 0.5)


# -- endpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "protocol", "infer", "metadata"),
    [
        ("http://h:1/v2/models/iris", "v2", "http://h:1/v2/models/iris/infer", "http://h:1/v2/models/iris"),
        (
            "http://h:1/v2/models/iris/versions/production/infer",
            "v2",
            "http://h:1/v2/models/iris/versions/production/infer",
            "http://h:1/v2/models/iris/versions/production",
        ),
        ("http://h:1/v1/models/iris", "tfserving", "http://h:1/v1/models/iris:predict", "http://h:1/v2/models/iris"),
        (
            "https://h/api/v1/models/iris/labels/canary:predict",
            "tfserving",
            "https://h/api/v1/models/iris/labels/canary:predict",
            "https://h/api/v2/models/iris/versions/canary",
        ),
        (
            "http://h:1/v1/models/iris/versions/3",
            "tfserving",
            "http://h:1/v1/models/iris/versions/3:predict",
            "http://h:1/v2/models/iris/versions/3",
        ),
    ],
)
def test_url_names_protocol_model_and_version(url: str, protocol: str, infer: str, metadata: str) -> None:
    endpoint = parse_url(url)
    assert (endpoint.protocol, endpoint.infer_url, endpoint.metadata_url) == (protocol, infer, metadata)


def test_protocol_option_switches_the_path_on_the_same_server() -> None:
    assert parse_url("http://h:1/v2/models/iris/versions/2", "tfserving").infer_url == (
        "http://h:1/v1/models/iris/versions/2:predict"
    )
    with pytest.raises(InvalidSetting, match="cannot tell the model"):
        parse_url("http://h:1/models/iris")


# -- statistics, comparison, Locust -------------------------------------------------------------


def test_summary_percentiles_and_histogram() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    stats = summarize(latencies, errors=5, duration_s=2.0)
    assert (stats.requests, stats.errors, stats.rps) == (105, 5, 50.0)
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.max_ms == pytest.approx(100.0)
    hist = histogram(latencies, buckets=10)
    assert sum(hist["counts"]) == 100
    assert len(hist["edges_ms"]) == 11
    assert hist["edges_ms"][0] == pytest.approx(1.0)
    assert hist["edges_ms"][-1] == pytest.approx(100.0)
    nothing = summarize([], errors=3, duration_s=1.0)
    assert (nothing.rps, nothing.p99_ms) == (0.0, None)


def test_compare_flags_a_drop_in_throughput_or_a_rise_in_p99_past_the_limit() -> None:
    baseline = {"rps": 1000.0, "p99_ms": 10.0}
    within = compare({"rps": 950.0, "p99_ms": 10.9}, baseline, 0.10)
    assert [c.regressed for c in within] == [False, False]
    slower = compare({"rps": 850.0, "p99_ms": 10.0}, baseline, 0.10)
    assert [(c.metric, c.regressed) for c in slower] == [("req/s", True), ("p99 ms", False)]
    assert slower[0].worse_by == pytest.approx(0.15)
    tail = compare({"rps": 2000.0, "p99_ms": 12.0}, baseline, 0.10)
    assert [c.regressed for c in tail] == [False, True]
    assert compare({"rps": 0.0, "p99_ms": None}, baseline, 0.10)[1].regressed
    assert parse_threshold("10%") == pytest.approx(0.10)
    assert parse_threshold("2.5") == pytest.approx(0.025)
    with pytest.raises(InvalidSetting, match="percentage"):
        parse_threshold("ten")


def test_locustfile_is_valid_python_posting_the_payload_to_the_endpoint() -> None:
    endpoint = Endpoint("tfserving", "http://10.0.0.5:8080/prefix", "iris", "production")
    payload = build_payload(IRIS, "tfserving", rows_per_request=2)
    source = locustfile(endpoint, payload)
    tree = ast.parse(source, "locustfile.py")
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in {"PATH", "BODY"}
    }
    assert constants["PATH"] == "/prefix/v1/models/iris/labels/production:predict"
    assert orjson.loads(constants["BODY"]) == payload
    assert "class ModelUser(HttpUser)" in source
    assert "wait_time = between(0, 0)" in source
    assert "--host http://10.0.0.5:8080" in source


@pytest.mark.slow
def test_histogram_png_is_skipped_with_install_advice_without_matplotlib(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from pathlib import Path\n"
        "from modelport.bench.load import histogram, summarize, write_histogram_png\n"
        "lat = [0.001, 0.002]\n"
        f"print(write_histogram_png(histogram(lat), summarize(lat, 0, 1.0), Path({str(tmp_path / 'x.png')!r}), 't'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "pip install 'modelport[bench]'" in result.stdout
    assert not (tmp_path / "x.png").exists()


# -- real servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Iterator[tuple[str, Path]]:
    """Real Iris (ONNX) registered and served by a real uvicorn; yields the base URL and the home."""
    settings = Settings(home=tmp_path_factory.mktemp("bench") / "home")
    register_iris(settings, iris)
    with running(build_app(settings.with_(models=("iris@production",)))) as address:
        yield f"http://{address}", settings.home


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.mark.slow
def test_a_short_run_against_a_url_writes_results_and_the_latency_histogram(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = served
    options = BenchOptions(f"{base}/v2/models/iris", concurrency=4, duration_s=1.0, output=tmp_path / "out")
    assert bench(options, _quiet()) == 0
    results = orjson.loads((tmp_path / "out" / "results.json").read_bytes())
    assert set(results) >= {"modelport_version", "date", "machine", "config", "stats", "histogram"}
    assert results["machine"]["nproc"] >= 1
    assert results["machine"]["platform"]
    assert results["config"] | {"url": None} == {
        "target": f"{base}/v2/models/iris",
        "url": None,
        "protocol": "v2",
        "concurrency": 4,
        "duration_s": 1.0,
        "requests": None,
        "rows_per_request": 1,
    }
    stats = results["stats"]
    assert stats["errors"] == 0
    assert stats["requests"] > 10
    assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert sum(results["histogram"]["counts"]) == stats["requests"]
    assert (tmp_path / "out" / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
async def test_a_payload_the_server_rejects_stops_the_run_before_any_load(served: tuple[str, Path]) -> None:
    base, _ = served
    body = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    with pytest.raises(RequestRejected, match=r"refused the first request.*400.*expected shape \[-1, 4\]"):
        await run_load(f"{base}/v2/models/iris/infer", body, concurrency=4, requests=100)


def _fails_after(good: int) -> Starlette:
    """A server that answers ``good`` requests, then fails every one with a 500."""
    answered = 0

    async def infer(request: Request) -> JSONResponse:
        nonlocal answered
        answered += 1
        if answered <= good:
            return JSONResponse({"outputs": []})
        return JSONResponse({"error": "the model crashed"}, status_code=500)

    return Starlette(routes=[Route("/v2/models/m/infer", infer, methods=["POST"])])


@pytest.mark.slow
async def test_a_server_that_starts_failing_mid_run_counts_the_errors() -> None:
    with running(_fails_after(40)) as address:
        run = await run_load(f"http://{address}/v2/models/m/infer", b"{}", concurrency=4, requests=200)
    assert len(run.latencies_s) == 39  # the first of the 40 good answers went to the check before the load
    assert dict(run.errors) == {"HTTP 500": 161}
    assert run.first_error["HTTP 500"] == "the model crashed"
    assert summarize(run.latencies_s, run.errors.total(), run.elapsed_s).requests == 200


async def test_connection_failures_count_as_errors() -> None:
    with socket.socket() as closed:  # bound and never listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v2/models/m/infer"
        run = await run_load(url, b"{}", concurrency=2, requests=10, validate=False)
        assert (len(run.latencies_s), dict(run.errors)) == (0, {"ConnectError": 10})
        with pytest.raises(RequestRejected, match="cannot reach"):
            await run_load(url, b"{}", concurrency=2, requests=10)


# -- the command --------------------------------------------------------------------------------


def _cli(home: Path, *args: str) -> Result:
    env = {"MODELPORT_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    return CliRunner().invoke(cli, list(args), env=env)


def test_bench_help_lists_its_options() -> None:
    result = CliRunner().invoke(cli, ["bench", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in ("--concurrency", "--duration", "--requests", "--rows-per-request", "--protocol", "--output"):
        assert option in result.output
    for option in ("--compare", "--max-regression", "--locustfile"):
        assert option in result.output


@pytest.mark.slow
def test_cli_run_against_a_url_then_compare_gates_on_regression(served: tuple[str, Path], tmp_path: Path) -> None:
    base, home = served
    url = f"{base}/v1/models/iris/labels/production"
    out = tmp_path / "run"
    result = _cli(
        home, "bench", url, "--requests", "100", "--concurrency", "4", "--rows-per-request", "8", "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    assert "req/s" in result.output
    assert "p99 ms" in result.output
    results = orjson.loads((out / "results.json").read_bytes())
    assert (results["stats"]["requests"], results["stats"]["errors"]) == (100, 0)
    assert results["config"]["protocol"] == "tfserving"

    def gate(rps: float, p99: float) -> Any:
        baseline = tmp_path / f"baseline-{rps}.json"
        baseline.write_bytes(orjson.dumps({"stats": {"rps": rps, "p99_ms": p99}}))
        args = ["--requests", "100", "--concurrency", "4", "--output", str(tmp_path / "gate")]
        return _cli(home, "bench", url, *args, "--compare", str(baseline), "--max-regression", "10%")

    regressed = gate(rps=1e9, p99=0.001)
    assert regressed.exit_code == 1, regressed.output
    assert "REGRESSED" in regressed.output
    assert "regression: req/s worse by" in regressed.output
    assert "p99 ms worse by" in regressed.output
    passed = gate(rps=1.0, p99=1e6)
    assert passed.exit_code == 0, passed.output
    assert "REGRESSED" not in passed.output


def _error_line(result: Result) -> str:
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.slow
def test_compare_runs_the_baselines_load_and_refuses_another_one(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base, home = served
    url = f"{base}/v2/models/iris"
    first = _cli(home, "bench", url, "--duration", "0.5", "-c", "3", "--rows-per-request", "2", "--output", "base")
    assert first.exit_code == 0, first.output
    baseline = tmp_path / "baseline.json"
    Path("base/results.json").replace(baseline)

    gate = ("--compare", str(baseline), "--max-regression", "900%")  # a real comparison, not a timing test
    second = _cli(home, "bench", url, *gate, "--output", str(tmp_path / "now"))
    assert second.exit_code == 0, second.output
    assert "3 concurrent connection(s), 0.5 s, 2 row(s) per request" in second.output
    assert f"compared with {baseline}" in second.output
    assert "note:" not in second.output
    then, now = (orjson.loads(p.read_bytes())["config"] for p in (baseline, tmp_path / "now" / "results.json"))
    assert now == then

    refused = _cli(home, "bench", url, *gate, "--concurrency", "8", "--protocol", "tfserving", "--output", "x")
    assert refused.exit_code == 2, refused.output
    line = _error_line(refused)
    assert f"cannot compare with {baseline}" in line
    assert "--protocol tfserving (the baseline's: v2), --concurrency 8 (the baseline's: 3)" in line
    assert not Path("x").exists()  # refused before any load

    shorter = _cli(home, "bench", url, *gate, "--requests", "20", "--output", str(tmp_path / "short"))
    assert shorter.exit_code == 0, shorter.output
    assert "note: the runs differ in duration_s: baseline 0.5, now None" in shorter.output
    assert "note: the runs differ in requests: baseline None, now 20" in shorter.output


@pytest.mark.slow
def test_the_readme_bench_lines_typed_in_order_compare_like_with_like(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's two `modelport bench` lines, run in order in an empty folder (the first one 0.5 s
    instead of 10, the gate's limit wide: a real comparison, not a timing test)."""
    monkeypatch.chdir(tmp_path)
    _, home = served
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = [shlex.split(line.partition("#")[0]) for line in readme.splitlines() if line.startswith("modelport bench")]
    assert len(lines) == 2, lines
    measure, gate = (["900%" if word == "10%" else word for word in line[1:]] for line in lines)
    measure[measure.index("--duration") + 1] = "0.5"
    first = _cli(home, *measure)
    assert first.exit_code == 0, first.output
    second = _cli(home, *gate)
    assert second.exit_code == 0, second.output
    assert "compared with" in second.output
    assert "note:" not in second.output
    assert "REGRESSED" not in second.output
    baseline = Path(gate[gate.index("--compare") + 1])
    then = orjson.loads(baseline.read_bytes())["config"]
    assert then["concurrency"] == int(measure[measure.index("--concurrency") + 1])
    now = orjson.loads((Path("bench-results") / "results.json").read_bytes())["config"]
    assert now | {"url": None} == then | {"url": None}  # each run serves the model on a port of its own


@pytest.mark.slow
def test_bench_a_reference_serves_it_for_the_run_and_writes_a_locustfile(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    _, home = served
    result = _cli(home, "bench", "iris@production", "--requests", "50", "--output", str(tmp_path / "ref"))
    assert result.exit_code == 0, result.output
    assert "/v2/models/iris/versions/production/infer" in result.output
    stats = orjson.loads((tmp_path / "ref" / "results.json").read_bytes())["stats"]
    assert (stats["requests"], stats["errors"]) == (50, 0)

    target = tmp_path / "locustfile.py"
    result = _cli(home, "bench", "iris@production", "--locustfile", str(target))
    assert result.exit_code == 0, result.output
    assert f"locust -f {target} --host http://127.0.0.1:8080" in result.output
    source = target.read_text()
    compile(source, str(target), "exec")
    assert "/v2/models/iris/versions/production/infer" in source


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    for args in (
        ["--duration", "1", "--requests", "5"],
        ["--protocol", "grpc"],
        ["--max-regression", "lots"],
    ):
        result = _cli(tmp_path / "home", "bench", "http://127.0.0.1:1/v2/models/iris", *args)
        assert result.exit_code == 2, (args, result.output)
