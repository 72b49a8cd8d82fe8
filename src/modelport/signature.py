"""Signatures from sample input, user data into input arrays, and input validation.

The same rules serve the Python API (``model.predict(df)``), the CLI and every protocol, so a
request is judged the same way wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from modelport.errors import InvalidInput
from modelport.types import DATATYPES, Signature, TensorSpec, datatype_of, dtype_of

T = TypeVar("T")

DEFAULT_INPUT = "input"
EXAMPLE_ROWS = 3
NAN_HINT = (
    "fill in missing values before sending, or register a model that handles them (e.g. HistGradientBoosting, "
    "or a Pipeline starting with SimpleImputer): modelport asks a scikit-learn, XGBoost or LightGBM model at "
    "registration and `modelport show` says what it found; include rows with NaN in the registration sample "
    "for an ONNX file, a custom model, or a model whose ONNX conversion answers NaN differently"
)


def _is_dataframe(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")


def sample_arrays(sample: Any) -> tuple[dict[str, np.ndarray], tuple[str, ...] | None]:
    """Turn a sample input (ndarray, DataFrame, list of row dicts, list of rows, or a dict of
    named arrays) into named arrays, with feature names where the sample has column names."""
    if _is_dataframe(sample):
        names = tuple(str(c) for c in sample.columns)
        kinds = {np.dtype(t).kind if isinstance(t, np.dtype) else "O" for t in sample.dtypes}
        if kinds <= {"f", "i", "u", "b"}:
            return {DEFAULT_INPUT: sample.to_numpy()}, names
        return frame_columns(sample), names  # text or categorical columns: one input per column
    if isinstance(sample, Mapping):
        return {str(k): _array(v, str(k)) for k, v in sample.items()}, None
    if _is_row_objects(sample):
        names = tuple(str(k) for k in sample[0])
        for row in sample:
            if tuple(str(k) for k in row) != names:
                raise InvalidInput("every row of the sample must have the same keys in order")
        return {DEFAULT_INPUT: _array([list(row.values()) for row in sample], DEFAULT_INPUT)}, names
    return {DEFAULT_INPUT: _array(sample, DEFAULT_INPUT)}, None


def frame_columns(frame: Any) -> dict[str, np.ndarray]:
    """A DataFrame as one 1-D array per column, named by the column: numeric and boolean columns
    keep their dtype, text and categorical columns become object arrays of their values."""
    columns: dict[str, np.ndarray] = {}
    for column in frame.columns:
        series = frame[column]
        arr = np.asarray(series.to_numpy())
        inner = series.cat.categories if getattr(series.dtype, "name", "") == "category" else None
        if inner is not None and inner.dtype.kind in "biuf" and not series.isna().any():
            arr = arr.astype(inner.dtype)  # a categorical of numbers: the numbers
        elif arr.dtype.kind not in "biuf":
            arr = arr.astype(object)
        columns[str(column)] = arr
    return columns


def per_column(signature: Signature) -> bool:
    """Whether every input of the model is 1-D: one column each (as registered from a DataFrame
    with text or categorical columns), so a DataFrame or row objects map onto them by name."""
    return bool(signature.inputs) and all(len(spec.shape) == 1 for spec in signature.inputs)


def _is_row_objects(data: Any) -> bool:
    return (
        isinstance(data, Sequence)
        and not isinstance(data, str | bytes)
        and bool(data)
        and all(isinstance(row, Mapping) for row in data)
    )


def _array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        values = _values(value)  # text and bytes together: NumPy has no one string type for them
        if values is None:
            raise InvalidInput(f"input {name!r} is not a rectangular array: {exc}", input_name=name) from None
        arr = values
    if arr.dtype.kind in "US":
        # Text or bytes: keep the values themselves. NumPy's own strings would turn numbers and
        # nulls among them into text, and strip trailing NUL bytes off every value.
        arr = np.array(value, dtype=object) if isinstance(value, list | tuple) else arr.astype(object)
    if arr.dtype.kind not in "biufO":
        raise InvalidInput(f"input {name!r} has unsupported type {arr.dtype}", input_name=name)
    return arr


def _values(value: Any) -> np.ndarray | None:
    """Nested lists as an object array of their values, or None when they are not rectangular."""
    if not isinstance(value, list | tuple):
        return None
    try:
        arr = np.array(value, dtype=object)
    except ValueError:
        return None
    return None if any(isinstance(v, list | tuple) for v in arr.flat) else arr


def input_specs(
    arrays: Mapping[str, np.ndarray], feature_names: tuple[str, ...] | None = None
) -> tuple[TensorSpec, ...]:
    """Tensor specs for sample arrays: batch dimension free, the rest as in the sample."""
    specs = []
    for name, arr in arrays.items():
        if arr.ndim == 0:
            raise InvalidInput(f"sample input {name!r} is a scalar; give at least one row", input_name=name)
        allow_nan = arr.dtype.kind == "f" and bool(np.isnan(arr).any())
        names = feature_names if arr.ndim == 2 and feature_names and len(feature_names) == arr.shape[1] else None
        spec = TensorSpec(name, datatype_of(arr.dtype), (-1, *arr.shape[1:]), feature_names=names, allow_nan=allow_nan)
        specs.append(replace(spec, binary=True) if _holds_bytes(name, arr) else spec)
    return tuple(specs)


def _holds_bytes(name: str, arr: np.ndarray) -> bool:
    """Whether a sample's values are bytes (the model takes binary data) rather than text."""
    if arr.dtype.kind != "O":
        return arr.dtype.kind == "S"
    kinds = {bytes if isinstance(v, bytes) else str if isinstance(v, str) else None for v in arr.flat}
    if kinds == {bytes, str}:
        raise InvalidInput(
            f"sample input {name!r} mixes text (str) and bytes; give str values for a model that takes text, "
            "bytes for one that takes binary data (images, protobufs)",
            input_name=name,
        )
    return kinds == {bytes}


