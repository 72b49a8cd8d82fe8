"""Neutral types shared by the registry, runtimes, manager and every protocol.

No wire format here: protocols translate their JSON into :class:`InferRequest` and an
:class:`InferResult` back into their JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

# Open Inference Protocol datatype names <-> NumPy dtypes. BYTES travels as an object array: of str
# for a text input, of bytes for a binary one (TensorSpec.binary).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dt: name for name, dt in DATATYPES.items()}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The V2 datatype name of a NumPy dtype (strings and bytes map to BYTES)."""
    if dtype.kind in "OUS":
        return "BYTES"
    try:
        return _BY_DTYPE[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"dtype {dtype} has no Open Inference Protocol datatype") from None


def dtype_of(datatype: str) -> np.dtype[Any]:
    return DATATYPES[datatype]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named input or output. ``shape`` uses -1 for a free dimension (the batch is dim 0).

    ``feature_names`` names the columns of a 2-D input (from a DataFrame's columns), so a
    request may give one value per feature instead of the whole tensor.

    ``binary`` (BYTES only): the model takes raw ``bytes`` elements (its sample held bytes), as
    they arrive. Otherwise a BYTES input is text: elements reach the model as ``str``, and bytes
    that are not UTF-8 are refused.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    feature_names: tuple[str, ...] | None = None
    allow_nan: bool = False
    binary: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.feature_names is not None:
            data["feature_names"] = list(self.feature_names)
        if self.allow_nan:
            data["allow_nan"] = True
        if self.binary:
            data["binary"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        names = data.get("feature_names")
        return cls(
            name=str(data["name"]),
            datatype=str(data["datatype"]),
            shape=tuple(int(d) for d in data["shape"]),
            feature_names=tuple(names) if names is not None else None,
            allow_nan=bool(data.get("allow_nan", False)),
            binary=bool(data.get("binary", False)),
        )


@dataclass(frozen=True, slots=True)
class Signature:
    """What a model takes and gives, plus an example input (a few rows, JSON-ready lists)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example: Mapping[str, Any] | None = None

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """Feature names when the model takes one 2-D input with named columns."""
        if len(self.inputs) == 1:
            return self.inputs[0].feature_names
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "example": dict(self.example) if self.example is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(s) for s in data["outputs"]),
            example=data.get("example"),
        )


@dataclass(frozen=True, slots=True)
class Batching:
    """A version's own adaptive-batching settings; a field left None takes the server's."""

    enabled: bool | None = None
    max_batch_size: int | None = None  # rows per runtime call
    max_wait_ms: float | None = None  # how long a batch formed under load may wait to fill
    max_queue_wait_ms: float | None = None  # expected wait past which a request is refused (503)

    def __post_init__(self) -> None:
        if self.enabled is not None and not isinstance(self.enabled, bool):
            raise ValueError(f"batching 'enabled' must be true or false, got {self.enabled!r}")
        size = self.max_batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"max_batch_size must be an integer >= 1, got {size!r}")
        for name in ("max_wait_ms", "max_queue_wait_ms"):
            wait = getattr(self, name)
            if wait is not None and (
                isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < 60_000
            ):
                raise ValueError(f"{name} must be a number of milliseconds in [0, 60000), got {wait!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings that are set (an empty dict: the server's settings throughout)."""
        return {key: getattr(self, key) for key in BATCHING_KEYS if getattr(self, key) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batching:
        unknown = sorted(set(data) - set(BATCHING_KEYS))
        if unknown:
            raise ValueError(f"unknown batching setting {unknown[0]!r} (known: {', '.join(BATCHING_KEYS)})")
        return cls(**{key: data.get(key) for key in BATCHING_KEYS})


BATCHING_KEYS = ("enabled", "max_batch_size", "max_wait_ms", "max_queue_wait_ms")


def capture_rate_of(value: object) -> float | None:
    """A version's own payload-capture rate: None (the server's), or a share from 0 to 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"capture_rate is the share of requests captured, a number from 0 to 1, got {value!r}")
    return float(value)


DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]{1,2})?")
PRECISIONS = ("fp32", "fp16", "bf16")


def device_of(value: object) -> str | None:
    """A device to serve on: None (the server's), ``cpu``, ``cuda`` or ``cuda:N``."""
    if value is None:
        return None
    if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value.strip().lower()):
        raise ValueError(f"device is cpu, cuda or cuda:N (N: the GPU's index), got {value!r}")
    return value.strip().lower()


def precision_of(value: object) -> str | None:
    """A serving precision: None (the model's own, fp32), ``fp32``, ``fp16`` or ``bf16``."""
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in PRECISIONS:
        raise ValueError(f"precision is one of {', '.join(PRECISIONS)}, got {value!r}")
    return value.strip().lower()


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One immutable registered version, as the registry reports it."""

    name: str
    version: int
    runtime: str  # runtime kind that serves it: "onnx", "sklearn", "xgboost", "torch", ... or a plugin's
    framework: str  # what it was trained with: "sklearn", "onnx", "python", "xgboost", "lightgbm", "torch", ...
    artifact: str  # content hash of the artifact directory, "sha256:<hex>"
    signature: Signature
    created_at: datetime
    aliases: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float | str] = field(default_factory=dict)
    params: Mapping[str, float | str] = field(default_factory=dict)
    description: str = ""
    notes: tuple[str, ...] = ()  # e.g. "converted to ONNX; max |Δp| 3e-8 on the sample"
    trusted_code: bool = False  # artifact runs arbitrary code (pickle, custom Python)
    batching: Batching = field(default_factory=Batching)  # its own batching settings, if any
    capture_rate: float | None = None  # its own payload-capture rate (0 to 1); None: the server's
    device: str | None = None  # where it runs: cpu, cuda, cuda:N; None: the server's device
    precision: str | None = None  # fp16 or bf16 opt-in for runtimes that support it; None: fp32

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(slots=True)
class Marks:
    """When one traced request reached each step, in ``time.time_ns()`` (0: not reached).

    Only a traced request has one (:attr:`Exchange.marks` and :attr:`InferRequest.marks` are None
    otherwise, and nothing is noted): the protocol hands it from the exchange to the request,
    serving notes plain numbers on it, and tracing makes the spans from them afterwards
    (:mod:`modelport.observability.tracing`), so serving knows no tracing library.
    """

    begun: int = 0  # decoding began (the version is picked, the body parsed and checked)
    submitted: int = 0  # serving took the decoded request
    started: int = 0  # the runtime call that serves it began (a batch's, when batched)
    ended: int = 0  # that runtime call ended
    rows: int = 0  # the rows of that runtime call (the whole batch)
    answered: int = 0  # serving returned its outputs
    encoded: int = 0  # the answer is encoded


# The two per-request types are plain (not frozen) slotted dataclasses: a frozen one's __init__
# costs three times as much, on every request.
@dataclass(slots=True)
class InferRequest:
    """A protocol-neutral inference request: named input arrays (batch first).

    ``checked`` is the signature the inputs already passed ``validate_inputs`` for, when the
    protocol checked them while decoding; the manager checks them again for any other.
    """

    inputs: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] | None = None  # requested outputs; None means all
    id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    checked: Signature | None = field(default=None, repr=False, compare=False)
    timeout: float | None = None  # seconds the caller allows (its own deadline); None: the server's
    request_id: str | None = None  # the server's id of the request, when the protocol knows it
    marks: Marks | None = field(default=None, repr=False, compare=False)  # when traced: serving notes its steps
    # Another of the model's signatures (TF Serving's signature_name, for a runtime that has several:
    # ``signatures`` and ``predict_signature``); None: the registered one.
    signature_name: str | None = None


@dataclass(slots=True)
class Exchange:
    """What one request turned out to be, noted as it goes through (for metrics and the access log).

    ``protocol`` is ``v2``, ``tfserving``, ``sagemaker``, ``grpc`` or ``other``; ``model`` is the
    name the request asked for (caller-chosen text: metrics check it against what is served),
    ``version`` the version that answered it and ``rows`` its batch size, once known.
    """

    protocol: str = "other"
    model: str = ""
    version: int | None = None
    rows: int = 0
    request_id: str = ""  # the server's id of the request (X-Request-ID), for what is logged or captured
    marks: Marks | None = None  # when the request is traced: when it reached each step


EXCHANGE = "modelport.exchange"  # the ASGI scope key of a request's Exchange


@dataclass(slots=True)
class InferResult:
    """The neutral answer: which version served it and its named output arrays."""

    model_name: str
    model_version: int
    outputs: Mapping[str, np.ndarray]
    signature: Signature
    id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
