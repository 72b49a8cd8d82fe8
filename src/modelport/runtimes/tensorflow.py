"""The TensorFlow runtime: a SavedModel's signature functions over NumPy arrays.

The artifact holds the SavedModel in ``saved_model/`` and ``tensorflow.json`` naming the
signature that is the version's registered one (``serving_default`` as a rule). Its other
signatures are :attr:`TensorFlowRuntime.signatures`, which TF Serving's ``signature_name``
selects (:meth:`TensorFlowRuntime.predict_signature`).

TensorFlow is imported by :meth:`TensorFlowRuntime.load`, never when modelport is imported: the
import takes seconds and logs. ``TF_CPP_MIN_LOG_LEVEL`` is set to 2 (errors only) before it,
unless the environment already sets it. ``threads`` sets TensorFlow's intra-op thread pool
(inter-op: 1) through ``tf.config.threading``, which is process-wide and fixed once TensorFlow
runs its first operation: the first version loaded in a process decides it for all.

A loaded signature is a concrete function, which TensorFlow runs from several threads at once
(as TF Serving does), so the runtime is thread-safe. Loading a SavedModel runs no Python from it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidModel, ModelNotReady
from modelport.runtimes.base import Capabilities
from modelport.types import Signature, TensorSpec, datatype_of

log = logging.getLogger("modelport")

SAVED_MODEL = "saved_model"  # the SavedModel directory inside the artifact
MANIFEST = "tensorflow.json"  # {"signature": the registered signature's name}
DEFAULT_SIGNATURE = "serving_default"


def import_tensorflow() -> Any:
    """TensorFlow, with its C++ logging at errors only unless ``TF_CPP_MIN_LOG_LEVEL`` is set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    return tensorflow