def example_of(arrays: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """A few rows of each input as JSON-ready nested lists.

    Bytes are kept as the text they encode, so the example sent as JSON strings reaches the
    model as the same bytes; None (no example) when some are not UTF-8 and JSON cannot hold them.
    """
    example: dict[str, Any] = {}
    for name, arr in arrays.items():
        rows = arr[:EXAMPLE_ROWS]
        if rows.dtype.kind in "OS" and _holds_bytes(name, rows):
            try:
                rows = np.frompyfunc(lambda v: v.decode("utf-8"), 1, 1)(rows)
            except UnicodeDecodeError:
                return None
        example[name] = rows.tolist()
    return example


def output_specs(outputs: Mapping[str, np.ndarray]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, datatype_of(arr.dtype), (-1, *arr.shape[1:])) for name, arr in outputs.items())


def to_inputs(signature: Signature, data: Any) -> dict[str, np.ndarray]:
    """Turn user data into the signature's named input arrays (not yet validated).

    Accepts a dict of tensors by input name, a dict of columns by feature name, a DataFrame,
    a list of row dicts keyed by feature name, an ndarray or a list of rows (one-input models).
    """
    features = signature.feature_names
    only = signature.inputs[0].name if len(signature.inputs) == 1 else None
    if _is_dataframe(data):
        if features is not None and only is not None:
            return {only: _columns(data, features, lambda frame, col: frame[col].to_numpy())}
        if per_column(signature):
            return frame_columns(data)
        raise InvalidInput("this model takes named tensors, not a DataFrame")
    if isinstance(data, Mapping):
        if features and only and only not in data:
            return {
                only: _columns(data, features, lambda cols, col: _typed(signature, cols[col], col, only).reshape(-1))
            }
        return {str(k): _typed(signature, v, str(k)) for k, v in data.items()}
    if _is_row_objects(data):
        return rows_to_inputs(signature, data)
    if only is None:
        raise InvalidInput(f"this model takes {len(signature.inputs)} named inputs; pass a dict of arrays")
    return {only: _typed(signature, data, only)}


