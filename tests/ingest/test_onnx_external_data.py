"""An ONNX file may keep initializers in external files; one naming a file outside its folder
(an absolute path, ``..``) would read server files. Refused at registration (onnx.checker) and at
load (ONNX Runtime), which locks in what both libraries do today."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelport.errors import InvalidModel
from modelport.ingest.package import package
from modelport.runtimes.onnx import FILENAME, OnnxRuntime
from modelport.types import Signature, TensorSpec


def _model_reading(location: str) -> onnx.ModelProto:
    weights = numpy_helper.from_array(np.zeros(3, np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "w"], ["y"])],
        "reads",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("outside", ["absolute", "parent"])
def test_external_data_outside_the_model_folder_is_refused_at_registration_and_load(
    outside: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"SECRETDATA!!")  # 12 bytes: three float32 an Add would hand back
    folder = tmp_path / "model"
    folder.mkdir()
    location = str(secret) if outside == "absolute" else "../secret.bin"
    path = folder / FILENAME
    path.write_bytes(_model_reading(location).SerializeToString())
    with pytest.raises(InvalidModel, match=r"should be a relative path|points outside the directory"):
        package(path, workdir=tmp_path / "work", sample_input=[[0.0, 0.0, 0.0]])
    signature = Signature((TensorSpec("input", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 3)),))
    with pytest.raises(InvalidModel, match="External data path"):
        OnnxRuntime().load(folder, signature)
