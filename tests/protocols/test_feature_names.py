"""A misspelled feature name is reported as what it is, on every protocol that takes named
features: the missing feature, the unknown key that was sent instead, and the feature it looks like."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pandas as pd
import pytest
from httpx import AsyncClient

from modelport.errors import InvalidInput
from modelport.server.app import build_app
from modelport.settings import Settings
from modelport.signature import to_inputs
from modelport.types import Signature, TensorSpec
from tests.support.serving import client_for, register_iris

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
TYPO = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_widht": 0.2}
SAID = (
    "missing feature 'petal_width'; unknown feature 'petal_widht', did you mean 'petal_width'? "
    f"(features: {', '.join(FEATURES)})"
)
SIGNATURE = Signature(
    inputs=(TensorSpec("input", "FP32", (-1, 4), feature_names=FEATURES),),
    outputs=(TensorSpec("label", "INT64", (-1,)),),
)


def _v2_per_feature() -> dict[str, Any]:
    tensors = [{"name": k, "shape": [1], "datatype": "FP32", "data": [v]} for k, v in TYPO.items()]
    return {"inputs": tensors}


BODIES = [
    ("v2 one tensor per feature", "/v2/models/iris/infer", _v2_per_feature(), SAID),
    ("tf serving rows", "/v1/models/iris:predict", {"instances": [TYPO]}, f"row 0: {SAID}"),
    ("tf serving columns", "/v1/models/iris:predict", {"inputs": {k: [v] for k, v in TYPO.items()}}, SAID),
    ("sagemaker rows", "/invocations", {"instances": [TYPO]}, f"row 0: {SAID}"),
    ("sagemaker columns", "/invocations", {"inputs": {k: [v] for k, v in TYPO.items()}}, SAID),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> dict[str, Settings]:
    """The registered Iris served from the registry, and exported and served as a SageMaker container."""
    from modelport.registry.export import export_version
    from modelport.registry.registry import Registry

    root = tmp_path_factory.mktemp("features")
    settings = Settings(home=root / "home")
    version, _ = register_iris(settings, iris, aliases=("production",))
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), root / "export")
    sagemaker = Settings(home=root / "sagemaker", sagemaker=True, sagemaker_model_dir=root / "export")
    return {"registry": settings.with_(models=("iris@production",)), "sagemaker": sagemaker}


@pytest.fixture
async def client(servers: dict[str, Settings], request: pytest.FixtureRequest) -> AsyncIterator[AsyncClient]:
    which = "sagemaker" if request.node.callspec.params["path"] == "/invocations" else "registry"
    async with client_for(build_app(servers[which])) as client:
        yield client


@pytest.mark.parametrize(("path", "body", "message"), [b[1:] for b in BODIES], ids=[b[0] for b in BODIES])
async def test_a_misspelled_feature_is_named_beside_the_missing_one(
    client: AsyncClient, path: str, body: dict[str, Any], message: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == message


def test_python_data_with_a_misspelled_feature_names_it() -> None:
    with pytest.raises(InvalidInput) as frame_error:
        to_inputs(SIGNATURE, pd.DataFrame([TYPO]))
    assert str(frame_error.value) == SAID
    with pytest.raises(InvalidInput) as rows_error:
        to_inputs(SIGNATURE, [TYPO])
    assert str(rows_error.value) == f"row 0: {SAID}"


def test_an_unknown_key_unlike_any_feature_is_named_without_a_guess() -> None:
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "colour": 2.0}
    with pytest.raises(InvalidInput) as error:
        to_inputs(SIGNATURE, {k: [v] for k, v in row.items()})
    assert str(error.value).startswith("missing feature 'petal_width'; unknown feature 'colour' (features: ")
    assert error.value.input_name == "petal_width"


def test_grpc_per_feature_tensors_with_a_misspelled_feature_name_it() -> None:
    pytest.importorskip("grpc")
    from modelport.protocols.grpc.codec import decode_infer_request
    from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name="iris")
    for name, value in TYPO.items():
        request.inputs.add(name=name, datatype="FP32", shape=[1]).contents.fp32_contents.append(value)
    with pytest.raises(InvalidInput) as error:
        decode_infer_request(request, SIGNATURE)
    assert str(error.value) == SAID
