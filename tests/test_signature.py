from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelport.errors import InvalidInput
from modelport.signature import (
    example_of,
    input_specs,
    sample_arrays,
    select_outputs,
    to_inputs,
    validate_inputs,
)
from modelport.types import Signature, TensorSpec

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture
def signature() -> Signature:
    spec = TensorSpec("input", "FP32", (-1, 4), feature_names=FEATURES)
    return Signature((spec,), (TensorSpec("label", "BYTES", (-1,)),), example={"input": [[5.1, 3.5, 1.4, 0.2]]})


def test_dataframe_columns_become_feature_names(iris: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, _ = iris
    arrays, names = sample_arrays(frame)
    specs = input_specs(arrays, names)
    assert specs == (TensorSpec("input", "FP64", (-1, 4), feature_names=FEATURES),)
    assert example_of(arrays)["input"] == frame.head(3).to_numpy().tolist()


def test_row_dicts_and_dataframe_give_the_same_tensor(
    signature: Signature, iris: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, _ = iris
    head = frame.head(5)
    from_frame = validate_inputs(signature, to_inputs(signature, head))["input"]
    from_rows = validate_inputs(signature, to_inputs(signature, head.to_dict(orient="records")))["input"]
    from_columns = validate_inputs(signature, to_inputs(signature, head.to_dict(orient="list")))["input"]
    from_list = validate_inputs(signature, to_inputs(signature, head.to_numpy().tolist()))["input"]
    expected = head.to_numpy().astype(np.float32)
    for got in (from_frame, from_rows, from_columns, from_list):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_columns_are_reordered_by_name(signature: Signature) -> None:
    row = {"petal_width": 4, "petal_length": 3, "sepal_width": 2, "sepal_length": 1}
    np.testing.assert_array_equal(validate_inputs(signature, to_inputs(signature, [row]))["input"], [[1, 2, 3, 4]])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([[1, 2, 3]], "input 'input': expected shape [-1, 4], got [1, 3]"),
        ([1, 2, 3, 4], "input 'input': expected shape [-1, 4], got [4]"),
        ([[1, 2, 3, float("nan")]], "input 'input': contains NaN or infinity, which this model does not accept"),
        ([[1, 2, 3, 1e39]], "input 'input': values out of range for FP32"),
        ([[1, 2, 3, float("inf")]], "input 'input': contains NaN or infinity"),
        ([["a", 2, 3, 4]], "input 'input': expected datatype FP32, got non-numeric values"),
        ([{"sepal_length": 1}], "row 0: missing feature 'sepal_width'"),
        ([{**dict.fromkeys(FEATURES, 1), "colour": 2}], "row 0: unknown feature 'colour'"),
        ({"input": [[1, 2, 3, 4]], "other": [1]}, "unknown input 'other' (expected: input)"),
        ([[1, 2], [1, 2, 3, 4]], "input 'input' is not a rectangular array"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_the_problem(
    signature: Signature, data: object, message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_inputs(signature, to_inputs(signature, data))
    assert message in str(info.value)


def test_integer_tensor_refuses_fractions_and_out_of_range_values() -> None:
    sig = Signature((TensorSpec("x", "INT8", (-1,)),), ())
    np.testing.assert_array_equal(validate_inputs(sig, {"x": np.array([1.0, 2.0])})["x"], np.array([1, 2], np.int8))
    with pytest.raises(InvalidInput, match="expected datatype INT8, got FP64"):
        validate_inputs(sig, {"x": np.array([1.5])})
    with pytest.raises(InvalidInput, match="values out of range for INT8"):
        validate_inputs(sig, {"x": np.array([300])})


def test_missing_input_and_row_count_mismatch_are_named() -> None:
    sig = Signature((TensorSpec("a", "FP64", (-1,)), TensorSpec("b", "FP64", (-1,))), ())
    with pytest.raises(InvalidInput, match="missing input 'b'"):
        validate_inputs(sig, {"a": np.ones(2)})
    with pytest.raises(InvalidInput, match="input 'b': has 3 rows but other inputs have 2"):
        validate_inputs(sig, {"a": np.ones(2), "b": np.ones(3)})


def test_nan_allowed_when_the_sample_had_nan() -> None:
    arrays, _ = sample_arrays(np.array([[1.0, np.nan]]))
    sig = Signature(input_specs(arrays), ())
    assert validate_inputs(sig, {"input": np.array([[np.nan, 2.0]])})["input"].shape == (1, 2)


def test_nan_scan_is_skipped_only_for_inputs_named_finite(signature: Signature) -> None:
    rows = np.array([[1.0, np.nan, 3.0, 4.0]], dtype=np.float32)
    with pytest.raises(InvalidInput, match="contains NaN or infinity"):
        validate_inputs(signature, {"input": rows}, finite=("other",))
    assert validate_inputs(signature, {"input": rows}, finite=("input",))["input"] is rows


def test_signature_roundtrips_through_json_dict(signature: Signature) -> None:
    assert Signature.from_dict(signature.to_dict()) == signature


def test_output_selection_keeps_order_and_names_unknown_outputs() -> None:
    outputs = {"label": np.array([1]), "probabilities": np.array([[0.2, 0.8]])}
    assert list(select_outputs(outputs, ["probabilities", "label"])) == ["probabilities", "label"]
    with pytest.raises(InvalidInput, match=r"unknown output 'score' \(outputs: label, probabilities\)"):
        select_outputs(outputs, ["score"])
