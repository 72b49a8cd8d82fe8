"""The Lambda handler (``modelport.serverless.handler``) fed real API Gateway event documents.

The events are the published samples vendored in tests/events/ (see its README): a REST API (v1)
proxy event and an HTTP API (v2) event; each test changes only the method, path, body and headers.
A real iris model is registered and exported as ``modelport build`` bakes it, and the handler
serves it as it would in Lambda (same process, one app per "execution environment").
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from modelport import serverless
from modelport.auth.keys import KeyFile
from modelport.errors import InvalidSetting, ModelportError
from modelport.registry.export import export_version
from modelport.registry.registry import Registry
from modelport.settings import Settings
from tests.support.serving import register_iris

pytestmark = pytest.mark.slow
EVENTS = Path(__file__).parents[1] / "events"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
V2_BODY = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}


def rest_event(method: str, path: str, body: bytes | str | None = None, **headers: str) -> dict[str, Any]:
    """The published REST API (v1) proxy sample with this method, path, body and headers."""
    event: dict[str, Any] = json.loads((EVENTS / "apigw-request.json").read_text())
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    _set_body(event, body)
    for name, value in headers.items():
        name = name.replace("_", "-")
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    return event


def http_event(method: str, path: str, body: bytes | str | None = None, **headers: str) -> dict[str, Any]:
    """The published HTTP API (v2) sample (no authorizer) with this method, path, body and headers."""
    event: dict[str, Any] = json.loads((EVENTS / "apigw-v2-request-no-authorizer.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    _set_body(event, body)
    size = len(base64.b64decode(event["body"]) if event["isBase64Encoded"] else event.get("body", "").encode())
    event["headers"]["content-length"] = str(size)
    event["headers"].update({name.replace("_", "-").lower(): value for name, value in headers.items()})
    return event


def _set_body(event: dict[str, Any], body: bytes | str | None) -> None:
    if body is None:
        event.pop("body", None)
        event["isBase64Encoded"] = False
    elif isinstance(body, bytes):  # as API Gateway passes a binary body: base64
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
    else:
        event["body"] = body
        event["isBase64Encoded"] = False


EVENT_KINDS = {"rest-v1": rest_event, "http-v2": http_event}


def payload(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


def header(response: dict[str, Any], name: str) -> str:
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    return str(headers[name])


class Loads(logging.Handler):
    """Counts the model loads the ``modelport`` logger reports ("serving iris@1 ...")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.loads: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("serving "):
            self.loads.append(record.getMessage())


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Path, Path, Any]:
    """The iris model registered in a registry, and exported as ``modelport build`` bakes it."""
    root = tmp_path_factory.mktemp("lambda")
    settings = Settings(home=root / "home")
    version, model = register_iris(settings, iris)
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), root / "model", archive=False)
    return root / "model", root / "home", model


