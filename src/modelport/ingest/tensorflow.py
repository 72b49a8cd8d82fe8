"""Registering TensorFlow SavedModels and Keras models: see :func:`claims` and :func:`package`.

A Keras model (in memory, or a ``.keras`` file loaded in Keras' safe mode) is exported to a
SavedModel with Keras 3's ``model.export`` and checked against the Keras model on the sample; a
SavedModel directory is copied as it is. The artifact keeps the SavedModel in ``saved_model/``;
its ``serving_default`` signature is the version's signature (input names, dtypes such as INT64
token ids or FP32 N×H×W×C images, output names).

Keras names an input the user did not name after a session counter (``keras_tensor_6``, or
``input_layer_3`` from a ``.keras`` file), so a retrained model would register with other input
names than the last: the export gives such inputs stable names (:func:`stable_input_names`).

When tf2onnx converts that signature and ONNX Runtime answers like TensorFlow on the whole sample
and on its first row alone (a dynamic batch dimension) within ``|Δ| <= ATOL + RTOL·|y|``, the
artifact also gets ``model.onnx`` and the onnx runtime serves it, the SavedModel kept beside it;
otherwise the tensorflow runtime serves the SavedModel. A SavedModel with several signatures is
served natively, so TF Serving's ``signature_name`` can select them. The notes say which and why.

Loading a SavedModel runs no Python; a ``.keras`` file whose layers are Python code (a Lambda)
or classes Keras does not know loads only with the trust flag (safe mode off). Whatever it came
from, the stored SavedModel is scanned before TensorFlow loads it (:func:`tf_runtime.unsafe_ops`):
one whose graph has ops that read or write files, run Python or reach the network registers only
with the trust flag, and then as trusted code, which the server loads only for trusted versions.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidModel, UntrustedArtifact
from modelport.ingest.packaged import TRUST_HINT, Packaged, new_directory, reason
from modelport.ingest.verification import disagreement
from modelport.registry import environment
from modelport.runtimes import onnx as onnx_runtime
from modelport.runtimes import tensorflow as tf_runtime
from modelport.signature import example_of, sample_arrays
from modelport.stores.local import artifact_files
from modelport.types import Signature, TensorSpec, datatype_of, dtype_of

log = logging.getLogger("modelport")

RTOL, ATOL = 1e-4, 1e-5  # ONNX (and the exported SavedModel) against TensorFlow (the Keras model) on the sample
OPSET = 17
KERAS_SUFFIX = ".keras"
_OUTPUT_INDEX = re.compile(r"output_(\d+)")
_KERAS_NAMED = re.compile(r"(keras_tensor|input_layer)(_\d+)?")  # what Keras calls an Input nobody named


def claims(model: object) -> bool:
    """Whether ``model`` is one of this module's kinds: a Keras or TensorFlow object (judged by the
    modules of its classes, so TensorFlow is not imported for anything else), a SavedModel
    directory (it has ``saved_model.pb``) or a ``.keras`` file."""
    if isinstance(model, str | Path):
        path = Path(model)
        if path.is_dir():
            return (path / "saved_model.pb").is_file()
        return path.suffix.lower() == KERAS_SUFFIX and path.is_file()
    return any(cls.__module__.split(".")[0] in ("keras", "tensorflow") for cls in type(model).__mro__)


def package(
    model: object, *, workdir: Path, sample_input: object | None, trust_pickle: bool, runtime: str | None
) -> Packaged:
    """An artifact directory in ``workdir`` for a Keras model or SavedModel (see the module docstring).

    ``runtime``: None serves ONNX when verified and the SavedModel otherwise; "onnx" makes a failed
    conversion an error; "tensorflow" serves the SavedModel without trying ONNX."""
    if runtime not in (None, "onnx", "tensorflow"):
        raise InvalidModel(
            f"unknown runtime {runtime!r} for a TensorFlow model; choose onnx or tensorflow (or leave it out)"
        )
    if sample_input is None:
        raise InvalidModel(
            "a TensorFlow/Keras model needs a sample input (a few rows: an ndarray, or a dict of arrays by input "
            "name) to verify what is stored; pass sample_input= (Python) or --sample (CLI)"
        )
    tf = tf_runtime.import_tensorflow()
    directory = new_directory(workdir)
    saved = directory / tf_runtime.SAVED_MODEL
    notes: list[str] = []
    exported = _store_saved_model(model, saved, trust=trust_pickle, notes=notes)
    reaching = _check_ops(saved, trust=trust_pickle, notes=notes)  # before TensorFlow loads or runs any of it
    try:
        loaded = tf.saved_model.load(str(saved))
    except Exception as exc:  # TensorFlow raises many types for what it cannot read
        raise InvalidModel(f"TensorFlow cannot load the SavedModel: {reason(exc)}") from exc
    functions = dict(loaded.signatures)
    name = _serving_signature(functions, notes)
    function = functions[name]
    inputs, outputs = _in_order(*tf_runtime.specs(function), exported.names if exported is not None else ())
    arrays = _sample(sample_input, inputs)
    rows = len(next(iter(arrays.values())))
    try:
        got = tf_runtime.call(tf, function, arrays)
    except Exception as exc:  # TensorFlow's errors for shapes and values it cannot take
        raise InvalidModel(f"the SavedModel raised on the sample input: {reason(exc)}") from exc
    if exported is not None:
        notes.append(_check_export(exported, arrays, got))
    signature = _signature(inputs, outputs, arrays, got)
    (directory / tf_runtime.MANIFEST).write_text(json.dumps({"signature": name}), encoding="utf-8")
    # Keras' export writes its endpoint twice, as "serve" and "serving_default": a twin with the same
    # inputs and outputs selects nothing new, so only signatures that differ keep the SavedModel served natively.
    others = [other for other, f in functions.items() if other != name and tf_runtime.specs(f) != (inputs, outputs)]
    served = _onnx_or_native(tf, function, arrays, got, runtime, others=others)
    if served.onnx is not None:
        (directory / onnx_runtime.FILENAME).write_bytes(served.onnx)
    notes.append(served.note)
    kind = "tensorflow" if served.onnx is None else "onnx"
    notes.append(f"signature {name!r} checked on {rows} sample rows: outputs {', '.join(got)}")
    captured = environment.capture("tensorflow")
    return Packaged(directory, kind, "tensorflow", signature, captured, tuple(notes), bool(reaching))


# --- the SavedModel ----------------------------------------------------------------------------


def _store_saved_model(model: object, target: Path, *, trust: bool, notes: list[str]) -> _Exported | None:
    """Write ``model``'s SavedModel to ``target``; returns the Keras model to check it against, if any."""
    if isinstance(model, str | Path):
        path = Path(model)
        if path.is_dir():
            for rel, source in artifact_files(path):  # refuses symlinks that leave the directory
                if "__pycache__" not in rel.split("/"):
                    (target / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target / rel)
            notes.append(f"SavedModel directory {path.name} stored as it is")
            return None
        keras_model = _load_keras(path, trust=trust)
        notes.append(f"loaded from {path.name}" + (" with Keras' safe mode off (trusted)" if trust else ""))
        return _export(keras_model, target, notes)
    if callable(getattr(model, "export", None)) and type(model).__module__.startswith("keras"):
        return _export(model, target, notes)
    import tensorflow as tf

    try:
        with _quiet():
            tf.saved_model.save(model, str(target))
    except Exception as exc:
        raise InvalidModel(f"cannot save the {type(model).__qualname__} as a SavedModel: {reason(exc)}") from exc
    notes.append(f"{type(model).__qualname__} saved with tf.saved_model.save")
    return None


