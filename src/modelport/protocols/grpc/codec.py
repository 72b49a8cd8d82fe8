"""Open Inference Protocol gRPC messages <-> neutral types.

``ModelInferRequest`` -> :class:`InferRequest`: each input's values come either from its typed
``contents`` (the repeated field that matches its datatype) or from ``raw_input_contents`` (one
entry per input, in order: flat, row-major, little-endian; BYTES elements 4-byte length-prefixed,
which is what Triton's client sends by default). :class:`InferResult` -> ``ModelInferResponse``
answers the same way the request came: raw when the inputs were raw, typed otherwise. Array
building and checking are the REST codec's (``protocols/codec.py``); only the proto fields are
handled here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modelport.errors import InvalidInput
from modelport.protocols.codec import (
    array_from_bytes,
    array_from_json,
    array_to_bytes,
    bytes_array,
    check_datatype,
    check_shape,
    dtype_for,
    flat,
)
from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb
from modelport.signature import to_inputs
from modelport.types import InferRequest, InferResult, Signature, datatype_of

# Datatype -> the InferTensorContents field that carries it. FP16 has none: it travels raw only.
CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_infer_request(message: pb.ModelInferRequest, signature: Signature) -> InferRequest:
    """The neutral request of a ``ModelInferRequest`` for a model with ``signature``."""
    tensors = message.inputs
    if not tensors:
        raise InvalidInput("the request has no inputs; add one InferInputTensor per model input")
    raw = message.raw_input_contents
    if raw:
        if len(raw) != len(tensors):
            raise InvalidInput(
                f"raw_input_contents has {len(raw)} entries but the request has {len(tensors)} inputs; "
                "send one entry per input, in the order of 'inputs'"
            )
        typed = next((t.name for t in tensors if t.HasField("contents")), None)
        if typed is not None:
            raise InvalidInput(
                f"input {typed!r} has typed contents but the request uses raw_input_contents; "
                "send every input the same way",
                input_name=typed,
            )
    arrays: dict[str, np.ndarray] = {}
    for position, tensor in enumerate(tensors):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{position}] has no name")
        if name in arrays:
            raise InvalidInput(f"input {name!r} is given twice", input_name=name)
        shape = check_shape(name, list(tensor.shape))
        if raw:
            arrays[name] = _from_raw(name, tensor.datatype, shape, raw[position], position)
        else:
            arrays[name] = _from_contents(name, tensor.datatype, shape, tensor.contents)
        check_datatype(signature, name, tensor.datatype)
    features = signature.feature_names
    if features and signature.inputs[0].name not in arrays and not arrays.keys().isdisjoint(features):
        arrays = to_inputs(signature, arrays)  # one tensor per feature -> the model's 2-D input
    requested = tuple(out.name for out in message.outputs) or None
    return InferRequest(arrays, outputs=requested, id=message.id or None, parameters=parameters_of(message.parameters))


def _from_raw(name: str, datatype: str, shape: tuple[int, ...], data: bytes, position: int) -> np.ndarray:
    dtype = dtype_for(name, datatype)
    if datatype != "BYTES" and len(data) != math.prod(shape) * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: raw_input_contents[{position}] has {len(data)} bytes but shape {list(shape)} "
            f"of {datatype} needs {math.prod(shape) * dtype.itemsize}",
            input_name=name,
        )
    return array_from_bytes(name, datatype, shape, memoryview(data))


def _from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: pb.InferTensorContents) -> np.ndarray:
    field = CONTENTS.get(datatype)
    if field is None:
        dtype_for(name, datatype)  # an unknown datatype: say so, with the list of known ones
        raise InvalidInput(f"input {name!r}: {datatype} has no typed contents; send it in raw_input_contents")
    given = [descriptor.name for descriptor, _ in contents.ListFields()]
    if given and given != [field]:
        raise InvalidInput(
            f"input {name!r}: datatype {datatype} takes its values in contents.{field}, got contents.{given[0]}",
            input_name=name,
        )
    values: list[Any] = list(getattr(contents, field))
    if datatype == "BYTES":  # bytes as sent: the signature decides whether the model takes text
        return bytes_array(name, values, shape)
    return array_from_json(name, datatype, values, shape)


def parameters_of(parameters: Any) -> dict[str, bool | int | str]:
    """A ``map<string, InferParameter>`` as plain values (parameters of unknown kinds are left out)."""
    result: dict[str, bool | int | str] = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is not None:
            result[key] = getattr(parameter, kind)
    return result


def encode_infer_result(result: InferResult, *, raw: bool) -> pb.ModelInferResponse:
    """The ``ModelInferResponse`` of a result: raw output contents when ``raw`` (or an output has
    no typed field, as FP16), typed contents otherwise (one way for every output, as the spec asks)."""
    response = pb.ModelInferResponse(model_name=result.model_name, model_version=str(result.model_version))
    if result.id is not None:
        response.id = result.id
    signature = result.signature
    typed: list[tuple[pb.ModelInferResponse.InferOutputTensor, np.ndarray, str]] = []
    for name, arr in result.outputs.items():
        spec = signature.output(name)
        datatype = spec.datatype if spec is not None else datatype_of(arr.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        typed.append((tensor, arr, datatype))
    if raw or any(datatype not in CONTENTS for _, _, datatype in typed):
        response.raw_output_contents.extend(array_to_bytes(arr, datatype) for _, arr, datatype in typed)
        return response
    for tensor, arr, datatype in typed:
        values = flat(arr, datatype).tolist()
        if datatype == "BYTES":
            values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
        getattr(tensor.contents, CONTENTS[datatype]).extend(values)
    return response
