"""The auth matrix over gRPC: API keys and OAuth2 tokens sent as gRPC metadata to a real server,
through Triton's gRPC client. Same policy and messages as REST: health open, the rest needs a
caller allowed to use the model (UNAUTHENTICATED vs PERMISSION_DENIED)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import Settings
from tests.support.serving import register_iris, running

pytestmark = pytest.mark.slow

grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("jwt")
from tritonclient.utils import InferenceServerException  # noqa: E402

from modelport.auth.keys import KeyStore  # noqa: E402
from tests.support.tokens import AUDIENCE, ISSUER, Signer  # noqa: E402

UNAUTHENTICATED, PERMISSION_DENIED = "StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.rsa()


@pytest.fixture(scope="module")
def registered_home(tmp_path_factory: pytest.TempPathFactory, iris: Any, signer: Signer) -> Settings:
    root = tmp_path_factory.mktemp("grpc-auth")
    settings = Settings(
        home=root / "home",
        jwt_public_key=signer.write_pem(root / "issuer.pem"),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        poll_seconds=0.2,
    )
    register_iris(settings, iris)
    return settings


@pytest.fixture(scope="module")
def server(registered_home: Settings, signer: Signer) -> Iterator[tuple[Any, dict[str, str]]]:
    """A gRPC server with API keys in its registry and OAuth2 tokens from a test signer; yields a
    client and the credentials by name."""
    settings = registered_home
    registry = Registry.open(settings)
    try:
        keys = KeyStore(registry.engine)
        credentials = {
            "iris key": keys.create(["infer:iris"])[1],
            "churn key": keys.create(["infer:churn"])[1],
            "revoked key": keys.create(["infer"])[1],
            "token": signer.token(scope="infer"),
            "expired token": signer.token(expires_in=-3600),
            "foreign token": signer.token(issuer="https://elsewhere.test/"),
        }
        keys.revoke(credentials["revoked key"].split("_")[1])
    finally:
        registry.close()
    app = build_app(settings.with_(models=("iris@production",), grpc_port=0))
    with running(app):
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{app.grpc_port}")
        yield client, credentials
        client.close()


def _infer(client: Any, headers: dict[str, str] | None) -> list[str]:
    tensor = grpcclient.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    return [v.decode() for v in client.infer("iris", [tensor], headers=headers).as_numpy("label")]


def _bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def test_health_is_open_and_everything_else_needs_credentials(server: tuple[Any, dict[str, str]]) -> None:
    client, _ = server
    assert client.is_server_live()
    assert client.is_server_ready()
    calls: list[Callable[[], Any]] = [
        lambda: _infer(client, None),
        lambda: client.is_model_ready("iris"),
        lambda: client.get_model_metadata("iris"),
        lambda: client.get_server_metadata(),
    ]
    for call in calls:
        with pytest.raises(InferenceServerException, match="this endpoint needs credentials") as caught:
            call()
        assert caught.value.status() == UNAUTHENTICATED


@pytest.mark.parametrize(
    ("credential", "status", "message"),
    [
        ("bad key", UNAUTHENTICATED, "invalid API key"),
        ("revoked key", UNAUTHENTICATED, "was revoked"),
        ("expired token", UNAUTHENTICATED, "the bearer token has expired"),
        ("foreign token", UNAUTHENTICATED, "was not issued by"),
        ("churn key", PERMISSION_DENIED, "may not use model 'iris'"),
    ],
)
def test_refused_credentials_get_the_right_status(
    server: tuple[Any, dict[str, str]], credential: str, status: str, message: str
) -> None:
    client, credentials = server
    value = credentials.get(credential, "mp_0123456789ab_not-the-secret")
    with pytest.raises(InferenceServerException, match=message) as caught:
        _infer(client, _bearer(value))
    assert caught.value.status() == status
    if status == PERMISSION_DENIED:
        with pytest.raises(InferenceServerException, match=message) as caught:
            client.get_model_metadata("iris", headers=_bearer(value))
        assert caught.value.status() == status


def test_valid_keys_and_tokens_are_served(server: tuple[Any, dict[str, str]]) -> None:
    client, credentials = server
    for headers in (
        _bearer(credentials["iris key"]),
        {"x-api-key": credentials["iris key"]},
        _bearer(credentials["token"]),
    ):
        assert _infer(client, headers) == ["setosa"]
        assert client.is_model_ready("iris", headers=headers)
        assert client.get_model_metadata("iris", headers=headers).name == "iris"


def test_a_key_revoked_while_serving_is_refused_within_the_poll_interval(
    server: tuple[Any, dict[str, str]], registered_home: Settings
) -> None:
    client, _ = server
    registry = Registry.open(registered_home)
    try:
        keys = KeyStore(registry.engine)
        record, key = keys.create(["infer:iris"])
        deadline = time.monotonic() + 30
        while True:  # the server picks new keys up on its next poll
            try:
                assert _infer(client, _bearer(key)) == ["setosa"]
                break
            except InferenceServerException:
                assert time.monotonic() < deadline, "the new key was never accepted"
                time.sleep(0.05)
        keys.revoke(record.id)
    finally:
        registry.close()
    deadline = time.monotonic() + 30
    refused: InferenceServerException | None = None
    while refused is None:
        try:
            _infer(client, _bearer(key))
        except InferenceServerException as exc:
            refused = exc
        assert time.monotonic() < deadline, "the revoked key was still accepted"
        time.sleep(0.05)
    assert refused.status() == UNAUTHENTICATED
    assert "was revoked" in str(refused)
