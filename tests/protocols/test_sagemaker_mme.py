"""The SageMaker multi-model endpoint contract: /models load, list, get, unload, invoke; 409, 404, 400, 507."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from modelport.api import register
from modelport.errors import ConversionWarning
from modelport.registry.export import export_version
from modelport.registry.registry import Registry
from modelport.server.app import build_app
from modelport.settings import MIB, Settings
from modelport.stores.local import file_digest, manifest_key
from tests.support.models import forge_code_running_export
from tests.support.sagemaker import sagemaker_serve
from tests.support.serving import client_for, register_iris, running

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> tuple[Path, dict[str, Any]]:
    """Two exports of different Iris models under ROOT/<name>/model, as SageMaker lays them out."""
    root = tmp_path_factory.mktemp("mme")
    settings = Settings(home=root / "home")
    fitted = {}
    with Registry.open(settings) as registry:
        for name, strength in (("strong", 1.0), ("weak", 0.01)):
            version, model = register_iris(settings, iris, aliases=(), strength=strength)
            export_version(version, registry.artifact_path(version), root / "models" / name / "model")
            fitted[name] = model
        export_version(version, registry.artifact_path(version), root / "outside" / "model")
    return root, fitted


def settings_for(root: Path, **changes: Any) -> Settings:
    return Settings(
        home=root / "home",
        sagemaker=True,
        sagemaker_multi_model=True,
        sagemaker_models_dir=root / "models",
        **changes,
    )


def url(root: Path, name: str) -> str:
    return str(root / "models" / name / "model")


def check_probabilities(response: httpx.Response, model: Any) -> None:
    assert response.status_code == 200, response.text
    want = model.predict_proba(pd.DataFrame(ROWS, columns=FEATURES))
    np.testing.assert_allclose([p["probabilities"] for p in response.json()["predictions"]], want, atol=1e-5)


async def test_two_models_load_answer_list_and_unload(models_root: tuple[Path, dict[str, Any]]) -> None:
    root, fitted = models_root
    async with client_for(build_app(settings_for(root))) as client:
        assert (await client.get("/ping")).status_code == 200  # healthy with no model loaded
        for name in fitted:
            loaded = await client.post("/models", json={"model_name": name, "url": url(root, name)})
            assert loaded.status_code == 200, loaded.text
        for name, model in fitted.items():
            check_probabilities(await client.post(f"/models/{name}/invoke", json={"instances": ROWS}), model)
        csv = await client.post(
            "/models/weak/invoke",
            content="5.1,3.5,1.4,0.2\n",
            headers={"Content-Type": "text/csv", "Accept": "text/csv"},
        )
        assert csv.status_code == 200
        assert csv.text.count("\n") == 1
        listing = (await client.get("/models")).json()
        assert listing == {"models": [{"modelName": n, "modelUrl": url(root, n)} for n in ("strong", "weak")]}
        page = (await client.get("/models", params={"page_size": 1})).json()
        assert [m["modelName"] for m in page["models"]] == ["strong"]
        rest = (await client.get("/models", params={"page_size": 1, "next_page_token": page["nextPageToken"]})).json()
        assert [m["modelName"] for m in rest["models"]] == ["weak"]
        assert "nextPageToken" not in rest
        assert (await client.get("/models/weak")).json() == {"modelName": "weak", "modelUrl": url(root, "weak")}

        assert (await client.delete("/models/weak")).status_code == 200
        assert (await client.post("/models/weak/invoke", json=ROWS)).status_code == 404
        assert (await client.get("/models/weak")).status_code == 404
        assert (await client.delete("/models/weak")).status_code == 404
        check_probabilities(await client.post("/models/strong/invoke", json=ROWS), fitted["strong"])
        again = await client.post("/models", json={"model_name": "weak", "url": url(root, "weak")})
        assert again.status_code == 200, again.text
        check_probabilities(await client.post("/models/weak/invoke", json=ROWS), fitted["weak"])


async def test_loading_a_loaded_name_is_409(models_root: tuple[Path, dict[str, Any]]) -> None:
    root, _ = models_root
    async with client_for(build_app(settings_for(root))) as client:
        body = {"model_name": "strong", "url": url(root, "strong")}
        assert (await client.post("/models", json=body)).status_code == 200
        second = await client.post("/models", json={"model_name": "strong", "url": url(root, "weak")})
        assert second.status_code == 409
        assert "already loaded" in second.json()["error"]


def zeros_digest(size: int) -> str:
    """The sha256 of ``size`` zero bytes (a multiple of 1 MiB)."""
    digest, chunk = hashlib.sha256(), bytes(MIB)
    for _ in range(size // MIB):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def slow_models_root(models_root: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A models root holding ``big/model``: the ``strong`` export plus a file (listed in its
    record and its key) big enough that checking it against the key takes about 1.5 s here. The
    file is sparse, so it takes no disk, but reading and hashing it take the real time."""
    root, _ = models_root
    big = tmp_path / "models" / "big" / "model"
    shutil.copytree(root / "models" / "strong" / "model", big)
    padding = big / "padding.bin"
    with open(padding, "wb") as handle:
        os.truncate(handle.fileno(), 64 * MIB)
    started = time.perf_counter()
    file_digest(padding)  # what the load does, timed on a 64 MiB file
    per_mib = (time.perf_counter() - started) / 64
    size = min(max(int(1.5 / per_mib), 128), 4096) * MIB
    with open(padding, "wb") as handle:
        os.truncate(handle.fileno(), size)
    record = orjson.loads((big / "modelport.json").read_bytes())
    record["files"].append("padding.bin")
    digests = {rel: file_digest(big / rel) for rel in record["files"] if rel != "padding.bin"}
    record["artifact"] = manifest_key([*digests.items(), ("padding.bin", zeros_digest(size))])
    (big / "modelport.json").write_bytes(orjson.dumps(record))
    return tmp_path