def rows_to_inputs(signature: Signature, rows: Sequence[Any]) -> dict[str, np.ndarray]:
    """Rows given as objects: keyed by feature name (one 2-D input) or by input name."""
    features = signature.feature_names
    if features and len(signature.inputs) == 1:
        only = signature.inputs[0].name
        missing = [f for f in features if f not in rows[0]]
        if not missing or only not in rows[0]:
            return {only: _typed(signature, _rows_by_feature(rows, features), only)}
    names = [spec.name for spec in signature.inputs]
    out: dict[str, np.ndarray] = {}
    for row_no, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInput(f"row {row_no} is not an object; give every row in the same form")
        unknown = sorted(set(row) - set(names))
        if unknown:
            raise InvalidInput(f"row {row_no}: unknown input {unknown[0]!r} (expected: {', '.join(names)})")
    for name in names:
        try:
            out[name] = _typed(signature, [row[name] for row in rows], name)
        except KeyError:
            raise InvalidInput(
                f"missing input {name!r} in a row (expected: {', '.join(names)})", input_name=name
            ) from None
    return out


def _typed(signature: Signature, value: Any, name: str, input_name: str | None = None) -> np.ndarray:
    """:func:`_array` for input ``input_name`` (``name`` when None), refusing booleans among the
    numbers of a numeric input: NumPy would read them as 0 and 1 (booleans alone are refused later)."""
    arr = _array(value, name)
    if arr.dtype.kind in "iuf" and isinstance(value, list | tuple) and _holds_bool(value):
        spec = signature.input(input_name or name)
        if spec is not None and spec.datatype != "BOOL":
            raise InvalidInput(
                f"input {spec.name!r}: expected datatype {spec.datatype}, got non-numeric values (a boolean)",
                input_name=spec.name,
            )
    if arr.dtype.kind == "f" and arr.size and isinstance(value, list | tuple):
        spec = signature.input(input_name or name)
        if (
            spec is not None
            and spec.datatype in DATATYPES
            and DATATYPES[spec.datatype].kind in "iu"
            and np.isfinite(arr).all()
            and float(np.abs(arr).max()) >= EXACT_FLOATS
        ):
            return exact_integers(spec.name, spec.datatype, value)
    return arr


EXACT_FLOATS = 2.0**53  # from here on not every integer is a float


def exact_integers(name: str, datatype: str, data: Any) -> np.ndarray:
    """``data`` (nested lists) as an array of the integer ``datatype``, for when NumPy read it as
    floats past 2**53, where floats lose integers: from mixed 64-bit values (``[1, 2**64 - 1]`` is
    float64 to NumPy, and 2**64 when rounded) or from JSON integer literals past 64 bits, which
    orjson reads as rounded floats (-2**63 - 1 as -2.0**63, inside the range). Python's ints are
    checked exactly; floats must be within the range with room for rounding (so never -2.0**63 or
    2.0**63 for INT64)."""
    dtype = dtype_of(datatype)
    info = np.iinfo(dtype)
    low, high = _FLOAT_INTEGERS[dtype]
    values = np.array(data, dtype=object)
    for value in values.flat:
        if type(value) is not int and not float(value).is_integer():
            raise InvalidInput(f"input {name!r}: expected datatype {datatype}, got fractional numbers", input_name=name)
        if not (info.min <= value <= info.max if type(value) is int else low <= value <= high):
            raise InvalidInput(f"input {name!r}: values out of range for {datatype}", input_name=name)
    return values.astype(dtype)


def _float_integers(dtype: np.dtype[Any]) -> tuple[float, float]:
    """The floats that stand for a value of the integer ``dtype`` beyond doubt: below 2**bits (a
    power of two, so exact) and, for 64-bit signed types, above -2.0**63, which an integer literal
    just past the range rounds to."""
    info = np.iinfo(dtype)
    high = float(np.nextafter(float(int(info.max) + 1), 0.0))
    low = float(info.min) if info.bits < 64 or info.min == 0 else float(np.nextafter(float(info.min), 0.0))
    return low, high


_FLOAT_INTEGERS = {dt: _float_integers(dt) for dt in DATATYPES.values() if dt.kind in "iu"}


def _holds_bool(value: list[Any] | tuple[Any, ...]) -> bool:
    if value and isinstance(value[0], list | tuple):
        return any(isinstance(item, list | tuple) and _holds_bool(item) for item in value)
    return bool in set(map(type, value))


