"""The hot-path ASGI lane: which paths it takes, and that it hands everything else on."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from modelport.server.app import build_app
from modelport.server.fastlane import v2_target
from modelport.serving.manager import ModelManager, Route, ServingModel
from modelport.settings import Settings
from tests.support.serving import DirectorySource, client_for, fake_version


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v2/models/iris/infer", ("iris", None)),
        ("/v2/models/iris/versions/3/infer", ("iris", "3")),
        ("/v2/models/iris/versions/production/infer", ("iris", "production")),
        ("/v2/models//infer", None),
        ("/v2/models/iris/versions//infer", None),
        ("/v2/models/iris/other/3/infer", None),
        ("/v2/models/iris/ready", None),
        ("/v2/models/iris/infer/x", None),
        ("/v1/models/iris:predict", None),
    ],
)
def test_v2_inference_paths_are_recognised_exactly(path: str, target: tuple[str, str | None] | None) -> None:
    assert v2_target(path) == target


class BrokenManager(ModelManager):
    """A manager with a bug: choosing a version raises something no one expected."""

    def pick(self, name: str, selector: str | None, routing_key: str | None = None) -> tuple[Route, ServingModel]:
        raise RuntimeError("a bug")


async def test_an_unexpected_error_in_the_lane_is_logged_and_answered_as_json_500(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    manager = BrokenManager(DirectorySource([fake_version(tmp_path)]))
    await manager.load(["iris"])
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    async with client_for(build_app(settings, manager=manager)) as client:
        response = await client.post("/v2/models/iris/infer", json=body)
        assert response.status_code == 500
        assert response.json() == {"error": "internal server error: RuntimeError; see the server log"}
        assert (await client.get("/v2/health/live")).status_code == 200
    assert "unhandled error on POST /v2/models/iris/infer" in caplog.text
    assert "a bug" in caplog.text  # the traceback is in the log, not in the answer
    manager.close()


async def test_startup_objects_are_kept_out_of_the_cyclic_gc_while_the_app_runs(
    tmp_path: Path, settings: Settings
) -> None:
    manager = ModelManager(DirectorySource([fake_version(tmp_path)]))
    await manager.load(["iris"])
    assert gc.get_freeze_count() == 0
    async with client_for(build_app(settings, manager=manager)) as client:
        assert gc.get_freeze_count() > 0  # full collections skip them: no long pauses under load
        assert (await client.get("/v2/health/live")).status_code == 200
    assert gc.get_freeze_count() == 0  # handed back at shutdown (tests build many apps)
    manager.close()