def specs(function: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A signature function's inputs and outputs as specs: TensorFlow's dtypes and shapes, an
    unknown dimension as -1, the first (the batch) always -1. A string is BYTES and binary."""
    _, named = function.structured_input_signature
    inputs = tuple(_spec(name, spec, "input") for name, spec in named.items())
    outputs = tuple(_spec(name, spec, "output") for name, spec in function.structured_outputs.items())
    return inputs, outputs


def _spec(name: str, spec: Any, what: str) -> TensorSpec:
    try:
        datatype = datatype_of(np.dtype(spec.dtype.as_numpy_dtype))
    except (TypeError, ValueError):
        raise InvalidModel(
            f"the SavedModel's {what} {name!r} has dtype {spec.dtype.name}, which modelport cannot serve"
        ) from None
    if spec.shape.rank is None:
        raise InvalidModel(
            f"the SavedModel's {what} {name!r} has an unknown rank; give it a shape with a batch dimension"
        )
    dims = [-1 if d is None else int(d) for d in spec.shape.as_list()]
    if not dims:
        raise InvalidModel(
            f"the SavedModel's {what} {name!r} is a scalar; modelport serves tensors with a batch dimension"
        )
    return TensorSpec(name, datatype, (-1, *dims[1:]), binary=datatype == "BYTES")


def call(tf: Any, function: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a signature function on NumPy arrays; outputs as NumPy, strings as ``str`` where UTF-8."""
    tensors = {name: tf.convert_to_tensor(arr) for name, arr in inputs.items()}
    return {name: _numpy(value) for name, value in function(**tensors).items()}


def _numpy(tensor: Any) -> np.ndarray:
    arr: np.ndarray = tensor.numpy()
    if arr.dtype.kind != "O":
        return arr
    try:
        texts = np.frompyfunc(lambda v: v.decode("utf-8"), 1, 1)(arr)
        return np.asarray(texts, dtype=object)  # text, as BYTES outputs are
    except UnicodeDecodeError:
        return arr  # binary values stay bytes (TF Serving answers them as {"b64": ...})


def set_threads(tf: Any, threads: int) -> None:
    """Size TensorFlow's thread pools if it has not run yet (process-wide; see the module docstring)."""
    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() == threads and threading.get_inter_op_parallelism_threads() == 1:
        return
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow has run an operation: its pools are fixed for the process
        log.info(
            "TensorFlow already runs in this process; its thread pools stay as they are (threads=%d not applied)",
            threads,
        )


class TensorFlowRuntime:
    kind: ClassVar[str] = "tensorflow"
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=True, thread_safe=True, runs_code=False)

    def __init__(self) -> None:
        self._tf: Any = None
        self._loaded: Any = None  # the restored object: its functions need it alive
        self._function: Any = None
        self._outputs: tuple[str, ...] = ()
        self._others: dict[str, tuple[Signature, Any]] = {}

    def load(self, artifact: Path, signature: Signature, *, threads: int = 1) -> None:
        path = Path(artifact) / SAVED_MODEL
        if not (path / "saved_model.pb").is_file():
            raise InvalidModel(f"TensorFlow artifact {artifact} has no SavedModel in {SAVED_MODEL}/")
        name = _registered_signature(Path(artifact))
        tf = import_tensorflow()
        set_threads(tf, max(1, threads))
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises many types for corrupt or incompatible SavedModels
            raise InvalidModel(f"TensorFlow cannot load {path}: {type(exc).__name__}: {exc}") from exc
        functions = dict(loaded.signatures)
        if name not in functions:
            raise InvalidModel(f"{path} has no signature {name!r} (it has: {', '.join(functions) or 'none'})")
        inputs, outputs = specs(functions[name])
        _check_names(path, signature, inputs, outputs)
        self._others = {
            other: (Signature(*specs(function)), function) for other, function in functions.items() if other != name
        }
        self._outputs = tuple(spec.name for spec in signature.outputs)
        self._function = functions[name]
        self._loaded, self._tf = loaded, tf

    @property
    def signatures(self) -> Mapping[str, Signature]:
        """The SavedModel's other signatures by name (not the registered one)."""
        return {name: signature for name, (signature, _) in self._others.items()}

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        function, tf = self._function, self._tf
        if function is None or tf is None:
            raise ModelNotReady("the TensorFlow model is not loaded; call load() first")
        outputs = call(tf, function, inputs)
        return {name: outputs[name] for name in self._outputs}

    def predict_signature(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predict with another of the SavedModel's signatures (inputs checked against it)."""
        tf = self._tf
        if self._function is None or tf is None:
            raise ModelNotReady("the TensorFlow model is not loaded; call load() first")
        try:
            _, function = self._others[name]
        except KeyError:
            raise InvalidModel(f"the SavedModel has no other signature {name!r}") from None
        return call(tf, function, inputs)

    def unload(self) -> None:
        self._loaded = self._function = None
        self._others = {}


def _registered_signature(artifact: Path) -> str:
    manifest = artifact / MANIFEST
    if not manifest.is_file():
        return DEFAULT_SIGNATURE
    try:
        name = json.loads(manifest.read_text(encoding="utf-8"))["signature"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidModel(f"{manifest} is not a valid manifest: {type(exc).__name__}: {exc}") from exc
    if not isinstance(name, str):
        raise InvalidModel(f"{manifest}: 'signature' must be a string")
    return name


def _check_names(
    path: Path, signature: Signature, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> None:
    have_in, have_out = {spec.name for spec in inputs}, {spec.name for spec in outputs}
    missing = [spec.name for spec in signature.inputs if spec.name not in have_in]
    missing += [spec.name for spec in signature.outputs if spec.name not in have_out]
    if missing or len(signature.inputs) != len(inputs):
        raise InvalidModel(
            f"{path} does not match its signature: expected tensors {', '.join(map(repr, missing)) or '(none)'} "
            f"missing or inputs differ (the SavedModel's inputs: {', '.join(sorted(have_in))}; "
            f"outputs: {', '.join(sorted(have_out))})"
        )
