"""BYTES are bytes: binary data (images, protobufs) reaches a model that takes bytes exactly as sent,
over every transport, and text models keep getting text.

Two real custom Python models are registered with trust: ``blob`` (registered with a sample of
bytes: it takes binary data) and ``text`` (registered with strings: it takes text). Triton's own
HTTP and gRPC clients, TF Serving's ``{"b64": ...}`` and SageMaker's JSON are exercised against a
real server.
"""

from __future__ import annotations

import base64
import hashlib
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.api import register
from modelport.cli.client import predict_url
from modelport.errors import InvalidInput
from modelport.registry.export import export_version
from modelport.registry.registry import Registry
from modelport.runtimes.python import as_outputs
from modelport.server.app import build_app
from modelport.settings import Settings
from modelport.signature import example_of, input_specs, sample_arrays, to_inputs, validate_inputs
from modelport.types import Signature, TensorSpec
from tests.support.serving import client_for, running

pytestmark = pytest.mark.slow

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

BLOB_MODEL = textwrap.dedent(
    """
    import hashlib

    import numpy as np


    class Model:
        def load(self, path):
            pass

        def predict(self, inputs):
            blobs = inputs["blob"].ravel().tolist()
            for value in blobs:
                if type(value) is not bytes:
                    raise TypeError(f"expected bytes, got {type(value).__name__}")
            echo = np.empty(len(blobs), dtype=object)
            echo[:] = [b"\\xff" + value for value in blobs]  # never UTF-8: binary data goes back too
            return {
                "echo": echo,
                "sha256": np.array([hashlib.sha256(value).hexdigest() for value in blobs], dtype=object),
                "size": np.array([len(value) for value in blobs], dtype=np.int64),
            }
    """
)

TEXT_MODEL = textwrap.dedent(
    """
    import numpy as np


    class Model:
        def load(self, path):
            pass

        def predict(self, inputs):
            texts = inputs["text"].ravel().tolist()
            return {
                "kind": np.array([type(value).__name__ for value in texts], dtype=object),
                "upper": np.array([value.upper() for value in texts], dtype=object),
            }
    """
)

# A PNG header (non-UTF-8, with NUL bytes inside and at the end), nothing, invalid UTF-8, every byte.
BLOBS = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", b"", b"\xff\xfe\x00", bytes(range(256))]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_model(directory: Path, code: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "model.py").write_text(code)
    return directory


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    root = tmp_path_factory.mktemp("bytes")
    settings = Settings(home=root / "home")
    blob = write_model(root / "blob", BLOB_MODEL)
    version = register(blob, name="blob", sample_input={"blob": BLOBS[:2]}, trust_pickle=True, settings=settings)
    assert version.signature.inputs[0].binary  # the sample held bytes: the model takes binary data
    assert version.signature.example is None  # JSON cannot hold the non-UTF-8 sample
    utf8 = register(
        blob, name="blob", sample_input={"blob": [b"ab", "é".encode()]}, trust_pickle=True, settings=settings
    )
    assert utf8.signature.example == {"blob": ["ab", "é"]}  # sent as JSON strings, it is the same bytes again
    text = write_model(root / "text", TEXT_MODEL)
    version = register(text, name="text", sample_input={"text": ["héllo", "abc"]}, trust_pickle=True, settings=settings)
    assert not version.signature.inputs[0].binary
    with Registry.open(settings) as registry:
        blob_version = registry.get("blob@1")
        export_version(blob_version, registry.artifact_path(blob_version), root / "export")
    return settings, root / "export"


@pytest.fixture(scope="module")
def served(registered: tuple[Settings, Path]) -> Iterator[tuple[str, str]]:
    """(HTTP host:port, gRPC host:port) of a real server serving both models."""
    app = build_app(registered[0].with_(models=("blob@1", "text", "blob@2"), grpc_port=0))
    with running(app) as url:
        yield url, f"127.0.0.1:{app.grpc_port}"


