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
    example = example_of(arrays)
    assert example is not None
    assert example["input"] == frame.head(3).to_numpy().tolist()


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


def test_dataframe_with_text_columns_becomes_one_input_per_column() -> None:
    frame = pd.DataFrame({"color": ["red", "blue"], "size": [0.5, 1.5], "count": [1, 2]})
    frame["kind"] = pd.Categorical(["a", "b"])
    arrays, names = sample_arrays(frame)
    assert names == ("color", "size", "count", "kind")
    assert {name: (arr.dtype.kind, arr.tolist()) for name, arr in arrays.items()} == {
        "color": ("O", ["red", "blue"]),
        "size": ("f", [0.5, 1.5]),
        "count": ("i", [1, 2]),
        "kind": ("O", ["a", "b"]),
    }
    assert [(s.name, s.datatype, s.shape) for s in input_specs(arrays, names)] == [
        ("color", "BYTES", (-1,)),
        ("size", "FP64", (-1,)),
        ("count", "INT64", (-1,)),
        ("kind", "BYTES", (-1,)),
    ]


def test_dataframe_rows_and_columns_map_onto_per_column_inputs_by_name() -> None:
    specs = (
        TensorSpec("color", "BYTES", (-1,)),
        TensorSpec("size", "FP32", (-1,)),
        TensorSpec("count", "INT64", (-1,)),
    )
    sig = Signature(specs, ())
    frame = pd.DataFrame({"color": ["red", "blue"], "size": [0.5, 1.5], "count": [1, 2]})
    for data in (frame, frame.to_dict(orient="records"), frame.to_dict(orient="list")):
        got = validate_inputs(sig, to_inputs(sig, data))
        assert got["color"].tolist() == ["red", "blue"]
        np.testing.assert_array_equal(got["size"], np.array([0.5, 1.5], np.float32))
        np.testing.assert_array_equal(got["count"], np.array([1, 2], np.int64))
    with pytest.raises(InvalidInput, match="missing input 'count'"):
        validate_inputs(sig, to_inputs(sig, frame.drop(columns="count")))


@pytest.mark.parametrize(
    "data",
    [
        [{"sepal_length": True, "sepal_width": 1.0, "petal_length": 2.0, "petal_width": 3.0}],
        [[False, 1.0, 2.0, 3.0]],
        {"input": [[1.0, 2.0, True, 3.0]]},
        {"sepal_length": [1.0, True], **{feature: [1.0, 2.0] for feature in FEATURES[1:]}},
    ],
    ids=["feature-row", "list-row", "named-tensor", "feature-column"],
)
def test_booleans_among_the_numbers_of_a_numeric_input_are_refused(signature: Signature, data: object) -> None:
    with pytest.raises(InvalidInput, match="expected datatype FP32, got non-numeric values \\(a boolean\\)"):
        validate_inputs(signature, to_inputs(signature, data))


def test_nan_refusal_says_how_to_get_missing_values_accepted(signature: Signature) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_inputs(signature, {"input": np.array([[np.nan, 1.0, 2.0, 3.0]])})
    message = str(info.value)
    assert "fill in missing values before sending" in message
    assert "register a model that handles them" in message
    assert "include rows with NaN in the registration sample" in message


def test_whole_floats_out_of_range_for_an_integer_input_are_refused() -> None:
    sig = Signature((TensorSpec("count", "INT64", (-1,)), TensorSpec("small", "INT8", (-1,))), ())
    ok = validate_inputs(sig, {"count": np.array([-(2.0**63), 3.0]), "small": np.array([127.0, -128.0])})
    assert ok["count"].tolist() == [-(2**63), 3]
    for count, small in (([-5.0, 2.0**63], [1.0, 2.0]), ([1.0, 2.0], [1.0, 300.0])):
        with pytest.raises(InvalidInput, match="values out of range for INT"):
            validate_inputs(sig, {"count": np.array(count), "small": np.array(small)})


@pytest.mark.parametrize("datatype", ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"])
def test_integers_from_json_one_past_either_end_are_refused_and_the_ends_kept_exactly(datatype: str) -> None:
    """Rows as TF Serving and SageMaker JSON give them: orjson reads integer literals past 64 bits as
    rounded floats (-2**63 - 1 as -2.0**63), and NumPy reads [1, 2**64 - 1] as floats."""
    import orjson

    from modelport.types import DATATYPES

    signature = Signature((TensorSpec("x", datatype, (-1, 2)),), ())
    info = np.iinfo(DATATYPES[datatype])
    for past in (int(info.min) - 1, int(info.max) + 1):
        with pytest.raises(InvalidInput, match=f"values out of range for {datatype}"):
            validate_inputs(signature, to_inputs(signature, orjson.loads(f"[[1, {past}]]")))
    for edge in (int(info.min), int(info.max), int(info.max) - 1):
        got = validate_inputs(signature, to_inputs(signature, orjson.loads(f"[[1, {edge}]]")))["x"]
        assert int(got[0, 1]) == edge
