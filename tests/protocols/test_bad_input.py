"""Bad requests to both protocols: the right status, a message that says what is wrong, and the
server keeps answering good requests."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest
from httpx import AsyncClient

from modelport.api import register
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.serving import client_for, register_iris
from tests.support.tabular import write_embedding_onnx

LIMIT = 4096
FEATURES = "features: sepal_length, sepal_width, petal_length, petal_width"
V2 = "/v2/models/iris/infer"
TF = "/v1/models/iris:predict"
NOT_JSON = "the request body is not valid JSON"


def v2(data: str, shape: str = "[1,4]", datatype: str = "FP32", extra: str = "") -> bytes:
    tensor = f'{{"name":"input","shape":{shape},"datatype":"{datatype}","data":{data}}}'
    return f'{{"inputs":[{tensor}{extra}]}}'.encode()


CASES: list[tuple[str, str, bytes, int, str]] = [
    # (case, path, body, status, message: exact, or a prefix when it ends with "...")
    ("v2 wrong shape", V2, v2("[1,2,3]", "[1,3]"), 400, "input 'input': expected shape [-1, 4], got [1, 3]"),
    (
        "v2 data of the wrong type",
        V2,
        v2('["a","b","c","d"]'),
        400,
        "input 'input': expected datatype FP32, got strings",
    ),
    (
        "v2 BYTES for a numeric input",
        V2,
        v2('["a","b","c","d"]', datatype="BYTES"),
        400,
        "input 'input': expected datatype FP32, got BYTES; send FP16, FP32 or FP64",
    ),
    (
        "v2 numbers as BYTES for a numeric input",
        V2,
        v2('["1","2","3","4"]', datatype="BYTES"),
        400,
        "input 'input': expected datatype FP32, got BYTES; send FP16, FP32 or FP64",
    ),
    (
        "v2 integer datatype for a float input",
        V2,
        v2("[1,2,3,4]", datatype="INT64"),
        400,
        "input 'input': expected datatype FP32, got INT64; send FP16, FP32 or FP64",
    ),
    (
        "v2 BOOL for a float input",
        V2,
        v2("[true,false,true,false]", datatype="BOOL"),
        400,
        "input 'input': expected datatype FP32, got BOOL; send FP16, FP32 or FP64",
    ),
    ("v2 unknown datatype", V2, v2("[1,2,3,4]", datatype="FLOAT"), 400, "input 'input': unknown datatype 'FLOAT' ..."),
    ("v2 no inputs", V2, b'{"inputs":[]}', 400, "the request needs 'inputs': a non-empty list of tensors ..."),
    (
        "v2 missing input",
        V2,
        b'{"inputs":[{"name":"sepal_length","shape":[1],"datatype":"FP32","data":[1]}]}',
        400,
        f"missing feature 'sepal_width' ({FEATURES})",
    ),
    (
        "v2 extra input",
        V2,
        v2("[1,2,3,4]", extra=',{"name":"other","shape":[1],"datatype":"FP32","data":[1]}'),
        400,
        "unknown input 'other' (expected: input)",
    ),
    ("v2 unknown model", "/v2/models/nope/infer", v2("[1,2,3,4]"), 404, "model 'nope' is not served (served: iris)"),
    (
        "v2 unknown version",
        "/v2/models/iris/versions/9/infer",
        v2("[1,2,3,4]"),
        404,
        "model 'iris' has no version 9 served (versions: 1; aliases: production)",
    ),
    (
        "v2 unknown alias",
        "/v2/models/iris/versions/canary/infer",
        v2("[1,2,3,4]"),
        404,
        "model 'iris' has no alias 'canary' served (versions: 1; aliases: production)",
    ),
    (
        "v2 malformed alias",
        "/v2/models/iris/versions/Bad!/infer",
        v2("[1,2,3,4]"),
        400,
        "invalid model reference 'iris@Bad!' ...",
    ),
    ("v2 invalid JSON", V2, b'{"inputs": [}', 400, f"{NOT_JSON} (unexpected character ..."),
    ("v2 empty body", V2, b"", 400, "the request body is empty; send a JSON object"),
    ("v2 1e400", V2, v2("[1,2,3,1e400]"), 400, f"{NOT_JSON} (number is infinity when parsed as double..."),
    ("v2 1e39 into FP32", V2, v2("[1,2,3,1e39]"), 400, "input 'input': values out of range for FP32 (max 3.40282e+38)"),
    ("v2 NaN literal", V2, v2("[1,2,3,NaN]"), 400, f"{NOT_JSON} (unexpected character..."),
    (
        "v2 null",
        V2,
        v2("[1,2,3,null]"),
        400,
        "input 'input': contains NaN or infinity, which this model does not accept; fill in missing values...",
    ),
    ("v2 top level list", V2, b"[1,2]", 400, "the request must be a JSON object with 'inputs', got list; ..."),
    (
        "v2 data vs shape",
        V2,
        v2("[1,2,3,4,5,6,7]", "[2,4]"),
        400,
        "input 'input': shape [2, 4] needs 8 values but 'data' has 7",
    ),
    ("v2 ragged data", V2, v2("[[1,2],[3]]", "[2,4]"), 400, "input 'input': 'data' is not a rectangular array"),
    (
        "v2 bad shape",
        V2,
        v2("[1,2,3,4]", '"4"'),
        400,
        "input 'input': 'shape' must be a list of non-negative integers, got '4'",
    ),
    (
        "v2 unknown output",
        V2,
        b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"score"}]}',
        400,
        "unknown output 'score' (outputs: label, probabilities)",
    ),
    ("tf wrong shape", TF, b'{"instances":[[1,2,3]]}', 400, "input 'input': expected shape [-1, 4], got [1, 3]"),
    (
        "tf wrong datatype",
        TF,
        b'{"instances":[["a","b","c","d"]]}',
        400,
        "input 'input': expected datatype FP32, got non-numeric values (the text 'a')",
    ),
    (
        "tf numbers as text",
        TF,
        b'{"instances":[["5.1","3.5","1.4","0.2"]]}',
        400,
        "input 'input': expected datatype FP32, got non-numeric values (the text '5.1')",
    ),
    (
        "tf a number among text",
        TF,
        b'{"instances":[[5.1,"3.5",1.4,0.2]]}',
        400,
        "input 'input': expected datatype FP32, got non-numeric values (the text '3.5')",
    ),
    (
        "tf b64 for a numeric input",
        TF,
        b'{"instances":[[5.1,{"b64":"AA=="},1.4,0.2]]}',
        400,
        "input 'input': expected datatype FP32, got non-numeric values (an object)",
    ),
    (
        "tf missing input",
        TF,
        b'{"instances":[{"sepal_length":1,"sepal_width":2,"petal_length":3}]}',
        400,
        f"row 0: missing feature 'petal_width' ({FEATURES})",
    ),
    (
        "tf extra input",
        TF,
        b'{"instances":[{"sepal_length":1,"sepal_width":2,"petal_length":3,"petal_width":4,"color":5}]}',
        400,
        f"row 0: unknown feature 'color' ({FEATURES})",
    ),
    (
        "tf unknown model",
        "/v1/models/nope:predict",
        b'{"instances":[[1,2,3,4]]}',
        404,
        "model 'nope' is not served (served: iris)",
    ),
    (
        "tf unknown version",
        "/v1/models/iris/versions/9:predict",
        b'{"instances":[[1,2,3,4]]}',
        404,
        "model 'iris' has no version 9 served (versions: 1; aliases: production)",
    ),
    (
        "tf unknown label",
        "/v1/models/iris/labels/canary:predict",
        b'{"instances":[[1,2,3,4]]}',
        404,
        "model 'iris' has no alias 'canary' served (versions: 1; aliases: production)",
    ),
    ("tf invalid JSON", TF, b'{"instances": [[1,2,', 400, f"{NOT_JSON} ..."),
    ("tf empty body", TF, b"", 400, "the request body is empty; send a JSON object"),
    ("tf 1e400", TF, b'{"instances":[[1,2,3,1e400]]}', 400, f"{NOT_JSON} (number is infinity when parsed as double..."),
    ("tf 1e39 into FP32", TF, b'{"instances":[[1,2,3,1e39]]}', 400, "input 'input': values out of range for FP32"),
    ("tf NaN literal", TF, b'{"instances":[[1,2,3,NaN]]}', 400, f"{NOT_JSON} (unexpected character..."),
    (
        "tf null",
        TF,
        b'{"instances":[[1,2,3,null]]}',
        400,
        "input 'input': contains NaN or infinity, which this model does not accept; fill in missing values...",
    ),
    (
        "tf top level string",
        TF,
        b'"x"',
        400,
        "the request must be a JSON object with 'instances' (rows) or 'inputs' (columns), got str",
    ),
    ("tf no rows", TF, b'{"instances":[]}', 400, "'instances' must be a non-empty list of rows"),
    (
        "tf both forms",
        TF,
        b'{"instances":[[1,2,3,4]],"inputs":[[1,2,3,4]]}',
        400,
        "give exactly one of 'instances' ...",
    ),
    ("tf ragged rows", TF, b'{"instances":[[1,2],[1,2,3,4]]}', 400, "input 'input' is not a rectangular array..."),
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("bad") / "home", max_body_bytes=LIMIT)
    register_iris(settings, iris, aliases=("production",))
    return settings.with_(models=("iris@production",))


@pytest.fixture(scope="module")
def good() -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncClient]:
    async with client_for(build_app(settings)) as client:
        yield client


async def assert_still_serving(client: AsyncClient, good: dict[str, Any]) -> None:
    response = await client.post(V2, json=good)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == ["setosa"]


@pytest.mark.parametrize(("path", "body", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_request_is_refused_with_a_clear_message(
    client: AsyncClient, good: dict[str, Any], path: str, body: bytes, status: int, message: str
) -> None:
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    if message.endswith("..."):
        assert error.startswith(message[:-3].rstrip()), error
    else:
        assert error == message
    await assert_still_serving(client, good)


@pytest.mark.parametrize("path", [V2, TF])
async def test_body_over_the_limit_is_refused_with_413(client: AsyncClient, good: dict[str, Any], path: str) -> None:
    body = b'{"instances": [[1,2,3,4]], "padding": "' + b"x" * LIMIT + b'"}'
    response = await client.post(path, content=body)
    assert response.status_code == 413
    assert response.json()["error"].startswith(f"request body is larger than the limit of {LIMIT} bytes")
    assert response.json()["error"].endswith("raise MODELPORT_MAX_BODY_MB on the server")
    await assert_still_serving(client, good)


async def test_chunked_body_over_the_limit_is_refused_before_it_is_all_read(
    client: AsyncClient, good: dict[str, Any]
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += 1
            yield b"x" * 1024

    response = await client.post(V2, content=chunks())
    assert response.status_code == 413
    assert sent < 10
    await assert_still_serving(client, good)


async def test_unknown_endpoint_answers_json_404(client: AsyncClient) -> None:
    response = await client.get("/v3/anything")
    assert response.status_code == 404
    assert response.json() == {"error": "no such endpoint: GET /v3/anything"}


# -- compressed bodies (Content-Encoding), on the fast lane and through the middleware ----------

TF_ROWS = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def _deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(wbits=wbits)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: _deflate(data, -zlib.MAX_WBITS)),  # raw deflate, as some clients send it
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate"],
)
@pytest.mark.parametrize("path", [V2, TF])
async def test_compressed_bodies_are_decompressed(
    client: AsyncClient, good: dict[str, Any], path: str, encoding: str, compress: Any
) -> None:
    body = orjson.dumps(good) if path == V2 else TF_ROWS
    response = await client.post(path, content=compress(body), headers={"content-encoding": encoding})
    assert response.status_code == 200, response.text
    assert "setosa" in response.text


@pytest.mark.parametrize("path", [V2, TF])
async def test_compressed_body_inflating_past_the_limit_is_413(
    client: AsyncClient, good: dict[str, Any], path: str
) -> None:
    bomb = gzip.compress(b'{"instances": [[1,2,3,4]], "padding": "' + b"x" * 1_000_000 + b'"}')
    assert len(bomb) < LIMIT
    response = await client.post(path, content=bomb, headers={"content-encoding": "gzip"})
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["error"]
    await assert_still_serving(client, good)


@pytest.mark.parametrize("path", [V2, TF])
async def test_unknown_or_broken_compression_is_refused_with_its_reason(client: AsyncClient, path: str) -> None:
    brotli = await client.post(path, content=b"\x0b\x02\x80{}\x03", headers={"content-encoding": "br"})
    assert brotli.status_code == 415
    assert brotli.headers["accept-encoding"] == "gzip, deflate"
    assert "Content-Encoding 'br' is not supported" in brotli.json()["error"]
    truncated = await client.post(path, content=gzip.compress(TF_ROWS)[:-12], headers={"content-encoding": "gzip"})
    assert truncated.status_code == 400
    assert "truncated" in truncated.json()["error"]
    garbage = await client.post(path, content=b"not gzip at all", headers={"content-encoding": "gzip"})
    assert garbage.status_code == 400
    assert "cannot be decompressed" in garbage.json()["error"]


# -- values the model itself cannot take, integers past their type ------------------------------

EMBED_V2 = "/v2/models/embed/infer"
EMBED_TF = "/v1/models/embed:predict"
OUT_OF_VOCABULARY = (
    "the model cannot take this input: Gather: indices element out of data bounds, idx=100 must be within"
)


@pytest.fixture(scope="module")
def embed_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("embed")
    settings = Settings(home=root / "home")
    sample = np.array([[1, 2, 3]], dtype=np.int64)
    register(write_embedding_onnx(root / "embed.onnx"), name="embed", sample_input=sample, settings=settings)
    return settings.with_(models=("embed@1",))


def _v2_ids(literal: str) -> bytes:
    return ('{"inputs":[{"name":"ids","shape":[1,3],"datatype":"INT64","data":[1,2,' + literal + "]}]}").encode()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (EMBED_V2, _v2_ids("100")),
        (EMBED_TF, b'{"instances":[[1,2,100]]}'),
        (EMBED_TF, b'{"inputs":{"ids":[[1,2,100]]}}'),
    ],
    ids=["v2", "tf-instances", "tf-inputs"],
)
async def test_a_token_id_past_the_vocabulary_is_400_with_the_runtime_reason(
    embed_settings: Settings, caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    async with client_for(build_app(embed_settings)) as client:
        response = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(OUT_OF_VOCABULARY), response.text
        assert "[-50,49]" in response.json()["error"]
        good = await client.post(EMBED_TF, json={"instances": [[1, 2, 3]]})
        assert good.status_code == 200, good.text
        assert good.json()["predictions"] == [[4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]]
    assert "failed to predict" not in caplog.text  # a client's mistake, not logged as the model's fault


@pytest.mark.parametrize("literal", ["-9223372036854775809", "9223372036854775808", "18446744073709551616", "-1e20"])
@pytest.mark.parametrize("protocol", ["v2", "tf-instances", "tf-inputs"])
async def test_integers_past_int64_are_refused_not_clamped(
    embed_settings: Settings, literal: str, protocol: str
) -> None:
    """-2**63 - 1 reads as the float -2.0**63 (orjson), which used to pass as INT64's minimum."""
    path, body = {
        "v2": (EMBED_V2, _v2_ids(literal)),
        "tf-instances": (EMBED_TF, f'{{"instances":[[1,2,{literal}]]}}'.encode()),
        "tf-inputs": (EMBED_TF, f'{{"inputs":{{"ids":[[1,2,{literal}]]}}}}'.encode()),
    }[protocol]
    async with client_for(build_app(embed_settings)) as client:
        response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "input 'ids': values out of range for INT64"
