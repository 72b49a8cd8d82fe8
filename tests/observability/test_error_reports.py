"""Error reports with the real Sentry SDK, sent to a Sentry stand-in on a local port: a request
answered 500 (a model that raised, an unhandled bug) and a failed model load arrive with their
tags, and no body, key, token or query string is in the bytes received."""

from __future__ import annotations

import gzip
import json
import sys
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

sentry_sdk = pytest.importorskip("sentry_sdk")

from modelport.errors import InvalidModel, ModelportError  # noqa: E402
from modelport.observability.errors import scrub  # noqa: E402
from modelport.runtimes.base import Runtime  # noqa: E402
from modelport.runtimes.fake import FakeRuntime  # noqa: E402
from modelport.server.app import build_app  # noqa: E402
from modelport.serving.manager import ModelManager  # noqa: E402
from modelport.settings import Settings  # noqa: E402
from modelport.types import ModelVersion, Signature  # noqa: E402
from tests.support.serving import DirectorySource, client_for, fake_version  # noqa: E402

API_KEY = "mp_k3y1d_S3CRETkeyMaterial-xyz"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl"
QUERY_SECRET = "QUERYsecret123"
BODY_VALUE = 7.123456789  # a feature value only the request body holds
SECRETS = (API_KEY, "S3CRETkeyMaterial", TOKEN, QUERY_SECRET, str(BODY_VALUE), "7.12345")