def blob_tensor(module: Any, data: np.ndarray, **options: Any) -> Any:
    tensor = module.InferInput("blob", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data, **options)
    return tensor


def check_blob_outputs(result: Any, blobs: list[bytes]) -> None:
    assert result.as_numpy("size").tolist() == [len(b) for b in blobs]
    assert [v.decode() for v in result.as_numpy("sha256")] == [digest(b) for b in blobs]
    assert result.as_numpy("echo").tolist() == [b"\xff" + b for b in blobs]


def test_triton_http_client_sends_raw_bytes_that_reach_the_model_exactly(served: tuple[str, str]) -> None:
    client = httpclient.InferenceServerClient(url=served[0])
    try:
        data = np.array(BLOBS, dtype=object)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=True) for name in ("echo", "sha256", "size")]
        result = client.infer("blob", [blob_tensor(httpclient, data, binary_data=True)], outputs=outputs)
        check_blob_outputs(result, BLOBS)
    finally:
        client.close()


def test_triton_grpc_client_sends_raw_bytes_that_reach_the_model_exactly(served: tuple[str, str]) -> None:
    client = grpcclient.InferenceServerClient(url=served[1])
    try:
        result = client.infer("blob", [blob_tensor(grpcclient, np.array(BLOBS, dtype=object))])
        check_blob_outputs(result, BLOBS)
    finally:
        client.close()


def test_text_model_gets_str_from_triton_clients_and_refuses_bytes_that_are_not_utf8(
    served: tuple[str, str],
) -> None:
    http = httpclient.InferenceServerClient(url=served[0])
    grpc = grpcclient.InferenceServerClient(url=served[1])
    try:
        for module, client, options in ((httpclient, http, {"binary_data": True}), (grpcclient, grpc, {})):
            tensor = module.InferInput("text", [2], "BYTES")
            tensor.set_data_from_numpy(np.array(["héllo".encode(), b"abc"], dtype=object), **options)
            result = client.infer("text", [tensor])
            assert [v.decode() for v in result.as_numpy("kind")] == ["str", "str"]
            assert [v.decode() for v in result.as_numpy("upper")] == ["HÉLLO", "ABC"]
            tensor.set_data_from_numpy(np.array([b"ok", b"\xff\xfe"], dtype=object), **options)
            with pytest.raises(InferenceServerException, match="input 'text': value 1 is not UTF-8 text"):
                client.infer("text", [tensor])
    finally:
        http.close()
        grpc.close()