@pytest.fixture
def environment(
    baked: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.MonkeyPatch]:
    """A Lambda execution environment's variables for the baked model (served openly, as behind an IAM
    route); the handler's app is shut down afterwards, so each test starts cold."""
    for variable in ("MODELPORT_MODELS", "MODELPORT_SERVE_ALIAS", "MODELPORT_VERSION_POLICY", "MODELPORT_HOST"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MODELPORT_SAGEMAKER_MODEL_DIR", str(baked[0]))
    monkeypatch.setenv("MODELPORT_HOME", str(tmp_path / "tmp-modelport"))
    monkeypatch.setenv("MODELPORT_INSECURE_OPEN", "1")
    serverless.close()
    try:
        yield monkeypatch
    finally:
        serverless.close()


def expected(model: Any) -> tuple[list[str], np.ndarray]:
    frame = pd.DataFrame(ROWS, columns=FEATURES)
    return list(model.predict(frame)), model.predict_proba(frame)


def check_v2(response: dict[str, Any], model: Any) -> None:
    assert response["statusCode"] == 200, response
    assert response["isBase64Encoded"] is False  # JSON comes back as text
    outputs = {o["name"]: o for o in json.loads(response["body"])["outputs"]}
    labels, probabilities = expected(model)
    assert outputs["label"]["data"] == labels
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (2, 3)), probabilities, atol=1e-5)


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_health_answers_for_both_event_versions(environment: pytest.MonkeyPatch, kind: str) -> None:
    event = EVENT_KINDS[kind]
    ready = serverless.handler(event("GET", "/v2/health/ready"), None)
    assert ready["statusCode"] == 200, ready
    ping = serverless.handler(event("GET", "/ping"), None)
    assert ping["statusCode"] == 200
    assert json.loads(ping["body"]) == {"status": "Healthy"}
    assert header(ping, "content-type").startswith("application/json")


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_model_metadata_names_the_baked_model(environment: pytest.MonkeyPatch, kind: str) -> None:
    response = serverless.handler(EVENT_KINDS[kind]("GET", "/v2/models/iris"), None)
    assert response["statusCode"] == 200, response
    metadata = json.loads(response["body"])
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["1"]
    assert [i["name"] for i in metadata["inputs"]] == ["input"]


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_v2_prediction_matches_the_model(environment: pytest.MonkeyPatch, baked: Any, kind: str) -> None:
    event = EVENT_KINDS[kind]("POST", "/v2/models/iris/infer", json.dumps(V2_BODY), Content_Type="application/json")
    check_v2(serverless.handler(event, None), baked[2])


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_sagemaker_csv_invocation_answers_csv_as_text(environment: pytest.MonkeyPatch, baked: Any, kind: str) -> None:
    csv = "".join(",".join(str(v) for v in row) + "\n" for row in ROWS)
    event = EVENT_KINDS[kind]("POST", "/invocations", csv, Content_Type="text/csv", Accept="text/csv")
    response = serverless.handler(event, None)
    assert response["statusCode"] == 200, response
    assert header(response, "content-type").startswith("text/csv")
    assert response["isBase64Encoded"] is False
    lines = response["body"].splitlines()
    labels, probabilities = expected(baked[2])
    assert [line.split(",")[0] for line in lines] == labels
    np.testing.assert_allclose([[float(v) for v in line.split(",")[1:]] for line in lines], probabilities, atol=1e-5)


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_base64_gzip_body_is_decoded_then_decompressed(environment: pytest.MonkeyPatch, baked: Any, kind: str) -> None:
    """A binary body reaches Lambda base64-encoded (isBase64Encoded true); here a gzip-compressed one."""
    body = gzip.compress(json.dumps(V2_BODY).encode())
    event = EVENT_KINDS[kind](
        "POST", "/v2/models/iris/infer", body, Content_Type="application/json", Content_Encoding="gzip"
    )
    assert event["isBase64Encoded"] is True
    check_v2(serverless.handler(event, None), baked[2])