def _check_ops(saved: Path, *, trust: bool, notes: list[str]) -> list[str]:
    """The SavedModel's ops that reach outside the model (:func:`tf_runtime.unsafe_ops`); refused
    without trust, noted with it (the version is then registered as trusted code)."""
    reaching = tf_runtime.unsafe_ops(saved)
    if reaching and not trust:
        raise UntrustedArtifact(
            f"the SavedModel has ops that reach outside the model: {'; '.join(reaching)}. Serving it runs them on "
            f"the server for every caller (reading or writing its files, running Python, reaching the network). "
            f"{TRUST_HINT}; better, do file reading and Python outside the model's graph."
        )
    if reaching:
        notes.append(
            f"registered as trusted code: the SavedModel has ops that reach outside the model: {'; '.join(reaching)}"
        )
    return reaching


def _load_keras(path: Path, *, trust: bool) -> Any:
    import keras

    try:
        with _quiet():
            return keras.saving.load_model(path, compile=False, safe_mode=not trust)
    except ValueError as exc:
        if "safe_mode" not in str(exc):
            raise InvalidModel(f"Keras cannot load {path.name}: {reason(exc)}") from exc
        raise UntrustedArtifact(
            f"{path.name} holds Python code (a Lambda layer's function), which Keras' safe mode refuses to load: "
            f"loading it runs that code. {TRUST_HINT}; better, replace the Lambda with a registered layer class."
        ) from exc
    except Exception as exc:  # Keras raises TypeError for classes it cannot find, and others
        raise InvalidModel(
            f"Keras cannot load {path.name}: {reason(exc)}. A model with custom layers or objects needs their "
            "classes registered (keras.saving.register_keras_serializable) in the process that registers it; "
            f"one that needs unsafe deserialization needs the trust flag ({TRUST_HINT})"
        ) from exc


