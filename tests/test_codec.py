"""JSON tensor data -> NumPy: the checks hold the same on the short path (small flat lists,
checked in Python) and the long one (nested or large tensors, checked with NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.protocols.codec import SMALL, flat, tensor_from_json

LARGE = SMALL + 4  # past the short path's size


def shapes(values: list[float | int | None]) -> list[tuple[list[object], tuple[int, ...]]]:
    """The same values flat, nested two per row, and padded past SMALL (flat)."""
    nested: list[object] = [values[i : i + 2] for i in range(0, len(values), 2)]
    padded = [0] * (LARGE - len(values)) + values
    return [(list(values), (len(values),)), (nested, (len(values) // 2, 2)), (padded, (LARGE,))]


@pytest.mark.parametrize(("data", "shape"), shapes([1.0, 2.5, -3.0, 1e39]))
def test_values_past_fp32_are_refused_on_every_path(data: list[object], shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match=r"values out of range for FP32 \(max 3.40282e\+38\)"):
        tensor_from_json("x", "FP32", data, shape)


@pytest.mark.parametrize(("data", "shape"), shapes([1, 2, -129, 4]))
def test_values_past_int8_are_refused_on_every_path(data: list[object], shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="values out of range for INT8"):
        tensor_from_json("x", "INT8", data, shape)


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