def _rows_by_feature(rows: Sequence[Any], features: tuple[str, ...]) -> list[list[Any]]:
    wanted = set(features)
    table = []
    for row_no, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInput(f"row {row_no} is not an object; give every row in the same form")
        if row.keys() != wanted:
            problem, name = feature_mismatch(features, row.keys())
            raise InvalidInput(f"row {row_no}: {problem} (features: {', '.join(features)})", input_name=name)
        table.append([row[f] for f in features])
    return table


def feature_mismatch(features: Sequence[str], given: Collection[Any]) -> tuple[str, str]:
    """What is wrong with the keys ``given`` for ``features`` (they differ), and the feature to blame:
    the first missing feature, with the unknown key beside it (and the feature it looks like a
    misspelling of), else the first unknown key."""
    import difflib

    known = set(features)
    missing = [f for f in features if f not in given]
    extra = sorted(str(k) for k in given if k not in known)
    if not missing:
        return f"unknown feature {extra[0]!r}", extra[0]
    problem = f"missing feature {missing[0]!r}"
    if extra:
        close = difflib.get_close_matches(extra[0], missing, n=1) or difflib.get_close_matches(extra[0], features, n=1)
        problem += f"; unknown feature {extra[0]!r}" + (f", did you mean {close[0]!r}?" if close else "")
    return problem, missing[0]


def _columns(source: Any, features: tuple[str, ...], column: Any) -> np.ndarray:
    present = set(source.keys()) if isinstance(source, Mapping) else set(source.columns)
    if present != set(features):
        problem, name = feature_mismatch(features, present)
        raise InvalidInput(f"{problem} (features: {', '.join(features)})", input_name=name)
    cols = [np.asarray(column(source, f)) for f in features]
    lengths = {len(c) for c in cols}
    if len(lengths) != 1:
        raise InvalidInput("feature columns have different lengths")
    return np.column_stack(cols) if cols[0].size else np.empty((0, len(features)))


def _shape_ok(expected: tuple[int, ...], got: tuple[int, ...]) -> bool:
    if len(expected) != len(got):
        return False
    for e, g in zip(expected, got, strict=True):  # noqa: SIM110 (a loop: no generator per request)
        if e != -1 and e != g:
            return False
    return True


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("-1" if d == -1 else str(d) for d in shape) + "]"


def _cast(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    want = dtype_of(spec.datatype)
    got_kind, want_kind = arr.dtype.kind, want.kind
    if want_kind == "O" and got_kind in "OUS":
        return _byte_strings(spec, arr if got_kind == "O" else arr.astype(object))
    if arr.dtype == want:
        return arr
    if got_kind == "b" and want_kind == "b":
        return arr
    elif want_kind == "f" and got_kind in "iuf":
        with np.errstate(over="ignore"):
            cast = arr.astype(want)
        if got_kind == "f" and not np.array_equal(np.isfinite(cast), np.isfinite(arr)):
            raise InvalidInput(f"input {spec.name!r}: values out of range for {spec.datatype}", input_name=spec.name)
        return cast
    elif want_kind in "iu" and got_kind in "iu":
        info = np.iinfo(want)
        if arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max):
            return arr.astype(want)
        raise InvalidInput(f"input {spec.name!r}: values out of range for {spec.datatype}", input_name=spec.name)
    elif (
        want_kind in "iu" and got_kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    ):
        info = np.iinfo(want)  # max + 1 is a power of two: exact as a float, unlike max itself
        if arr.min() >= info.min and arr.max() < float(info.max + 1):
            return arr.astype(want)
        raise InvalidInput(f"input {spec.name!r}: values out of range for {spec.datatype}", input_name=spec.name)
    got = "BYTES" if got_kind in "OUS" else datatype_of(arr.dtype)
    raise InvalidInput(f"input {spec.name!r}: expected datatype {spec.datatype}, got {got}", input_name=spec.name)


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "a boolean"
    if isinstance(value, int | float | np.number):
        return f"the number {value!r}"
    if isinstance(value, str | bytes):
        return f"the text {value[:40]!r}" if isinstance(value, str) else "bytes"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple | np.ndarray):
        return "a nested list (rows of different lengths?)"
    return f"a {type(value).__name__}"