class _Exported:
    """A Keras model exported to a SavedModel, and how to call it with the SavedModel's named inputs.

    ``structure`` is the export's input signature, nested as the model takes its inputs (None:
    Keras' own, when it could not be read); ``names`` are the SavedModel's input names in the
    order :func:`keras.tree.flatten` walks that structure."""

    def __init__(self, model: Any, structure: Any, names: tuple[str, ...]) -> None:
        self.model, self.structure, self.names = model, structure, names

    def arguments(self, arrays: Mapping[str, np.ndarray]) -> list[Any]:
        """The positional arguments to call the Keras model with on ``arrays`` (by input name)."""
        if self.structure is None:
            return [next(iter(arrays.values())) if len(arrays) == 1 else dict(arrays)]
        import keras

        packed: list[Any] = keras.tree.pack_sequence_as(self.structure, [arrays[name] for name in self.names])
        return packed


def stable_input_names(names: Sequence[str | None], keys: Sequence[str | None]) -> tuple[str, ...]:
    """The SavedModel input names for a Keras model's inputs, given in the order the model takes them:
    ``names`` as Keras names them, ``keys`` the dict key each comes under (None: in a list or alone).

    A name the user gave (``keras.Input(name="features")``) stays; one Keras made up from a session
    counter (``keras_tensor_6``, ``input_layer_3``; None for a subclassed model) becomes the dict key
    the input comes under, else ``input`` for a model of one input and ``input_0``, ``input_1``, ...
    (by position) for several. So the same architecture exports the same names in every session."""
    given = {name for name in names if name is not None and not _KERAS_NAMED.fullmatch(name)}
    chosen: list[str] = []
    for position, (name, key) in enumerate(zip(names, keys, strict=True)):
        if name is not None and name in given:
            chosen.append(name)
            continue
        stable = key if key is not None else "input" if len(names) == 1 else f"input_{position}"
        while stable in given or stable in chosen:  # a user's own name that looks like a made-up one
            stable += "_"
        chosen.append(stable)
    return tuple(chosen)


def _input_structure(keras_model: Any) -> tuple[Any, tuple[str, ...]] | None:
    """The input signature Keras' export would use, with :func:`stable_input_names`; None if it cannot be read."""
    import keras
    import tensorflow as tf

    try:
        from keras.src.export.export_utils import get_input_signature

        default = get_input_signature(keras_model)
        leaves = keras.tree.flatten_with_path(default)
    except Exception:  # an older or newer Keras, or a model Keras cannot describe: its export says why
        log.debug("cannot read the Keras model's input signature; the export keeps Keras' input names", exc_info=True)
        return None
    keys = [path[-1] if path and isinstance(path[-1], str) else None for path, _ in leaves]
    names = stable_input_names([getattr(spec, "name", None) for _, spec in leaves], keys)
    chosen = iter(names)
    structure = keras.tree.map_structure(lambda spec: tf.TensorSpec(spec.shape, spec.dtype, name=next(chosen)), default)
    return structure, names


def _export(keras_model: Any, target: Path, notes: list[str]) -> _Exported:
    found = _input_structure(keras_model)
    structure, names = found if found is not None else (None, ())
    try:
        with _quiet():
            keras_model.export(str(target), format="tf_saved_model", verbose=False, input_signature=structure)
    except Exception as exc:  # Keras raises many types for models it cannot trace
        raise InvalidModel(f"Keras cannot export the model as a SavedModel: {reason(exc)}") from exc
    if found is None:
        notes.append("input names as Keras gave them (its input signature could not be read)")
    return _Exported(keras_model, structure, names)