def test_binary_tensor_request_and_response_travel_base64(environment: pytest.MonkeyPatch, baked: Any) -> None:
    """V2's binary tensor extension: raw float32 bytes in, raw bytes out, base64 both ways."""
    raw = np.asarray(ROWS, dtype=np.float32).tobytes()
    document = {
        "inputs": [
            {"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    head = orjson.dumps(document)
    event = http_event(
        "POST",
        "/v2/models/iris/infer",
        head + raw,
        Content_Type="application/octet-stream",
        Inference_Header_Content_Length=str(len(head)),
    )
    response = serverless.handler(event, None)
    assert response["statusCode"] == 200, response
    assert response["isBase64Encoded"] is True
    content = payload(response)
    size = int(header(response, "inference-header-content-length"))
    (output,) = orjson.loads(content[:size])["outputs"]
    got = np.frombuffer(content[size:], dtype="<f4").reshape(2, 3)
    np.testing.assert_allclose(got, expected(baked[2])[1], atol=1e-5)
    assert output["parameters"]["binary_data_size"] == got.nbytes


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_bad_input_is_400_with_the_reason(environment: pytest.MonkeyPatch, kind: str) -> None:
    wrong = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    event = EVENT_KINDS[kind]("POST", "/v2/models/iris/infer", json.dumps(wrong), Content_Type="application/json")
    response = serverless.handler(event, None)
    assert response["statusCode"] == 400, response
    assert "error" in json.loads(response["body"])
    broken = EVENT_KINDS[kind]("POST", "/invocations", "not json at all", Content_Type="application/json")
    assert serverless.handler(broken, None)["statusCode"] == 400


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_unknown_model_is_404(environment: pytest.MonkeyPatch, kind: str) -> None:
    event = EVENT_KINDS[kind]("POST", "/v2/models/churn/infer", json.dumps(V2_BODY), Content_Type="application/json")
    response = serverless.handler(event, None)
    assert response["statusCode"] == 404, response
    assert "churn" in json.loads(response["body"])["error"]


def test_model_loads_once_per_cold_start_across_invocations(environment: pytest.MonkeyPatch, baked: Any) -> None:
    counter = Loads()
    logger = logging.getLogger("modelport")
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    try:
        for kind in (*EVENT_KINDS, *EVENT_KINDS):
            event = EVENT_KINDS[kind]("POST", "/v2/models/iris/infer", json.dumps(V2_BODY))
            check_v2(serverless.handler(event, None), baked[2])
        assert counter.loads == ["serving iris@1 (runtime onnx)"]  # one cold start, four events
        serverless.close()  # a new execution environment: a new cold start
        check_v2(serverless.handler(http_event("POST", "/v2/models/iris/infer", json.dumps(V2_BODY)), None), baked[2])
        assert len(counter.loads) == 2
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_a_keys_file_makes_callers_without_a_key_401(
    environment: pytest.MonkeyPatch, baked: Any, tmp_path: Path, kind: str
) -> None:
    keys = tmp_path / "keys"
    _, key = KeyFile(keys).create(["infer"], "lambda client")
    environment.delenv("MODELPORT_INSECURE_OPEN")
    environment.setenv("MODELPORT_API_KEYS_FILE", str(keys))
    event = EVENT_KINDS[kind]
    refused = serverless.handler(event("POST", "/v2/models/iris/infer", json.dumps(V2_BODY)), None)
    assert refused["statusCode"] == 401, refused
    assert header(refused, "www-authenticate").startswith("Bearer")
    assert serverless.handler(event("POST", "/invocations", json.dumps(ROWS)), None)["statusCode"] == 401
    allowed = event("POST", "/v2/models/iris/infer", json.dumps(V2_BODY), Authorization=f"Bearer {key}")
    check_v2(serverless.handler(allowed, None), baked[2])
    assert serverless.handler(event("GET", "/ping"), None)["statusCode"] == 200  # health stays open


def test_without_credentials_or_insecure_open_the_cold_start_is_refused(environment: pytest.MonkeyPatch) -> None:
    """API Gateway makes the function reachable from anywhere: the startup rules of a non-loopback
    server apply, and a refused start is not cached (the next event tries again)."""
    environment.delenv("MODELPORT_INSECURE_OPEN")
    with pytest.raises(ModelportError, match="without authentication"):
        serverless.handler(http_event("GET", "/ping"), None)
    environment.setenv("MODELPORT_INSECURE_OPEN", "1")
    assert serverless.handler(http_event("GET", "/ping"), None)["statusCode"] == 200


def test_registry_models_are_served_when_named(
    environment: pytest.MonkeyPatch, baked: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    """MODELPORT_MODELS: the registry's models, not the model directory (which is made empty here)."""
    empty = tmp_path / "no-model"
    empty.mkdir()
    environment.setenv("MODELPORT_SAGEMAKER_MODEL_DIR", str(empty))
    environment.setenv("MODELPORT_HOME", str(baked[1]))
    environment.setenv("MODELPORT_MODELS", "iris@production")
    event = rest_event("POST", "/v2/models/iris/infer", json.dumps(V2_BODY), Content_Type="application/json")
    check_v2(serverless.handler(event, None), baked[2])
    assert serverless.handler(rest_event("GET", "/ping"), None)["statusCode"] == 404  # no SageMaker routes


def test_lambda_defaults_write_only_under_tmp(baked: tuple[Path, Path, Any]) -> None:
    settings = serverless.lambda_settings({"MODELPORT_SAGEMAKER_MODEL_DIR": str(baked[0])})
    assert settings.home == Path("/tmp/modelport")
    assert settings.capture_root.is_relative_to("/tmp")
    assert settings.metrics_dir is None  # one process per environment: no shared metrics directory
    assert settings.sagemaker
    assert not settings.loopback
    named = serverless.lambda_settings({"MODELPORT_MODELS": "iris@production", "MODELPORT_HOME": "/mnt/efs/mp"})
    assert named.home == Path("/mnt/efs/mp")
    assert not named.sagemaker


def test_no_model_directory_and_no_models_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match="no models to serve"):
        serverless.lambda_settings({"MODELPORT_SAGEMAKER_MODEL_DIR": str(tmp_path / "absent")})


@pytest.mark.parametrize(
    ("name", "blob"),
    [
        ("apigw-request.json", "fbd0e8cd34f61b8f06094840d367bbb15f8183ae"),
        ("apigw-v2-request-no-authorizer.json", "2c69e90ec657581e49655386c86126b71e3080fe"),
        ("apigw-v2-request-iam.json", "b44d018a8839a6640fb807f02d55c81d78649655"),
    ],
)
def test_the_vendored_samples_are_the_published_files(name: str, blob: str) -> None:
    """Each file's git blob id is the one in aws/aws-lambda-go at the commit tests/events/README.md names:
    the tests' changes are made in code, the files stay as published."""
    content = (EVENTS / name).read_bytes()
    assert hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest() == blob


def test_an_iam_authorized_http_api_event_is_served(environment: pytest.MonkeyPatch, baked: Any) -> None:
    """The published v2 sample of a route with IAM authorization (what deploy lambda --auth iam makes)."""
    event: dict[str, Any] = json.loads((EVENTS / "apigw-v2-request-iam.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v2/models/iris/infer"
    event["requestContext"]["http"]["method"] = "POST"
    event["body"] = json.dumps(V2_BODY)
    event["headers"]["content-type"] = "application/json"
    check_v2(serverless.handler(event, None), baked[2])