async def test_ping_answers_while_a_slow_load_hashes_its_files(
    slow_models_root: Path, models_root: tuple[Path, dict[str, Any]]
) -> None:
    root, fitted = slow_models_root, models_root[1]
    # The padding is bytes on disk, not memory the model needs: keep the memory estimate out of it.
    settings = settings_for(root, sagemaker_memory_factor=0.01)
    body = {"model_name": "big", "url": url(root, "big")}
    async with client_for(build_app(settings)) as client:
        started = time.perf_counter()
        load = asyncio.create_task(client.post("/models", json=body))
        await asyncio.sleep(0.2)  # the load is checking its files by now
        ping = await asyncio.wait_for(client.get("/ping"), timeout=60)
        pinged = time.perf_counter() - started
        assert ping.status_code == 200
        assert not load.done()
        # While it loads, the name is taken but not listed, and cannot be unloaded.
        again = await client.post("/models", json=body)
        assert again.status_code == 409, again.text
        assert (await client.get("/models")).json() == {"models": []}
        assert (await client.get("/models/big")).status_code == 404
        unload = await client.delete("/models/big")
        assert unload.status_code == 409, unload.text
        assert not load.done()
        loaded = await load
        took = time.perf_counter() - started
        assert loaded.status_code == 200, loaded.text
        # Before, the load hashed on the event loop, and /ping waited for the whole hash.
        assert pinged < took / 2, f"/ping answered {pinged:.2f} s into a {took:.2f} s load"
        check_probabilities(await client.post("/models/big/invoke", json=ROWS), fitted["strong"])
        assert [m["modelName"] for m in (await client.get("/models")).json()["models"]] == ["big"]


async def test_unknown_model_is_404_everywhere(models_root: tuple[Path, dict[str, Any]]) -> None:
    root, _ = models_root
    async with client_for(build_app(settings_for(root))) as client:
        assert (await client.post("/models/nobody/invoke", json=ROWS)).status_code == 404
        assert (await client.get("/models/nobody")).status_code == 404
        assert (await client.delete("/models/nobody")).status_code == 404
        missing = await client.post("/models", json={"model_name": "ghost", "url": url(root, "ghost")})
        assert missing.status_code == 404
        single = await client.post("/invocations", json=ROWS)
        assert single.status_code == 404
        assert "/models/{model_name}/invoke" in single.json()["error"]


@pytest.mark.parametrize("where", ["outside", "traversal", "relative-escape"])
async def test_url_outside_the_models_root_is_400_and_never_loaded(
    models_root: tuple[Path, dict[str, Any]], where: str
) -> None:
    root, _ = models_root
    urls = {
        "outside": str(root / "outside" / "model"),
        "traversal": str(root / "models" / ".." / "outside" / "model"),
        "relative-escape": "../outside/model",
    }
    async with client_for(build_app(settings_for(root))) as client:
        response = await client.post("/models", json={"model_name": "sneaky", "url": urls[where]})
        assert response.status_code == 400
        assert "outside the models root" in response.json()["error"]
        assert (await client.get("/models")).json() == {"models": []}


async def test_malformed_load_request_is_400(models_root: tuple[Path, dict[str, Any]]) -> None:
    root, _ = models_root
    async with client_for(build_app(settings_for(root))) as client:
        assert (await client.post("/models", json={"model_name": "strong"})).status_code == 400
        bad_name = await client.post("/models", json={"model_name": "a/b", "url": url(root, "strong")})
        assert bad_name.status_code == 400


async def test_load_that_would_exhaust_memory_is_507(models_root: tuple[Path, dict[str, Any]]) -> None:
    if not Path("/proc/meminfo").is_file():
        pytest.skip("memory estimates need /proc/meminfo (Linux)")
    root, _ = models_root
    settings = settings_for(root, sagemaker_memory_headroom=1 << 60)  # more than any machine has
    async with client_for(build_app(settings)) as client:
        response = await client.post("/models", json={"model_name": "strong", "url": url(root, "strong")})
        assert response.status_code == 507
        assert "not enough memory" in response.json()["error"]
        assert (await client.get("/models")).json() == {"models": []}
        assert (await client.post("/models/strong/invoke", json=ROWS)).status_code == 404


