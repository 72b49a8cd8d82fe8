"""Open Inference Protocol gRPC messages <-> neutral types, one message at a time."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.signature import validate_inputs
from modelport.types import InferResult, Signature, TensorSpec

pytest.importorskip("grpc")
from modelport.protocols.grpc.codec import decode_infer_request, encode_infer_result, parameters_of
from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb

SIGNATURE = Signature(
    inputs=(TensorSpec("text", "BYTES", (-1,)), TensorSpec("x", "INT8", (-1, 2))),
    outputs=(TensorSpec("half", "FP16", (-1,)), TensorSpec("label", "BYTES", (-1,))),
)


def _bytes(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_raw_contents_decode_length_prefixed_bytes_and_little_endian_numbers() -> None:
    request = pb.ModelInferRequest(model_name="m", id="r1")
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.inputs.add(name="x", datatype="INT8", shape=[2, 2])
    request.raw_input_contents.extend([_bytes("héllo".encode(), b""), bytes([1, 255, 3, 4])])
    request.outputs.add(name="label")
    request.parameters["priority"].int64_param = 3
    decoded = decode_infer_request(request, SIGNATURE)
    assert decoded.inputs["text"].tolist() == ["héllo".encode(), b""]  # bytes as sent
    assert validate_inputs(SIGNATURE, decoded.inputs)["text"].tolist() == ["héllo", ""]  # a text input: str
    np.testing.assert_array_equal(decoded.inputs["x"], np.array([[1, -1], [3, 4]], dtype=np.int8))
    assert (decoded.outputs, decoded.id, dict(decoded.parameters)) == (("label",), "r1", {"priority": 3})


def test_typed_contents_decode_through_the_datatype_field() -> None:
    request = pb.ModelInferRequest(model_name="m")
    text = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(b"ok")
    x = request.inputs.add(name="x", datatype="INT8", shape=[1, 2])
    x.contents.int_contents.extend([-5, 7])
    decoded = decode_infer_request(request, SIGNATURE)
    assert validate_inputs(SIGNATURE, decoded.inputs)["text"].tolist() == ["ok"]
    assert decoded.inputs["x"].dtype == np.int8
    assert decoded.inputs["x"].tolist() == [[-5, 7]]
    assert (decoded.outputs, decoded.id) == (None, None)


def _typed(datatype: str, field: str, values: list[object], shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_typed("FP32", "int_contents", [1, 2], [2]), "datatype FP32 takes its values in contents.fp32_contents"),
        (_typed("INT8", "int_contents", [1, 300], [2]), "values out of range for INT8"),
        (_typed("FP16", "fp32_contents", [1.0], [1]), "FP16 has no typed contents; send it in raw_input_contents"),
        (_typed("FLOAT", "fp32_contents", [1.0], [1]), "unknown datatype 'FLOAT'"),
        (_typed("FP32", "fp32_contents", [1.0, 2.0, 3.0], [2, 2]), r"shape \[2, 2\] needs 4 values but 'data' has 3"),
        (_typed("INT8", "fp32_contents", [1.0], [1]), "datatype INT8 takes its values in contents.int_contents"),
        (_typed("FP64", "fp64_contents", [1.0], [1]), "input 'x': expected datatype INT8, got FP64; send one of"),
        (pb.ModelInferRequest(model_name="m"), "the request has no inputs"),
    ],
)
def test_malformed_requests_say_what_is_wrong(request_: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_infer_request(request_, SIGNATURE)


def test_text_inputs_refuse_bytes_that_are_not_utf8_and_binary_inputs_keep_them() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"ok", b"\xff\x00"])
    request.inputs.add(name="x", datatype="INT8", shape=[2, 2]).contents.int_contents.extend([1, 2, 3, 4])
    decoded = decode_infer_request(request, SIGNATURE)
    with pytest.raises(InvalidInput, match=r"input 'text': value 1 is not UTF-8 text .* and this model takes text"):
        validate_inputs(SIGNATURE, decoded.inputs)
    binary = Signature((TensorSpec("text", "BYTES", (-1,), binary=True), SIGNATURE.inputs[1]), SIGNATURE.outputs)
    assert validate_inputs(binary, decode_infer_request(request, binary).inputs)["text"].tolist() == [
        b"ok",
        b"\xff\x00",
    ]


def test_raw_and_typed_contents_do_not_mix_and_raw_needs_one_entry_per_input() -> None:
    request = _typed("FP32", "fp32_contents", [1.0], [1])
    request.raw_input_contents.append(struct.pack("<f", 1.0))
    with pytest.raises(InvalidInput, match="input 'x' has typed contents but the request uses raw_input_contents"):
        decode_infer_request(request, SIGNATURE)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="a", datatype="FP32", shape=[1])
    request.inputs.add(name="b", datatype="FP32", shape=[1])
    request.raw_input_contents.append(struct.pack("<f", 1.0))
    with pytest.raises(InvalidInput, match="raw_input_contents has 1 entries but the request has 2 inputs"):
        decode_infer_request(request, SIGNATURE)
    request.raw_input_contents.append(b"\x00")
    with pytest.raises(
        InvalidInput, match=r"input 'b': raw_input_contents\[1\] has 1 bytes but shape \[1\] of FP32 needs 4"
    ):
        decode_infer_request(request, SIGNATURE)


def _result() -> InferResult:
    labels = np.array(["a", "bé"], dtype=object)
    return InferResult("m", 3, {"half": np.array([0.5, -2.0], dtype=np.float16), "label": labels}, SIGNATURE, id="q")


def test_results_encode_raw_when_asked_and_when_an_output_has_no_typed_field() -> None:
    for raw in (True, False):  # FP16 has no typed field, so every output goes raw (the spec forbids mixing)
        response = encode_infer_result(_result(), raw=raw)
        assert (response.model_name, response.model_version, response.id) == ("m", "3", "q")
        assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
            ("half", "FP16", [2]),
            ("label", "BYTES", [2]),
        ]
        assert not any(o.HasField("contents") for o in response.outputs)
        half, label = response.raw_output_contents
        assert np.frombuffer(half, dtype="<f2").tolist() == [0.5, -2.0]
        assert label == _bytes(b"a", "bé".encode())


def test_results_encode_typed_when_the_request_was_typed() -> None:
    result = InferResult("m", 1, {"label": np.array(["x", "y"], dtype=object)}, SIGNATURE)
    response = encode_infer_result(result, raw=False)
    assert not response.raw_output_contents
    assert list(response.outputs[0].contents.bytes_contents) == [b"x", b"y"]
    assert response.id == ""


def test_parameters_become_plain_values() -> None:
    request = pb.ModelInferRequest()
    request.parameters["a"].bool_param = True
    request.parameters["b"].string_param = "s"
    request.parameters["c"].CopyFrom(pb.InferParameter())  # no value set: left out
    assert parameters_of(request.parameters) == {"a": True, "b": "s"}
