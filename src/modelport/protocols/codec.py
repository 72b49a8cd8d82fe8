"""JSON and binary tensor data <-> NumPy, shared by the protocols.

Numeric tensors become arrays with one ``np.asarray`` call on the decoded list (no Python loop
per element); responses are encoded by orjson straight from the arrays.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInput
from modelport.signature import EXACT_FLOATS, exact_integers
from modelport.types import DATATYPES, Signature

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_DATATYPE_LIST = ", ".join(DATATYPES)
_LENGTH = struct.Struct("<I")


def loads(body: bytes | memoryview, *, what: str = "request body") -> Any:
    """Parse JSON; empty or malformed bodies raise :class:`InvalidInput` saying what to send."""
    if not body:
        raise InvalidInput(f"the {what} is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"the {what} is not valid JSON ({exc}); numbers must be finite and NaN/Infinity are not JSON "
            "(send null for a missing value)"
        ) from None


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):  # object arrays (BYTES) and anything orjson cannot take natively
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=_DUMP_OPTIONS)


def dtype_for(name: str, datatype: Any) -> np.dtype[Any]:
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r} (use one of: {_DATATYPE_LIST})", input_name=name
        ) from None


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if type(shape) is list:
        for d in shape:
            if type(d) is not int or d < 0:  # bool is not int here
                break
        else:
            return tuple(shape)
    raise InvalidInput(
        f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}", input_name=name
    )


def _fit(name: str, arr: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    if shape is None:
        return arr
    if arr.size != math.prod(shape):
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {math.prod(shape)} values but 'data' has {arr.size}",
            input_name=name,
        )
    return arr.reshape(shape)


def _bad_values(name: str, datatype: str, got: str) -> InvalidInput:
    return InvalidInput(f"input {name!r}: expected datatype {datatype}, got {got}", input_name=name)


def array_from_json(name: str, datatype: Any, data: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Build the array of declared ``datatype`` from JSON ``data`` (flat row-major or nested)."""
    return tensor_from_json(name, datatype, data, shape)[0]


def tensor_from_json(
    name: str, datatype: Any, data: Any, shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, bool]:
    """:func:`array_from_json`, and whether the values are known to be finite.

    JSON numbers are finite (NaN and Infinity are not JSON) and casts are range-checked, so a
    numeric tensor is finite unless nulls became NaN; the signature check can then skip its own
    NaN scan. Range checks look at the Python list for small flat tensors: on the request path
    one NumPy reduction costs more than the whole check in Python.
    """
    dtype = dtype_for(name, datatype)
    if type(data) is not list:
        raise InvalidInput(f"input {name!r}: 'data' must be an array of values, got {type(data).__name__}")
    if datatype == "BYTES":
        return _fit(name, _strings(name, data), shape), True
    if dtype.kind == "f" and 0 < len(data) <= SMALL:
        floats = _plain_floats(data, dtype)
        if floats is not None:
            return _fit(name, floats, shape), True
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(f"input {name!r}: 'data' is not a rectangular array", input_name=name) from None
    if raw.size == 0:
        return _fit(name, raw.astype(dtype), shape), True
    finite = True
    kind, want = raw.dtype.kind, dtype.kind
    if kind == "O":
        raw = _objects(name, datatype, raw, want)
        kind, finite = raw.dtype.kind, False
    if kind in "US":
        raise _bad_values(name, datatype, "strings")
    if want == "b":
        if kind != "b":
            raise _bad_values(name, datatype, "numbers (send true/false)")
    elif kind == "b":
        raise _bad_values(name, datatype, "booleans")
    elif raw.dtype != dtype:
        if want == "f":
            limit = _FLOAT_MAX[dtype]
            if dtype.itemsize < 8 and not _within(data, raw, -limit, limit, finite):
                raise InvalidInput(
                    f"input {name!r}: values out of range for {datatype} (max {limit:g})", input_name=name
                )
        else:  # integers
            if kind == "f" and not (np.isfinite(raw).all() and (raw == np.round(raw)).all()):
                raise _bad_values(name, datatype, "fractional numbers")
            if kind == "f" and float(np.abs(raw).max()) >= EXACT_FLOATS:
                return _fit(name, exact_integers(name, datatype, data), shape), finite
            info = np.iinfo(dtype)
            if not _within(data, raw, info.min, info.max, finite):
                raise InvalidInput(f"input {name!r}: values out of range for {datatype}", input_name=name)
    return _fit(name, raw.astype(dtype, copy=False), shape), finite


