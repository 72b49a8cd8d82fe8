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

What a SavedModel may hold without trust: any op except those that reach outside the model, which
:func:`unsafe_ops` finds in ``saved_model.pb`` itself (every meta graph's main graph and every
function of its library, so every function a signature calls, however deeply nested, and the
resource initializers that loading runs): ops that run Python (``PyFunc``, ``EagerPyFunc``), read,
write, list or delete files (``ReadFile``, ``WriteFile``, ``MatchingFiles``, the readers, the
file datasets, checkpoints, summaries, debug and ``PrintV2`` dumps to files, vocabulary files,
``ImmutableConst``), or talk to other processes or hosts (RPC, tf.data service, collectives,
send/recv): :data:`UNSAFE_OPS`. It is a deny-list by name pattern, for TensorFlow has some 1,900
ops and no category on them; a test checks it against every op of the installed TensorFlow whose
inputs or attributes name a file, path, directory, URL or address. The checkpoint ops that save and
restore the variables (``SaveV2``, ``RestoreV2``, ``MergeV2Checkpoints``), which every SavedModel
has, are allowed in the saver's own graph only (:data:`CHECKPOINT_OPS`): the main-graph nodes and
the functions only ``saver_def``'s save and restore ops reach (a TF2 load never runs them; it
restores ``variables/`` itself). A version whose SavedModel has such ops loads only when it was
registered as trusted; the file decides at every load, not the version's manifest.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
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

# What no SavedModel may hold without trust, by what it reaches: op names (whole-name patterns).
UNSAFE_OPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("runs Python", re.compile(r"\w*PyFunc\w*")),
    (
        "reads or writes files",
        re.compile(
            r"ReadFile|WriteFile|MatchingFiles|FileSystemSetConfiguration|ImmutableConst|DumpTensor"
            r"|InitializeTableFromTextFile(V2)?|GenerateVocabRemapping|FixedUnigramCandidateSampler|Skipgram"
            r"|RecordInput|LoadAndRemapMatrix|CalibrationStatisticsSaver"
            r"|(Save|Restore)\w*|MergeV2Checkpoints|DTensorRestoreV2"  # checkpoints
            r"|\w*Reader\w*"  # the queue readers (TextLineReaderV2, ReaderReadV2, ...)
            r"|Write\w*|\w*Summary\w*Writer|ImportEvent"  # summaries
            r"|(Experimental)?(TextLine|TFRecord|FixedLengthRecord|CSV|LMDB|Sql|MatchingFiles)Dataset(V\d)?"
            r"|(Experimental)?DatasetToTFRecord|CacheDataset(V\d)?|LoadDataset|Snapshot\w*Dataset\w*"
            r"|ListSnapshotChunksDataset"
        ),
    ),
    ("writes to files or the network", re.compile(r"Debug(Identity|NanCount|NumericSummary)\w*")),  # debug_urls
    (
        "talks to other processes or hosts",
        re.compile(
            r"Rpc\w*|DeleteRpcFutureResource|RemoteCall|DataServiceDataset\w*|RegisterDataset\w*|DistributedSave"
            r"|_?Collective\w*|_?Nccl\w*|\w*(Send|Recv)\w*|\w*DistributedTPU\w*"
        ),
    ),
)
# The saver's own ops, allowed in the graph only saver_def's save and restore ops reach.
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints"})
_MAIN_GRAPH = "the main graph"


def import_tensorflow() -> Any:
    """TensorFlow, with its C++ logging at errors only unless ``TF_CPP_MIN_LOG_LEVEL`` is set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    return tensorflow


def unsafe_ops(saved_model: Path) -> list[str]:
    """The ops in the SavedModel directory ``saved_model`` that need trust (see the module
    docstring), each as ``"ReadFile (reads or writes files) in function __inference_serve_12"``;
    empty when it holds none. Reads ``saved_model.pb`` with TensorFlow's protobuf classes; runs nothing."""
    path = Path(saved_model) / "saved_model.pb"
    if not path.is_file():
        raise InvalidModel(f"{saved_model} holds no saved_model.pb")
    try:
        import_tensorflow()
        from tensorflow.core.protobuf import saved_model_pb2
    except ImportError as exc:
        raise InvalidModel(f"TensorFlow is not installed here ({exc}); install tensorflow-cpu") from None
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError, and others for what it cannot parse
        raise InvalidModel(f"{path} is not a SavedModel: {type(exc).__name__}: {exc}") from None
    found: dict[str, None] = {}
    for meta_graph in proto.meta_graphs:
        graph, saver = meta_graph.graph_def, meta_graph.saver_def
        functions = {function.signature.name: function for function in graph.library.function}
        saver_nodes = _saver_nodes(graph.node, (saver.save_tensor_name, saver.restore_op_name))
        calls = {name: _called(f.node_def, functions) for name, f in functions.items()}
        by_saver = _reach(
            {f for node in graph.node if node.name in saver_nodes for f in _called([node], functions)}, calls
        )
        roots = {f for node in graph.node if node.name not in saver_nodes for f in _called([node], functions)}
        strict = _reach(roots | (functions.keys() - by_saver), calls)
        for node in graph.node:
            _judge(node, _MAIN_GRAPH, node.name in saver_nodes, functions, found)
        for name, function in functions.items():
            for node in function.node_def:
                _judge(node, f"function {name}", name not in strict, functions, found)
    return list(found)


def _judge(node: Any, where: str, saver: bool, functions: Mapping[str, Any], found: dict[str, None]) -> None:
    if node.op in functions or (saver and node.op in CHECKPOINT_OPS):
        return
    why = next((what for what, pattern in UNSAFE_OPS if pattern.fullmatch(node.op)), None)
    if why is None and node.op == "PrintV2" and node.attr["output_stream"].s.startswith(b"file://"):
        why = "reads or writes files"  # tf.print(..., output_stream="file://...")
    if why is None and node.op in ("DecodeProtoV2", "EncodeProto"):
        source = node.attr["descriptor_source"].s
        if source != b"local://" and not source.startswith(b"bytes://"):
            why = "reads or writes files"  # a descriptor set read from a file
    if why is not None:
        found[f"{node.op} ({why}) in {where}"] = None


def _called(nodes: Iterable[Any], functions: Mapping[str, Any]) -> set[str]:
    """The library functions ``nodes`` call: by their op's name, or in an attribute (``f``,
    ``then_branch``, ``body``, a ``Case``'s ``branches``, a dataset's map function, ...)."""
    names: set[str] = set()
    for node in nodes:
        names.update(name for name in (node.op,) if name in functions)
        for attr in node.attr.values():
            names.update(f.name for f in ((attr.func,) if attr.HasField("func") else attr.list.func))
    return names


def _reach(roots: set[str], calls: Mapping[str, Iterable[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(calls.get(name, ()))
    return seen


def _saver_nodes(nodes: Iterable[Any], tensors: Iterable[str]) -> set[str]:
    """The main-graph nodes that only the saver's save and restore ops need (their inputs, and
    theirs, that no other node needs)."""
    inputs = {node.name: [name.lstrip("^").split(":")[0] for name in node.input] for node in nodes}
    saver = _reach({name.split(":")[0] for name in tensors if name}, inputs)
    return saver - _reach(inputs.keys() - saver, inputs)


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
