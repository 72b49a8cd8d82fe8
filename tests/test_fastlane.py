"""The hot-path ASGI lane: which paths it takes, and that it hands everything else on."""

from __future__ import annotations

import pytest

from modelport.protocols.fastlane import v2_target


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