SMALL = 256  # values up to which Python's min/max on the list beats a NumPy reduction
_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}
_NUMBERS = (int, float)


def _plain_floats(data: list[Any], dtype: np.dtype[Any]) -> np.ndarray | None:
    """The short path: a flat list of numbers within ``dtype``'s range, converted in one call.

    None when the general path must look: other values (``min``/``max`` fail on strings, nulls
    and nested lists among numbers), booleans at either end, or values out of range.
    """
    try:
        low, high = min(data), max(data)
    except TypeError:
        return None
    limit = _FLOAT_MAX[dtype]
    if type(low) in _NUMBERS and type(high) in _NUMBERS and -limit <= low and high <= limit:
        return np.array(data, dtype=dtype)
    return None


def _within(data: list[Any], raw: np.ndarray, low: float, high: float, plain: bool) -> bool:
    """Whether no value of ``raw`` (decoded from ``data``) lies outside [low, high] (NaN does not).

    ``plain``: ``data`` holds only numbers (no nulls), so Python can compare the list itself.
    """
    if plain and raw.ndim == 1 and raw.size <= SMALL:
        return bool(low <= min(data) and max(data) <= high)
    return not bool((raw < low).any() or (raw > high).any())


def _objects(name: str, datatype: str, raw: np.ndarray, want: str) -> np.ndarray:
    """Mixed JSON values: nulls are NaN for float tensors; anything else is refused."""
    if want == "f":
        flat = raw.ravel()
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in flat):
            try:
                return raw.astype(np.float64)
            except OverflowError:
                raise InvalidInput(f"input {name!r}: values out of range for {datatype}", input_name=name) from None
    if want in "iu" and all(isinstance(v, int) and not isinstance(v, bool) for v in raw.ravel()):
        raise InvalidInput(f"input {name!r}: values out of range for {datatype}", input_name=name)
    if any(v is None for v in raw.ravel()):
        raise _bad_values(name, datatype, "null values")
    raise _bad_values(name, datatype, "mixed or non-numeric values")


def _strings(name: str, data: list[Any]) -> np.ndarray:
    try:
        arr = np.array(data, dtype=object)
    except ValueError:
        raise InvalidInput(f"input {name!r}: 'data' is not a rectangular array", input_name=name) from None
    if not all(isinstance(v, str) for v in arr.ravel()):
        raise InvalidInput(f"input {name!r}: BYTES data must be strings", input_name=name)
    return arr


def array_from_bytes(name: str, datatype: Any, shape: tuple[int, ...], buffer: memoryview) -> np.ndarray:
    """Decode binary tensor data (little-endian, row-major; BYTES as 4-byte length + bytes each)."""
    dtype = dtype_for(name, datatype)
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _unpack_strings(name, buffer)
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return _fit(name, arr, shape)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input {name!r}: binary_data_size is {len(buffer)} bytes but shape {list(shape)} of {datatype} "
            f"needs {expected}",
            input_name=name,
        )
    return np.frombuffer(buffer, dtype=dtype.newbyteorder("<")).reshape(shape)


def _unpack_strings(name: str, buffer: memoryview) -> list[bytes]:
    """The elements as bytes, exactly as sent; the signature decides whether the model takes text."""
    items: list[bytes] = []
    offset, end = 0, len(buffer)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"input {name!r}: truncated BYTES element length", input_name=name)
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"input {name!r}: truncated BYTES element", input_name=name)
        items.append(bytes(buffer[offset : offset + length]))
        offset += length
    return items