def _byte_strings(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """A BYTES input's values as the model takes them: ``bytes`` for a binary input (text
    encoded as UTF-8), ``str`` for a text input (bytes decoded from UTF-8). Anything else
    (null, numbers, objects) is refused, never turned into text."""
    binary = spec.binary
    want = bytes if binary else str
    values = arr.ravel()
    if all(isinstance(v, want) for v in values):
        return arr
    out = np.empty(values.shape, dtype=object)
    for i, value in enumerate(values):
        if isinstance(value, want):
            out[i] = value
        elif binary and isinstance(value, str):
            out[i] = value.encode("utf-8")
        elif not binary and isinstance(value, bytes):
            out[i] = _utf8(spec.name, i, value)
        else:
            kind = "strings or bytes" if spec.binary else "strings"
            raise InvalidInput(
                f"input {spec.name!r}: BYTES values must be {kind}, got {_what(value)}", input_name=spec.name
            )
    return out.reshape(arr.shape)


def _utf8(name: str, position: int, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"input {name!r}: value {position} is not UTF-8 text ({exc.reason} at byte {exc.start}), and this "
            "model takes text; send UTF-8 (models registered with a sample of bytes take binary data)",
            input_name=name,
        ) from None


def _numbers(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """Mixed values for a numeric input: numbers and nulls (NaN) only; text is never parsed as numbers."""
    for value in arr.ravel():
        if value is not None and (not isinstance(value, int | float | np.number) or isinstance(value, bool | np.bool_)):
            raise InvalidInput(
                f"input {spec.name!r}: expected datatype {spec.datatype}, got non-numeric values ({_what(value)})",
                input_name=spec.name,
            )
    try:
        return arr.astype(np.float64)
    except OverflowError:
        raise InvalidInput(
            f"input {spec.name!r}: values out of range for {spec.datatype}", input_name=spec.name
        ) from None


def validate_inputs(
    signature: Signature, inputs: Mapping[str, np.ndarray], *, finite: Collection[str] = ()
) -> dict[str, np.ndarray]:
    """Check names, shapes, datatypes and NaN against the signature; return cast arrays.

    ``finite`` names inputs already known to hold no NaN or infinity (decoded from JSON
    numbers), whose scan is skipped.
    """
    specs = signature.inputs
    names = [spec.name for spec in specs]
    for name in inputs:
        if name not in names:
            raise InvalidInput(f"unknown input {name!r} (expected: {', '.join(names)})", input_name=name)
    out: dict[str, np.ndarray] = {}
    rows: int | None = None
    for spec in specs:
        arr = inputs.get(spec.name)
        if arr is None:
            raise InvalidInput(f"missing input {spec.name!r} (expected: {', '.join(names)})", input_name=spec.name)
        if not _shape_ok(spec.shape, arr.shape):
            raise InvalidInput(
                f"input {spec.name!r}: expected shape {_fmt_shape(spec.shape)}, got {_fmt_shape(arr.shape)}",
                input_name=spec.name,
            )
        if arr.dtype.kind == "O" and spec.datatype != "BYTES":
            arr = _numbers(spec, arr)
        arr = _cast(spec, arr)
        if arr.dtype.kind == "f" and not spec.allow_nan and spec.name not in finite and not np.isfinite(arr).all():
            raise InvalidInput(
                f"input {spec.name!r}: contains NaN or infinity, which this model does not accept; {NAN_HINT}",
                input_name=spec.name,
            )
        if arr.ndim and rows is not None and arr.shape[0] != rows:
            raise InvalidInput(
                f"input {spec.name!r}: has {arr.shape[0]} rows but other inputs have {rows}", input_name=spec.name
            )
        rows = arr.shape[0] if arr.ndim else rows
        out[spec.name] = arr
    return out


def count_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows in a request: the first dimension of its inputs (they agree after validation)."""
    for arr in inputs.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 1


def select_outputs(outputs: Mapping[str, T], requested: Sequence[str] | None) -> dict[str, T]:
    """The requested outputs in the order asked (all when ``requested`` is None)."""
    if requested is None:
        return dict(outputs)
    for name in requested:
        if name not in outputs:
            raise InvalidInput(f"unknown output {name!r} (outputs: {', '.join(outputs)})")
    return {name: outputs[name] for name in requested}
