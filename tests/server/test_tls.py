"""TLS on both transports, with a CA and certificates made for the test: real uvicorn and grpc.aio
servers on ports the kernel picks, real clients that trust (or do not trust) the test CA, mutual
TLS, the certificate settings checked before anything binds, and `modelport serve` over HTTPS."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from modelport.cli.main import app as cli
from modelport.errors import InvalidSetting
from modelport.server.app import build_app
from modelport.server.spawn import start, stop
from modelport.server.tls import server_tls, uvicorn_options
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from tests.support.pki import Pki, make_pki
from tests.support.serving import register_iris, running

grpc = pytest.importorskip("grpc")
from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb  # noqa: E402
from modelport.protocols.grpc.proto.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub  # noqa: E402
from modelport.server.grpc import grpc_endpoint  # noqa: E402

ROW = [5.9, 3.0, 5.1, 1.8]
V2_BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def manager(fake_manager: ModelManager) -> ModelManager:
    return fake_manager


def tls_settings(pki: Pki, tmp_path: Path, *, mutual: bool = False) -> Settings:
    return Settings(
        home=tmp_path / "home",
        tls_certfile=pki.server_cert,
        tls_keyfile=pki.server_key,
        tls_client_ca=pki.ca if mutual else None,
    )


@contextmanager
def serving_https(app: Any, settings: Settings) -> Iterator[int]:
    """``app`` under a real uvicorn with ``settings``' TLS options on 127.0.0.1, port 0; yields the port."""
    with running(app, **uvicorn_options(settings)) as address:
        yield int(address.rsplit(":", 1)[1])


def predict(url: str, **client: Any) -> httpx.Response:
    with httpx.Client(**client) as http:
        return http.post(f"{url}/v2/models/iris/infer", json=V2_BODY)


def test_https_answers_with_the_test_ca_and_refuses_plain_http(pki: Pki, tmp_path: Path, manager: ModelManager) -> None:
    settings = tls_settings(pki, tmp_path)
    with serving_https(build_app(settings, manager=manager), settings) as port:
        response = predict(f"https://127.0.0.1:{port}", verify=pki.client_context())
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == ["virginica"]
        assert response.http_version == "HTTP/1.1"
        with pytest.raises(httpx.TransportError):
            predict(f"http://127.0.0.1:{port}")  # plain HTTP on the TLS port
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            predict(f"https://127.0.0.1:{port}")  # the system's CAs do not know the test CA


def test_https_with_a_client_ca_serves_only_clients_with_a_certificate(
    pki: Pki, tmp_path: Path, manager: ModelManager
) -> None:
    settings = tls_settings(pki, tmp_path, mutual=True)
    with serving_https(build_app(settings, manager=manager), settings) as port:
        url = f"https://127.0.0.1:{port}"
        with pytest.raises(httpx.TransportError):
            predict(url, verify=pki.client_context())
        stranger = make_pki(tmp_path / "stranger", "stranger")  # a certificate from a CA the server does not trust
        stranger_context = pki.client_context()
        stranger_context.load_cert_chain(stranger.client_cert, stranger.client_key)
        with pytest.raises(httpx.TransportError):
            predict(url, verify=stranger_context)
        response = predict(url, verify=pki.client_context(with_certificate=True))
        assert response.status_code == 200, response.text


@asynccontextmanager
async def grpc_serving(settings: Settings, manager: ModelManager) -> AsyncIterator[str]:
    async with grpc_endpoint(settings.with_(grpc_port=0), lambda: manager) as port:
        yield f"127.0.0.1:{port}"


def infer_request() -> Any:
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(ROW)
    return request


async def call_infer(channel: Any) -> list[str]:
    response = await GRPCInferenceServiceStub(channel).ModelInfer(infer_request(), timeout=20)
    label = next(output for output in response.outputs if output.name == "label")
    return [value.decode() for value in label.contents.bytes_contents]


async def assert_refused(channel: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=20)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def credentials(pki: Pki, *, with_certificate: bool = False) -> Any:
    if not with_certificate:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
    )


async def test_grpc_over_tls_answers_clients_that_trust_the_ca_and_refuses_plaintext(
    pki: Pki, tmp_path: Path, manager: ModelManager
) -> None:
    async with grpc_serving(tls_settings(pki, tmp_path), manager) as target:
        async with grpc.aio.secure_channel(target, credentials(pki)) as channel:
            live = await GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=20)
            assert live.live
            assert await call_infer(channel) == ["virginica"]
        async with grpc.aio.insecure_channel(target) as channel:
            await assert_refused(channel)
        other = make_pki(tmp_path / "other", "other")
        async with grpc.aio.secure_channel(target, credentials(other)) as channel:
            await assert_refused(channel)


