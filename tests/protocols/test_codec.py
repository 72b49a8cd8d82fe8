"""JSON tensor data -> NumPy: the checks hold the same on the short path (small flat lists,
checked in Python) and the long one (nested or large tensors, checked with NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.protocols.codec import (
    SMALL,
    b64_values,
    binary_values,
    check_datatype,
    flat,
    json_strings,
    loads,
    tensor_from_json,
)
from modelport.types import DATATYPES, Signature, TensorSpec

LARGE = SMALL + 4  # past the short path's size


def shapes(values: list[float | int | None]) -> list[tuple[list[object], tuple[int, ...]]]:
    """The same values flat, nested two per row, and padded past SMALL (flat)."""
    nested: list[object] = [values[i : i + 2] for i in range(0, len(values), 2)]
    padded: list[object] = [*[0] * (LARGE - len(values)), *values]
    return [(list(values), (len(values),)), (nested, (len(values) // 2, 2)), (padded, (LARGE,))]


@pytest.mark.parametrize(("data", "shape"), shapes([1.0, 2.5, -3.0, 1e39]))
def test_values_past_fp32_are_refused_on_every_path(data: list[object], shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match=r"values out of range for FP32 \(max 3.40282e\+38\)"):
        tensor_from_json("x", "FP32", data, shape)


@pytest.mark.parametrize(("data", "shape"), shapes([1, 2, -129, 4]))
def test_values_past_int8_are_refused_on_every_path(data: list[object], shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="values out of range for INT8"):
        tensor_from_json("x", "INT8", data, shape)


INTEGER_TYPES = ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]


def _json_values(literals: list[str], shape: tuple[int, ...]) -> list[object]:
    """The values as the server reads them: JSON text through the protocols' parser (orjson reads
    integer literals past 64 bits as rounded floats: -2**63 - 1 as -2.0**63)."""
    values: list[object] = loads(("[" + ",".join(literals) + "]").encode())
    if len(shape) == 2:
        return [values[i : i + 2] for i in range(0, len(values), 2)]
    return values


@pytest.mark.parametrize("datatype", INTEGER_TYPES)
@pytest.mark.parametrize("side", ["below", "above"])
@pytest.mark.parametrize("size", [2, LARGE], ids=["short", "long"])
def test_integer_literals_one_past_either_end_of_the_range_are_refused(datatype: str, side: str, size: int) -> None:
    info = np.iinfo(DATATYPES[datatype])
    past = int(info.min) - 1 if side == "below" else int(info.max) + 1
    for shape in [(size,), (size // 2, 2)]:
        data = _json_values(["1"] * (size - 1) + [str(past)], shape)
        with pytest.raises(InvalidInput, match=f"values out of range for {datatype}"):
            tensor_from_json("x", datatype, data, shape)
    edge = int(info.min) if side == "below" else int(info.max)
    arr, _ = tensor_from_json("x", datatype, _json_values(["1"] * (size - 1) + [str(edge)], (size,)), (size,))
    assert int(arr[-1]) == edge  # the ends themselves are taken, exactly


@pytest.mark.parametrize(("data", "shape"), shapes([1, 2, 70000, 4]))
def test_integers_past_fp16_are_refused(data: list[object], shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="values out of range for FP16"):
        tensor_from_json("x", "FP16", data, shape)


@pytest.mark.parametrize(("data", "shape"), shapes([1.5, -2.0, 3.4e38, 4.0]))
def test_numbers_in_range_decode_as_declared_and_are_known_finite(data: list[object], shape: tuple[int, ...]) -> None:
    arr, finite = tensor_from_json("x", "FP32", data, shape)
    assert arr.dtype == np.float32
    assert arr.shape == shape
    assert finite
    assert np.isfinite(arr).all()


@pytest.mark.parametrize(("data", "shape"), shapes([1.0, None, 3.0, 1e39]))
def test_nulls_become_nan_and_are_not_known_finite(data: list[object], shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="values out of range for FP32"):
        tensor_from_json("x", "FP32", data, shape)  # the null does not hide the overflow
    fine = [0.0 if v == 1e39 else v for v in np.asarray(data, dtype=object).ravel()]
    arr, finite = tensor_from_json("x", "FP32", fine, (len(fine),))
    assert not finite
    assert np.isnan(arr).sum() == 1


def test_same_dtype_needs_no_range_check_and_keeps_values() -> None:
    big = [2**62, -(2**62)]
    arr, finite = tensor_from_json("x", "INT64", big, (2,))
    assert arr.tolist() == big
    assert finite
    arr, _ = tensor_from_json("x", "FP64", [1e300, -1e300], (2,))
    assert arr.tolist() == [1e300, -1e300]


def test_flat_outputs_are_one_dimensional_in_the_declared_datatype() -> None:
    out = flat(np.arange(6, dtype=np.int32).reshape(2, 3), "INT64")
    assert out.dtype == np.int64
    assert out.shape == (6,)
    same = np.arange(3, dtype=np.float32)
    assert flat(same, "FP32") is same


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([True, False], "got booleans"),
        ([1.0, "2"], "got strings"),
        (["1", "2"], "got strings"),
        ([1.0, [2.0]], "'data' is not a rectangular array"),
    ],
)
def test_small_flat_lists_that_are_not_plain_numbers_get_the_general_checks(data: list[object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        tensor_from_json("x", "FP32", data, (len(data),))


# -- BYTES and declared datatypes ---------------------------------------------------------------


def test_binary_tensor_data_keeps_bytes_exactly_as_sent() -> None:
    from modelport.protocols.codec import array_from_bytes

    items = [b"\x89PNG\x00", b"", b"\xff\xfe\x00\x00"]
    buffer = b"".join(len(item).to_bytes(4, "little") + item for item in items)
    assert array_from_bytes("x", "BYTES", (3,), memoryview(buffer)).tolist() == items


FLOAT_AND_INT = Signature((TensorSpec("input", "FP32", (-1, 2)), TensorSpec("count", "INT64", (-1,))), ())
BY_FEATURE = Signature((TensorSpec("input", "FP32", (-1, 2), feature_names=("a", "b")),), ())


@pytest.mark.parametrize(
    ("name", "datatype"),
    [("input", "FP32"), ("input", "FP64"), ("input", "FP16"), ("a", "FP64"), ("count", "INT8"), ("count", "UINT64")],
)
def test_a_declared_datatype_of_the_inputs_family_is_accepted(name: str, datatype: str) -> None:
    check_datatype(BY_FEATURE if name == "a" else FLOAT_AND_INT, name, datatype)  # cast later, range-checked


@pytest.mark.parametrize(
    ("name", "datatype", "message"),
    [
        ("input", "INT64", "input 'input': expected datatype FP32, got INT64; send FP16, FP32 or FP64"),
        ("b", "BYTES", "input 'b': expected datatype FP32, got BYTES; send FP16, FP32 or FP64"),
        ("input", "BOOL", "input 'input': expected datatype FP32, got BOOL"),
        ("count", "FP64", "input 'count': expected datatype INT64, got FP64; send one of INT8-INT64, UINT8-UINT64"),
        ("count", "BYTES", "input 'count': expected datatype INT64, got BYTES"),
    ],
)
def test_a_declared_datatype_of_another_family_is_refused_never_cast(name: str, datatype: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_datatype(BY_FEATURE if name == "b" else FLOAT_AND_INT, name, datatype)
    assert str(info.value).startswith(message)


def test_unknown_inputs_and_datatypes_are_left_to_the_checks_that_name_them() -> None:
    check_datatype(FLOAT_AND_INT, "other", "BYTES")
    check_datatype(FLOAT_AND_INT, "input", "FLOAT")


def test_bytes_outputs_are_json_strings_when_utf8_else_base64_throughout() -> None:
    assert json_strings(["a", "é".encode(), b""]) == (["a", "é", ""], False)
    assert json_strings(["a", b"\xff\x00"]) == (["YQ==", "/wA="], True)


def test_b64_objects_become_bytes_only_for_models_with_bytes_inputs() -> None:
    data = {"instances": [{"b64": "/wA="}, {"blob": {"b64": "YQ=="}, "n": [1, 2]}]}
    with_bytes = Signature((TensorSpec("blob", "BYTES", (-1,)),), ())
    assert binary_values(data, with_bytes) == {"instances": [b"\xff\x00", {"blob": b"a", "n": [1, 2]}]}
    assert binary_values(data, FLOAT_AND_INT) is data
    assert b64_values([[b"\xff", "x"]]) == [[{"b64": "/w=="}, "x"]]


@pytest.mark.parametrize("size", [2, LARGE], ids=["short", "long"])
def test_uint64_values_past_2_63_beside_small_ones_keep_every_digit(size: int) -> None:
    """NumPy reads ``[1, 2**63 + 1]`` as float64, where 2**63 + 1 is 2**63: the values are taken exactly."""
    for big in [2**63 + 1, 2**64 - 1]:
        data = _json_values(["1"] * (size - 1) + [str(big)], (size,))
        arr, _ = tensor_from_json("x", "UINT64", data, (size,))
        assert arr.dtype == np.uint64
        assert int(arr[-1]) == big
        assert int(arr[0]) == 1