class Envelopes:
    """A Sentry stand-in: every POST's path, headers and (decompressed) body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def events(self) -> list[dict[str, Any]]:
        """The error events of every envelope received."""
        events = []
        with self.lock:
            bodies = [body for path, _, body in self.received if path == "/api/1/envelope/"]
        for body in bodies:
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    events.append(json.loads(payload))
        return events

    def raw(self) -> bytes:
        with self.lock:
            return b"\n".join(body for _, _, body in self.received)


@pytest.fixture
def sentry() -> Iterator[tuple[str, Envelopes]]:
    """(DSN, what arrives) of a local HTTP server bound to port 0."""
    envelopes = Envelopes()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            encoding = self.headers.get("content-encoding", "")
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            elif encoding == "br":
                import brotli

                raw = brotli.decompress(raw)
            with envelopes.lock:
                envelopes.received.append((self.path, dict(self.headers), raw))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://public@127.0.0.1:{server.server_address[1]}/1", envelopes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class FaultyRuntime(FakeRuntime):
    """The fake model with two faults: negative first features raise (the model's failure, answered
    500 as PredictionFailed), and a first feature of 99 answers lists, not arrays (a plugin's bug
    that only encoding meets: an unhandled exception)."""

    kind: ClassVar[str] = "faulty"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = float(next(iter(inputs.values()))[0, 0])
        if first < 0:
            raise FloatingPointError("cannot score negative lengths")
        outputs = super().predict(inputs)
        if first == 99:
            return {name: array.tolist() for name, array in outputs.items()}
        return outputs


class FaultySource(DirectorySource):
    def open(self, version: ModelVersion) -> Runtime:
        runtime = FaultyRuntime()
        runtime.load(next(p for v, p in self.versions if v is version), version.signature)
        return runtime


def body(first: float) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [first, BODY_VALUE, 3, 4]}]}


@pytest.mark.parametrize(
    ("first", "kind", "message"),
    [
        (-1.0, "PredictionFailed", "cannot score negative lengths"),
        (99.0, "AttributeError", "'list' object has no attribute"),
    ],
    ids=["model-raised", "unhandled"],
)
async def test_a_fault_is_reported_with_its_tags_and_without_body_keys_or_query(
    sentry: tuple[str, Envelopes], settings: Settings, tmp_path: Path, first: float, kind: str, message: str
) -> None:
    dsn, envelopes = sentry
    manager = ModelManager(FaultySource([fake_version(tmp_path)]))
    await manager.load(["iris"])
    headers = {"x-api-key": API_KEY, "authorization": f"Bearer {TOKEN}", "cookie": f"session={API_KEY}"}
    try:
        app = build_app(settings.with_(sentry_dsn=dsn), manager=manager)
        async with client_for(app) as client:
            assert app.watchers.errors is not None
            assert app.watchers.errors.client is not None
            options = app.watchers.errors.client.options  # PII off, no frame variables, no integrations
            assert options["default_integrations"] is False
            if int(sentry_sdk.VERSION.split(".")[0]) >= 3:  # data_collection replaced the 2.x options
                collected = options["data_collection"]
                assert (collected["user_info"], collected["stack_frame_variables"]) == (False, False)
            else:
                assert not options["send_default_pii"]
                assert options["event_scrubber"] is not None  # the SDK's own scrubber stays on in 2.x
                assert options["include_local_variables"] is False
            ok = await client.post("/v2/models/iris/infer", json=body(1.0), headers=headers)
            failed = await client.post(
                f"/v2/models/iris/infer?api_key={QUERY_SECRET}", json=body(first), headers=headers
            )
    finally:
        manager.close()
    assert (ok.status_code, failed.status_code) == (200, 500)
    # the app closed its client at shutdown: whatever it queued has been sent
    (event,) = envelopes.events()
    tags = event["tags"]
    assert tags["request_id"] == failed.headers["x-request-id"]
    assert (tags["model"], tags["version"], tags["protocol"]) == ("iris", "1", "v2")
    exception = event["exception"]["values"][-1]
    assert exception["type"] == kind
    assert message in exception["value"]
    assert event["request"] == {"method": "POST", "url": "/v2/models/iris/infer"}
    raw = envelopes.raw()
    assert b'"vars"' not in raw  # no frame's local variables (the body and headers were locals)
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    # nothing process-wide: the app's client was its own, and it is closed
    assert app.watchers.errors.client is None
    assert not sentry_sdk.get_client().is_active()


async def test_a_failed_model_load_is_reported_with_its_model_and_version(
    sentry: tuple[str, Envelopes], settings: Settings, tmp_path: Path
) -> None:
    dsn, envelopes = sentry
    version, path = fake_version(tmp_path)
    broken = Signature(version.signature.inputs, version.signature.outputs, example={"input": [[-1.0, 0, 0, 0]]})
    manager = ModelManager(FaultySource([(replace(version, signature=broken), path)]))
    app = build_app(settings.with_(sentry_dsn=dsn, models=("iris",)), manager=manager)
    with pytest.raises(InvalidModel, match="failed its warm-up prediction"):
        async with client_for(app):
            pass
    manager.close()
    (event,) = envelopes.events()
    assert (event["tags"]["model"], event["tags"]["version"], event["tags"]["phase"]) == ("iris", "1", "load")
    assert "failed its warm-up prediction" in event["exception"]["values"][-1]["value"]


async def test_sentry_dsn_without_the_extra_is_one_clear_error(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # as if sentry-sdk were not installed
    manager = ModelManager(FaultySource([fake_version(tmp_path)]))
    app = build_app(settings.with_(sentry_dsn="http://public@127.0.0.1:9/1"), manager=manager)
    with pytest.raises(ModelportError, match=r"^SENTRY_DSN is set but the sentry extra is not installed: pip install"):
        async with client_for(app):
            pass
    manager.close()


def test_scrub_keeps_method_and_path_and_filters_secrets_anywhere() -> None:
    event = {
        "request": {
            "method": "POST",
            "url": f"http://h/v2/models/iris/infer?token={QUERY_SECRET}",
            "query_string": f"token={QUERY_SECRET}",
            "data": {"inputs": [BODY_VALUE]},
            "headers": {"Authorization": f"Bearer {TOKEN}", "X-Api-Key": API_KEY},
            "cookies": {"session": API_KEY},
        },
        "breadcrumbs": {"values": [{"message": API_KEY}]},
        "exception": {
            "values": [
                {"value": f"key {API_KEY} and Bearer {TOKEN}", "stacktrace": {"frames": [{"vars": {"body": "x"}}]}}
            ]
        },
        "extra": {"note": f"token {TOKEN}"},
    }
    scrubbed = scrub(event, {})
    assert scrubbed["request"] == {"method": "POST", "url": "http://h/v2/models/iris/infer"}
    assert "breadcrumbs" not in scrubbed
    assert scrubbed["exception"]["values"][0] == {
        "value": "key [Filtered] and [Filtered]",
        "stacktrace": {"frames": [{}]},
    }
    assert scrubbed["extra"] == {"note": "token [Filtered]"}
    assert all(secret not in json.dumps(scrubbed) for secret in SECRETS)