async def test_code_running_model_directory_is_refused_and_never_runs(
    models_root: tuple[Path, dict[str, Any]], iris: Any, tmp_path: Path
) -> None:
    frame, labels = iris
    root = tmp_path / "root"
    native = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=1000)).fit(frame, labels)
    home = Settings(home=root / "home")
    with pytest.warns(ConversionWarning):
        version = register(native, name="native", sample_input=frame.head(10), settings=home)
    with Registry.open(home) as registry:
        export_version(version, registry.artifact_path(version), root / "models" / "evil" / "model")
    canary = tmp_path / "canary"
    forge_code_running_export(root / "models" / "evil" / "model", canary)
    async with client_for(build_app(settings_for(root))) as client:
        response = await client.post("/models", json={"model_name": "evil", "url": url(root, "evil")})
        assert response.status_code == 403, response.text
        assert "MODELPORT_TRUST_EXPORTED_CODE" in response.json()["error"]
        assert (await client.post("/models/evil/invoke", json=ROWS)).status_code == 404
    assert not canary.exists()


@pytest.mark.slow
def test_serve_with_sagemaker_multi_model_is_a_multi_model_endpoint(models_root: tuple[Path, dict[str, Any]]) -> None:
    root, fitted = models_root
    with sagemaker_serve(SAGEMAKER_MULTI_MODEL="true", MODELPORT_SAGEMAKER_MODELS_DIR=str(root / "models")) as base:
        loaded = httpx.post(f"{base}/models", json={"model_name": "strong", "url": url(root, "strong")}, timeout=60)
        assert loaded.status_code == 200, loaded.text
        check_probabilities(httpx.post(f"{base}/models/strong/invoke", json=ROWS), fitted["strong"])


@pytest.fixture(scope="module")
def mme_server(models_root: tuple[Path, dict[str, Any]]) -> Iterator[tuple[str, Path]]:
    """A real multi-model endpoint, its models root holding directories that are not models."""
    root, _ = models_root
    models = root / "models"
    (models / "empty").mkdir(exist_ok=True)
    (models / "notes").mkdir(exist_ok=True)
    (models / "notes" / "README.txt").write_text("not a model")
    (models / "broken").mkdir(exist_ok=True)
    (models / "broken" / "model.onnx").write_bytes(b"\x08\x07 not a protobuf")
    with running(build_app(settings_for(root))) as address:
        yield f"http://{address}", root


BAD_URLS = [
    ("nul byte", "strong/model\x00/x", 400, "url 'strong/model\\x00/x' is not a directory path"),
    ("empty", "", 400, "url '' is not a directory path"),
    ("name too long", "a" * 5000, 400, "url 'aaaa"),
    ("empty directory", "empty", 400, "url 'empty' holds no model this endpoint can serve: "),
    ("directory of other files", "notes", 400, "url 'notes' holds no model this endpoint can serve: "),
    ("corrupt ONNX file", "broken", 400, "url 'broken' holds no model this endpoint can serve: "),
    ("the models root", ".", 400, "url '.' holds no model this endpoint can serve: "),
    ("a file", "strong/model/modelport.json", 404, "url 'strong/model/modelport.json': no model directory there"),
]


@pytest.mark.parametrize(("url", "status", "message"), [c[1:] for c in BAD_URLS], ids=[c[0] for c in BAD_URLS])
def test_load_of_what_is_not_a_model_directory_is_a_client_error(
    mme_server: tuple[str, Path], url: str, status: int, message: str
) -> None:
    base, _ = mme_server
    response = httpx.post(f"{base}/models", json={"model_name": "m", "url": url}, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(message)
    assert httpx.get(f"{base}/models", timeout=10).json() == {"models": []}  # nothing half-loaded


@settings(max_examples=60, deadline=None, database=None)
@given(
    name=st.one_of(st.sampled_from(["m", "strong", "a/b", ""]), st.text(max_size=12)),
    url=st.one_of(st.sampled_from(["..", "/", "~", "strong", "strong/model/..", "\\", "\n"]), st.text(max_size=30)),
    absolute=st.booleans(),
)
def test_load_never_answers_a_server_error_whatever_the_name_and_url(
    mme_server: tuple[str, Path], name: str, url: str, absolute: bool
) -> None:
    base, root = mme_server
    target = f"{root / 'models'}/{url}" if absolute else url
    response = httpx.post(f"{base}/models", json={"model_name": name, "url": target}, timeout=60)
    assert response.status_code < 500, response.text
    if response.status_code == 200:  # it named a real model: leave the endpoint as it was
        assert httpx.delete(f"{base}/models/{name}", timeout=60).status_code == 200
    else:
        assert response.json()["error"]
