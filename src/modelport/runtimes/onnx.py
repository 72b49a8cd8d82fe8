"""The ONNX runtime: an ONNX Runtime CPU session over ``model.onnx`` in the artifact directory.

The graph already has the signature's names (ingest renames outputs and removes ZipMap at
registration), so ``predict`` only casts inputs to the graph's dtypes and runs the session.

Input errors and model faults: the inputs have passed the signature's checks when ``predict``
runs, so what ONNX Runtime still refuses as ``INVALID_ARGUMENT`` is a value the graph cannot take
(a token id past an embedding table's end: Gather's "idx=100 must be within the inclusive range
[-50,49]"), an :class:`~modelport.errors.InvalidInput` with ONNX Runtime's reason; anything else it
raises is the model's fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidInput, InvalidModel, InvalidSetting, ModelNotReady
from modelport.runtimes.base import Capabilities
from modelport.types import Signature

FILENAME = "model.onnx"
CUDA_PROVIDER = "CUDAExecutionProvider"

# ONNX Runtime's input type strings -> NumPy dtypes.
_ORT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}


def session(model: Path | bytes, *, threads: int = 1, device: str = "cpu") -> Any:
    """An ``InferenceSession`` using ``threads`` intra-op threads, sequential execution, on the CPU or
    (``cuda`` / ``cuda:N``) the CUDA execution provider, which the installed onnxruntime must have."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    providers: list[Any] = ["CPUExecutionProvider"]
    if device != "cpu":
        if CUDA_PROVIDER not in ort.get_available_providers():
            raise InvalidSetting(
                f"device {device}: the installed onnxruntime ({ort.__version__}) has no CUDA execution provider "
                f"(it has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu in its place, "
                "or serve on the CPU"
            )
        index = int(device.partition(":")[2] or 0)
        providers = [(CUDA_PROVIDER, {"device_id": index}), "CPUExecutionProvider"]
    return ort.InferenceSession(source, sess_options=options, providers=providers)


class _Never(Exception):
    """Raised by nothing: what ``predict`` catches before a session is loaded."""


def _reason(error: Exception) -> str:
    """ONNX Runtime's message without its code prefix: "Non-zero status code returned while running
    Gather node. Name:'' Status Message: indices element out of data bounds, ..." becomes
    "Gather: indices element out of data bounds, ..."."""
    text = str(error).partition("INVALID_ARGUMENT : ")[2] or str(error)
    node, found, status = text.partition(" node. ")
    if found and "Status Message: " in status:
        return f"{node.rpartition(' ')[2]}: {status.partition('Status Message: ')[2]}"
    return text


class OnnxRuntime:
    kind: ClassVar[str] = "onnx"
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch_rows=True, thread_safe=True, runs_code=False, devices=("cpu", "cuda")
    )

    def __init__(self) -> None:
        self._session: Any = None
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._outputs: list[str] = []
        self._options: Any = None
        self._run: Any = None
        self._refused: type[Exception] = _Never  # ONNX Runtime's InvalidArgument, once loaded

    def load(
        self, artifact: Path, signature: Signature, *, threads: int = 1, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        path = Path(artifact) / FILENAME
        if not path.is_file():
            raise InvalidModel(f"ONNX artifact {artifact} has no {FILENAME}")
        if precision != "fp32":
            raise InvalidSetting(
                f"the onnx runtime serves the graph as it was converted (fp32); {precision} is offered by the native "
                "runtimes that support it (torch): register without --precision, or with --runtime of such a kind"
            )
        try:
            sess = session(path, threads=threads, device=device)
        except InvalidSetting:
            raise
        except Exception as exc:  # ORT raises its own exception types for corrupt or unsupported graphs
            raise InvalidModel(f"ONNX Runtime cannot load {path}: {exc}") from exc
        graph_inputs = {i.name: i.type for i in sess.get_inputs()}
        graph_outputs = {o.name for o in sess.get_outputs()}
        wanted_in = [spec.name for spec in signature.inputs]
        wanted_out = [spec.name for spec in signature.outputs]
        missing = [n for n in wanted_in if n not in graph_inputs] + [n for n in wanted_out if n not in graph_outputs]
        if missing:
            raise InvalidModel(
                f"{path} does not match its signature: the graph has no tensor named {', '.join(map(repr, missing))} "
                f"(graph inputs: {', '.join(graph_inputs)}; outputs: {', '.join(sorted(graph_outputs))})"
            )
        self._dtypes = {name: _ORT_DTYPES.get(graph_inputs[name], np.dtype(object)) for name in wanted_in}
        self._outputs = wanted_out
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        self._refused = InvalidArgument
        self._options = ort.RunOptions()  # one reused: ORT builds a default per call when given None
        # A failed run raises with its reason (a model fault is logged with it, an input error answered
        # with it); ORT printing it to stderr as well, past the server's log format, is left out.
        self._options.log_severity_level = 4
        # The session's own pybind object runs the graph; the Python wrapper around it re-checks
        # input names (done above, against the signature) and costs ~1.5 us per call.
        self._run = getattr(getattr(sess, "_sess", None), "run", None) or sess.run
        self._session = sess

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self._session
        if sess is None:
            raise ModelNotReady("the ONNX model is not loaded; call load() first")
        dtypes = self._dtypes
        feed = {name: arr if arr.dtype == dtypes[name] else arr.astype(dtypes[name]) for name, arr in inputs.items()}
        try:
            results = self._run(self._outputs, feed, self._options)
        except self._refused as exc:
            raise InvalidInput(f"the model cannot take this input: {_reason(exc)}") from exc
        return dict(zip(self._outputs, results, strict=True))

    def unload(self) -> None:
        self._session = self._run = None