def test_v2_json_strings_reach_a_binary_model_as_utf8_and_binary_outputs_come_as_base64(
    served: tuple[str, str],
) -> None:
    body = {"inputs": [{"name": "blob", "datatype": "BYTES", "shape": [2], "data": ["héllo", ""]}]}
    response = httpx.post(f"http://{served[0]}/v2/models/blob/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {out["name"]: out for out in response.json()["outputs"]}
    sent = ["héllo".encode(), b""]
    assert outputs["sha256"]["data"] == [digest(b) for b in sent]  # text: plain strings
    assert "parameters" not in outputs["sha256"]
    echo = outputs["echo"]
    assert echo["parameters"] == {"content_type": "base64"}  # not UTF-8: every value base64
    assert [base64.b64decode(v) for v in echo["data"]] == [b"\xff" + b for b in sent]


def test_tf_serving_b64_values_reach_the_model_as_bytes_and_bytes_outputs_answer_as_b64(
    served: tuple[str, str],
) -> None:
    base = f"http://{served[0]}/v1/models/blob:predict"
    rows = httpx.post(base, json={"instances": [{"b64": b64(b)} for b in BLOBS]}, timeout=30)
    assert rows.status_code == 200, rows.text
    assert rows.json()["predictions"] == [
        {"echo": {"b64": b64(b"\xff" + b)}, "sha256": digest(b), "size": len(b)} for b in BLOBS
    ]
    columns = httpx.post(base, json={"inputs": {"blob": [{"b64": b64(BLOBS[0])}]}}, timeout=30)
    assert columns.status_code == 200, columns.text
    assert columns.json()["outputs"]["echo"] == [{"b64": b64(b"\xff" + BLOBS[0])}]
    named = httpx.post(base, json={"instances": [{"blob": {"b64": b64(BLOBS[2])}}]}, timeout=30)
    assert named.status_code == 200, named.text
    assert named.json()["predictions"][0]["size"] == len(BLOBS[2])


@pytest.mark.parametrize(
    ("model", "instances", "message"),
    [
        ("text", ["a", None], "input 'text': BYTES values must be strings, got null"),
        ("text", ["a", 1], "input 'text': BYTES values must be strings, got the number 1"),
        ("text", ["a", 1.5], "input 'text': BYTES values must be strings, got the number 1.5"),
        ("text", [["a"], [{"x": 1}]], "input 'text': expected shape [-1], got [2, 1]"),
        ("text", [{"text": {"x": 1}}], "input 'text': BYTES values must be strings, got an object"),
        ("text", [{"b64": b64(b"\xff")}], "input 'text': value 0 is not UTF-8 text"),
        ("text", [True], "input 'text': expected datatype BYTES, got BOOL"),
        ("blob", [{"b64": "not base64!"}], 'a {"b64": ...} value is not valid base64'),
        ("blob", [{"b64": 7}], 'a {"b64": ...} value must hold a base64 string, got int'),
        ("blob", [{"b64": b64(b"a")}, None], "input 'blob': BYTES values must be strings or bytes, got null"),
        ("blob", [7], "input 'blob': expected datatype BYTES, got INT64"),
    ],
)
def test_tf_serving_refuses_null_numbers_and_objects_in_bytes_inputs(
    served: tuple[str, str], model: str, instances: list[Any], message: str
) -> None:
    response = httpx.post(f"http://{served[0]}/v1/models/{model}:predict", json={"instances": instances}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message), response.json()["error"]


def test_tf_serving_b64_reaches_a_text_model_as_text(served: tuple[str, str]) -> None:
    body = {"instances": [{"b64": b64("héllo".encode())}, "abc"]}
    response = httpx.post(f"http://{served[0]}/v1/models/text:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [{"kind": "str", "upper": "HÉLLO"}, {"kind": "str", "upper": "ABC"}]


async def test_sagemaker_json_takes_b64_and_csv_cannot_carry_binary_outputs(
    registered: tuple[Settings, Path], tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, sagemaker=True, sagemaker_model_dir=registered[1], trust_exported_code=True)
    async with client_for(build_app(settings)) as client:
        bare = await client.post("/invocations", json=[{"b64": b64(b)} for b in BLOBS])
        assert bare.status_code == 200, bare.text
        assert [p["echo"] for p in bare.json()["predictions"]] == [{"b64": b64(b"\xff" + b)} for b in BLOBS]
        rows = await client.post("/invocations", json={"instances": [{"b64": b64(BLOBS[0])}]})
        assert rows.json()["predictions"][0]["sha256"] == digest(BLOBS[0])
        refused = await client.post("/invocations", json=[None])
        assert refused.status_code == 400
        assert refused.json()["error"] == "input 'blob': BYTES values must be strings or bytes, got null"
        csv = await client.post("/invocations", json=[{"b64": b64(BLOBS[0])}], headers={"Accept": "text/csv"})
        assert csv.status_code == 406
        assert csv.json()["error"].startswith("output 'echo' holds binary data, which CSV cannot carry")


def test_modelport_client_gives_binary_outputs_back_as_bytes(served: tuple[str, str]) -> None:
    base = f"http://{served[0]}"
    tf = predict_url(f"{base}/v1/models/blob", {"instances": [{"b64": b64(b)} for b in BLOBS]})
    assert tf["echo"].tolist() == [b"\xff" + b for b in BLOBS]
    body = {"inputs": [{"name": "blob", "datatype": "BYTES", "shape": [1], "data": ["abc"]}]}
    v2 = predict_url(f"{base}/v2/models/blob", body)
    assert v2["echo"].tolist() == [b"\xffabc"]
    assert v2["sha256"].tolist() == [digest(b"abc")]


# -- the rules, one function at a time ----------------------------------------------------------

TEXT = Signature((TensorSpec("text", "BYTES", (-1,)),), ())
BINARY = Signature((TensorSpec("blob", "BYTES", (-1,), binary=True),), ())


def test_a_sample_of_bytes_makes_a_binary_input_that_survives_the_signature_record() -> None:
    arrays, _ = sample_arrays({"blob": [b"a\x00", b"\xff"]})
    (spec,) = input_specs(arrays)
    assert (spec.datatype, spec.binary) == ("BYTES", True)
    assert spec.to_dict() == {"name": "blob", "datatype": "BYTES", "shape": [-1], "binary": True}
    assert TensorSpec.from_dict(spec.to_dict()) == spec
    recorded_before = {"name": "text", "datatype": "BYTES", "shape": [-1]}  # versions registered until now
    assert TensorSpec.from_dict(recorded_before).binary is False  # text, as they were served
    (text,) = input_specs(sample_arrays({"text": ["a", "b"]})[0])
    assert text.binary is False
    with pytest.raises(InvalidInput, match="sample input 'mixed' mixes text \\(str\\) and bytes"):
        input_specs(sample_arrays({"mixed": ["a", b"b"]})[0])


def test_the_example_keeps_utf8_bytes_as_text_and_none_when_json_cannot_hold_them() -> None:
    assert example_of({"blob": np.array([b"ab", "é".encode()], dtype=object)}) == {"blob": ["ab", "é"]}
    assert example_of({"blob": np.array([b"ab", b"\xff"], dtype=object)}) is None


def test_bytes_keep_trailing_nul_bytes_and_text_keeps_numbers_out() -> None:
    assert validate_inputs(BINARY, to_inputs(BINARY, [b"a\x00\x00", b"\x00"]))["blob"].tolist() == [
        b"a\x00\x00",
        b"\x00",
    ]
    assert validate_inputs(BINARY, to_inputs(BINARY, ["é", b"\xff"]))["blob"].tolist() == ["é".encode(), b"\xff"]
    assert validate_inputs(TEXT, to_inputs(TEXT, ["é".encode(), "x"]))["text"].tolist() == ["é", "x"]
    for values, what in ((["a", 1], "the number 1"), (["a", None], "null"), (["a", {"b": 1}], "an object")):
        with pytest.raises(InvalidInput, match=f"input 'text': BYTES values must be strings, got {what}"):
            validate_inputs(TEXT, to_inputs(TEXT, values))


def test_numeric_inputs_never_parse_text_as_numbers() -> None:
    signature = Signature((TensorSpec("x", "FP64", (-1,)),), ())
    for values in (
        np.array(["1.5", 2.0], dtype=object),
        np.array([b"1.5"], dtype=object),
        np.array([True, 1.0], dtype=object),
    ):
        with pytest.raises(InvalidInput, match="input 'x': expected datatype FP64, got non-numeric values"):
            validate_inputs(signature, {"x": values})
    assert np.isnan(
        validate_inputs(
            Signature((TensorSpec("x", "FP64", (-1,), allow_nan=True),), ()), {"x": np.array([None, 1], dtype=object)}
        )["x"][0]
    )


def test_custom_model_bytes_outputs_keep_trailing_nul_bytes() -> None:
    assert as_outputs({"x": [b"a\x00", b"b"]})["x"].tolist() == [b"a\x00", b"b"]
    assert as_outputs({"x": ["a", "b"]})["x"].dtype == object


def test_a_binary_model_warms_up_on_its_example_as_bytes(served: tuple[str, str]) -> None:
    # blob@2's example holds the UTF-8 sample as strings; the model raises unless it gets bytes.
    assert httpx.get(f"http://{served[0]}/v2/models/blob/versions/2/ready", timeout=10).status_code == 200