async def test_grpc_with_a_client_ca_requires_a_client_certificate(
    pki: Pki, tmp_path: Path, manager: ModelManager
) -> None:
    async with grpc_serving(tls_settings(pki, tmp_path, mutual=True), manager) as target:
        async with grpc.aio.secure_channel(target, credentials(pki)) as channel:
            await assert_refused(channel)
        async with grpc.aio.secure_channel(target, credentials(pki, with_certificate=True)) as channel:
            assert await call_infer(channel) == ["virginica"]


def test_unusable_tls_settings_say_what_is_wrong(pki: Pki, tmp_path: Path) -> None:
    base = Settings(home=tmp_path / "home")
    assert server_tls(base) is None
    assert uvicorn_options(base) == {}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tls_certfile": pki.server_cert}, r"MODELPORT_TLS_CERTFILE\) is set, so also give --tls-keyfile"),
        ({"tls_keyfile": pki.server_key}, r"MODELPORT_TLS_KEYFILE\) is set, so also give --tls-certfile"),
        ({"tls_client_ca": pki.ca}, "asks clients for certificates, which needs TLS"),
        (
            {"tls_certfile": tmp_path / "missing.pem", "tls_keyfile": pki.server_key},
            "cannot read the TLS certificate .*missing.pem .*No such file",
        ),
        ({"tls_certfile": pki.server_key, "tls_keyfile": pki.server_key}, "is not a PEM certificate"),
        ({"tls_certfile": pki.server_cert, "tls_keyfile": pki.server_cert}, "is not a PEM private key"),
        ({"tls_certfile": pki.server_cert, "tls_keyfile": pki.client_key}, "is not the private key of the certificate"),
        (
            {"tls_certfile": pki.server_cert, "tls_keyfile": pki.server_key, "tls_client_ca": pki.server_key},
            "is not a PEM CA bundle",
        ),
    ]  # fmt: skip
    for changes, message in cases:
        with pytest.raises(InvalidSetting, match=message):
            server_tls(base.with_(**changes))
    encrypted = tmp_path / "encrypted.key"
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(InvalidSetting, match="is an encrypted private key"):
        server_tls(base.with_(tls_certfile=pki.server_cert, tls_keyfile=encrypted))
    tls = server_tls(base.with_(tls_certfile=pki.server_cert, tls_keyfile=pki.server_key, tls_client_ca=pki.ca))
    assert tls is not None
    assert tls.description == "TLS, client certificates required"
    assert uvicorn_options(tls_settings(pki, tmp_path, mutual=True))["ssl_ca_certs"] == str(pki.ca)


async def test_grpc_refuses_unusable_tls_settings_before_binding(pki: Pki, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", grpc_port=0, tls_certfile=pki.server_cert)
    with pytest.raises(InvalidSetting, match="also give --tls-keyfile"):
        async with grpc_endpoint(settings, lambda: None):  # type: ignore[arg-type,return-value]
            pass


def test_serve_refuses_half_a_tls_configuration_with_exit_code_2(pki: Pki, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["serve", "iris@production", "--tls-certfile", str(pki.server_cert)],
        env={"MODELPORT_HOME": str(tmp_path / "home"), "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert "TLS needs the server's certificate and its private key" in result.output
    assert not (tmp_path / "home").exists(), "checked before the registry is opened"


@pytest.mark.slow
def test_modelport_serve_with_tls_flags_serves_https(pki: Pki, tmp_path: Path, iris: Any) -> None:
    home = tmp_path / "home"
    register_iris(Settings(home=home), iris)
    command = ["serve", "iris@production", "--port", "0"]
    command += ["--tls-certfile", str(pki.server_cert), "--tls-keyfile", str(pki.server_key)]
    env = {**os.environ, "MODELPORT_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    process, output = start(command, env=env)
    try:
        port = int(output.wait_for(re.compile(r"running on https://127\.0\.0\.1:(\d+)"), 120).group(1))
        assert f"docs: https://127.0.0.1:{port}/docs" in output.text  # bound first: the real port
        base = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        with httpx.Client(verify=pki.client_context()) as http:
            while (ready := http.get(f"{base}/v2/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.1)
            response = http.post(f"{base}/v1/models/iris:predict", json={"instances": [ROW]})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] == "virginica"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/v2/health/ready")
    finally:
        code = stop(process)
        output.close()
    assert code == 0, output.text