def _serving_signature(functions: Mapping[str, Any], notes: list[str]) -> str:
    """The signature registered: ``serving_default``, or the only one there is."""
    if tf_runtime.DEFAULT_SIGNATURE in functions:
        name = tf_runtime.DEFAULT_SIGNATURE
    elif len(functions) == 1:
        (name,) = functions
        notes.append(f"the SavedModel's only signature {name!r} is the one served")
    else:
        raise InvalidModel(
            f"the SavedModel has no {tf_runtime.DEFAULT_SIGNATURE!r} signature and several others "
            f"({', '.join(functions) or 'none'}); save it with a serving_default signature"
        )
    return name


def _in_order(
    inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], names: Sequence[str]
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The signature's specs in an order that does not change from one load to the next (a SavedModel
    keeps them in a protobuf map): inputs as the Keras model takes them (``names``), else by name;
    outputs ``output_0``, ``output_1``, ... by number, else by name."""
    position = {name: index for index, name in enumerate(names)}
    if set(position) != {spec.name for spec in inputs}:
        position = {name: index for index, name in enumerate(sorted(spec.name for spec in inputs))}
    ordered = tuple(sorted(inputs, key=lambda spec: position[spec.name]))
    by_name = {spec.name: spec for spec in outputs}
    return ordered, tuple(by_name[name] for name in _output_order(by_name))


def _output_order(names: Iterable[str]) -> list[str]:
    """``output_0``, ``output_1``, ... by number (Keras' names for a list of outputs), else by name."""
    listed = list(names)
    if all(_OUTPUT_INDEX.fullmatch(name) for name in listed):
        return sorted(listed, key=lambda n: int(n.split("_")[1]))
    return sorted(listed)


def _sample(sample: object, inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """The sample as the signature's named inputs, in their dtypes, checked against their shapes."""
    given, _ = sample_arrays(sample)
    if len(given) == 1 and len(inputs) == 1:
        given = {inputs[0].name: next(iter(given.values()))}
    names = [spec.name for spec in inputs]
    if sorted(given) != sorted(names):
        raise InvalidModel(f"the sample's inputs ({', '.join(given)}) are not the model's ({', '.join(names)})")
    arrays = {}
    for spec in inputs:
        arr = given[spec.name]
        fits = arr.ndim == len(spec.shape) and all(w in (-1, g) for w, g in zip(spec.shape, arr.shape, strict=True))
        if not fits:
            raise InvalidModel(
                f"sample input {spec.name!r} has shape {list(arr.shape)}; the model takes {list(spec.shape)} "
                "(-1: any size, the first dimension is the batch)"
            )
        if spec.datatype == "BYTES":
            arrays[spec.name] = np.frompyfunc(lambda v: v.encode("utf-8") if isinstance(v, str) else v, 1, 1)(
                arr.astype(object)
            ).astype(object)
        else:
            arrays[spec.name] = arr.astype(dtype_of(spec.datatype))
    return arrays


def _signature(
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    arrays: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
) -> Signature:
    """The declared specs, NaN allowed where the sample has it, output datatypes as answered."""
    taken = tuple(
        TensorSpec(
            spec.name,
            spec.datatype,
            spec.shape,
            allow_nan=arrays[spec.name].dtype.kind == "f" and bool(np.isnan(arrays[spec.name]).any()),
            binary=spec.binary,
        )
        for spec in inputs
    )
    given = tuple(TensorSpec(spec.name, datatype_of(got[spec.name].dtype), spec.shape) for spec in outputs)
    return Signature(taken, given, example_of(arrays))


def _ordered(outputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """A SavedModel's outputs in the order of the Keras model's (``output_0``, ``output_1``, ... by
    number; names from a dict output sorted, as ``tf.nest.flatten`` orders a dict)."""
    return [outputs[name] for name in _output_order(outputs)]


def _check_export(exported: _Exported, arrays: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> str:
    """That the exported SavedModel answers like the Keras model on the sample (else InvalidModel)."""
    import tensorflow as tf

    try:
        with _quiet():
            answer = exported.model(*exported.arguments(arrays), training=False)
            want = [np.asarray(value) for value in tf.nest.flatten(answer)]
    except Exception as exc:
        raise InvalidModel(f"the Keras model raised on the sample input: {reason(exc)}") from exc
    mine = _ordered(got)
    if len(want) != len(mine):
        raise InvalidModel(f"the exported SavedModel has {len(mine)} outputs, the Keras model {len(want)}")
    problem, max_diff = disagreement(_numbered(mine), _numbered(want), atol=ATOL, rtol=RTOL)
    if problem:
        raise InvalidModel(
            f"the exported SavedModel answers differently from the Keras model on the sample ({problem})"
        )
    return (
        f"exported to a SavedModel with Keras' model.export; it answers like the Keras model, max |Δ| = {max_diff:.2g}"
    )


# --- ONNX --------------------------------------------------------------------------------------


class _Served:
    def __init__(self, onnx: bytes | None, note: str) -> None:
        self.onnx, self.note = onnx, note


def _onnx_or_native(
    tf: Any,
    function: Any,
    arrays: Mapping[str, np.ndarray],
    want: Mapping[str, np.ndarray],
    runtime: str | None,
    *,
    others: list[str],
) -> _Served:
    native = "serving the SavedModel with the native tensorflow runtime"
    if runtime == "tensorflow":
        return _Served(None, f"native tensorflow runtime requested; ONNX conversion skipped; {native}")
    if others and runtime is None:
        return _Served(
            None,
            f"the SavedModel has other signatures ({', '.join(others)}); ONNX conversion skipped and {native}, "
            "so TF Serving's signature_name can select them",
        )
    data, reason = _convert(tf, function, arrays, want)
    if data is None:
        if runtime == "onnx":
            raise InvalidModel(f"the ONNX runtime was requested but {reason}")
        return _Served(None, f"{reason}; {native}")
    served = f"{reason}; serving ONNX (the SavedModel is kept in the artifact)"
    if others:
        served += f"; the other signatures ({', '.join(others)}) are not served (runtime onnx was asked for)"
    return _Served(data, served)


def _convert(
    tf: Any, function: Any, arrays: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]
) -> tuple[bytes | None, str]:
    """ONNX bytes of ``function`` with a dynamic batch dimension, verified on the sample, or None and why."""
    rows = len(next(iter(arrays.values())))
    try:
        import tf2onnx

        _, named = function.structured_input_signature
        names = list(named)
        specs = [tf.TensorSpec(spec.shape, spec.dtype, name=n) for n, spec in named.items()]
        wrapped = tf.function(lambda *args: function(**dict(zip(names, args, strict=True))), input_signature=specs)
        with _quiet():
            proto, _ = tf2onnx.convert.from_function(wrapped, input_signature=specs, opset=OPSET)
        data: bytes = proto.SerializeToString()
        session = onnx_runtime.session(data)
        order = list(want)
        got = dict(zip(order, session.run(order, dict(arrays)), strict=True))
        first = dict(zip(order, session.run(order, {n: a[:1] for n, a in arrays.items()}), strict=True))
    except Exception as exc:  # tf2onnx and ONNX Runtime raise many types for what they cannot convert or run
        log.info("ONNX conversion of the TensorFlow model failed", exc_info=True)
        return None, f"ONNX conversion failed: {reason(exc)}"
    problem, max_diff = disagreement(got, {n: want[n] for n in order}, atol=ATOL, rtol=RTOL)
    if not problem:
        problem, _ = disagreement(first, {n: want[n][:1] for n in order}, atol=ATOL, rtol=RTOL)
        problem = problem and f"on one row: {problem}"
    if problem:
        return None, f"ONNX output disagrees with TensorFlow on the sample ({problem})"
    return data, (
        f"converted to ONNX with tf2onnx (opset {OPSET}, dynamic batch dimension); verified on {rows} sample rows "
        f"and on one row, max |Δ| = {max_diff:.2g} (tolerance |Δ| <= {ATOL:g} + {RTOL:g}·|y|)"
    )


def _numbered(outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"output {index}": np.asarray(value) for index, value in enumerate(outputs)}


@contextmanager
def _quiet() -> Iterator[None]:
    """tf2onnx logs every op it cannot convert at ERROR, and TensorFlow/Keras log while tracing: the
    notes say what matters, so their loggers stay at CRITICAL for the call."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