def bytes_array(name: str, values: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    """An object array of ``values`` (BYTES from a binary transport) in ``shape``."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return _fit(name, arr, shape)


# -- BYTES in JSON ------------------------------------------------------------------------------


def _b64decode(text: Any) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f'a {{"b64": ...}} value must hold a base64 string, got {type(text).__name__}')
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f'a {{"b64": ...}} value is not valid base64 ({exc}): {text[:40]!r}') from None


def _binary_values(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_binary_values(v) for v in value]
    if kind is dict:
        if len(value) == 1 and "b64" in value:
            return _b64decode(value["b64"])
        return {k: _binary_values(v) for k, v in value.items()}
    return value


def binary_values(data: Any, signature: Signature) -> Any:
    """TF Serving's binary values: each ``{"b64": "<base64>"}`` object in ``data`` becomes the
    bytes it encodes (for a model with BYTES inputs; other models' data is returned as is)."""
    if any(spec.datatype == "BYTES" for spec in signature.inputs):
        return _binary_values(data)
    return data


def b64_values(value: Any) -> Any:
    """Nested output values for TF Serving JSON: bytes as ``{"b64": "<base64>"}``, text as is."""
    if isinstance(value, list):
        return [b64_values(v) for v in value]
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def json_strings(values: list[Any]) -> tuple[list[str], bool]:
    """A flat BYTES output for V2 JSON: strings when every value is text (bytes that are UTF-8
    count as text), else every value base64-encoded; and whether it is base64."""
    texts: list[str] = []
    for value in values:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return [base64.b64encode(_raw(v)).decode("ascii") for v in values], True
        texts.append(value if isinstance(value, str) else str(value))
    return texts, False


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


# -- declared datatypes -------------------------------------------------------------------------

_FAMILIES = {
    **dict.fromkeys(("FP16", "FP32", "FP64"), ("floating-point", "FP16, FP32 or FP64")),
    **dict.fromkeys((t for t in DATATYPES if "INT" in t), ("integer", "one of INT8-INT64, UINT8-UINT64")),
    "BOOL": ("BOOL", "BOOL"),
    "BYTES": ("BYTES", "BYTES"),
}


def check_datatype(signature: Signature, name: str, datatype: Any) -> None:
    """A V2 tensor's declared ``datatype`` against the input it feeds: the signature's datatype,
    or another of its family (any float width for a float input, any integer type for an integer
    input; values are range-checked when cast). Anything else is refused, never cast."""
    for spec in signature.inputs:  # a loop, not Signature.input's generator: once per tensor per request
        if spec.name == name:
            break
    else:
        spec = None
    if spec is None:
        features = signature.feature_names
        if not features or name not in features:
            return  # an unknown input: validation names it with the expected ones
        spec = signature.inputs[0]
    if datatype == spec.datatype or datatype not in _FAMILIES:
        return  # the same, or unknown (decoding names the known ones)
    family, accepted = _FAMILIES[spec.datatype]
    if _FAMILIES[datatype][0] != family:
        raise InvalidInput(
            f"input {name!r}: expected datatype {spec.datatype}, got {datatype}; send {accepted}", input_name=name
        )


def array_to_bytes(arr: np.ndarray, datatype: str) -> bytes:
    """Binary tensor data for an output array."""
    if datatype == "BYTES":
        parts = []
        for value in arr.ravel().tolist():
            raw = _raw(value)
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    dtype = DATATYPES[datatype].newbyteorder("<")
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()


def flat(arr: np.ndarray, datatype: str) -> np.ndarray:
    """A flat, contiguous view of an output in its declared datatype, for orjson."""
    if datatype != "BYTES":
        want = DATATYPES[datatype]
        if arr.dtype != want:
            arr = arr.astype(want)
    return arr if arr.ndim == 1 else arr.reshape(-1)


TIMEOUT_HEADER = "modelport-timeout"


def timeout_parameter(parameters: Any) -> float | None:
    """Seconds from a V2 request's ``parameters.timeout`` (microseconds, as Triton's clients send it)."""
    if not isinstance(parameters, dict) or "timeout" not in parameters:
        return None
    value = parameters["timeout"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInput(f"parameters.timeout must be a positive number of microseconds, got {value!r}")
    return float(value) / 1_000_000


def timeout_header(value: str | None) -> float | None:
    """Seconds from the ``modelport-timeout`` header."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise InvalidInput(f"the {TIMEOUT_HEADER} header must be a positive number of seconds, got {value[:40]!r}")
    return seconds


def earliest(*timeouts: float | None) -> float | None:
    """The shortest of the given timeouts (None: none given)."""
    given = [t for t in timeouts if t is not None]
    return min(given) if given else None
