"""ONNX graph work done once at registration: convert, rename outputs, remove ZipMap, read specs.

After this the ONNX runtime serves the graph as it is: canonical output names, plain tensors.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InvalidModel
from modelport.types import TensorSpec, datatype_of

log = logging.getLogger("modelport")


def opset(model: Any) -> int:
    """The default-domain opset the graph targets."""
    return max((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def load_checked(path: Path) -> Any:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        raise InvalidModel(f"{path.name} is not a valid ONNX model: {type(exc).__name__}: {exc}") from exc
    return model


# Column datatypes -> skl2onnx's input types (looked up by name: skl2onnx is imported lazily).
_COLUMN_TYPES = {"FP32": "FloatTensorType", "INT64": "Int64TensorType", "BYTES": "StringTensorType"}


def from_sklearn(
    estimator: Any,
    *,
    n_features: int = 0,
    outputs: Mapping[str, np.ndarray],
    columns: Mapping[str, str] | None = None,
) -> Any:
    """Convert with skl2onnx, outputs named as ``outputs``.

    The graph takes one FP32 input "input" [-1, n_features], or with ``columns`` (name ->
    FP32, INT64 or BYTES) one 1-D input [-1] per column, named by the column: skl2onnx's
    ColumnTransformer takes [N, 1] columns, which a Reshape at the graph's entrance makes of
    them. Classifiers convert without ZipMap; a 1-D regression output is reshaped to [-1].
    """
    import onnx
    from skl2onnx import to_onnx
    from skl2onnx.common import data_types

    if columns is None:
        initial = [("input", data_types.FloatTensorType([None, n_features]))]
    else:
        unsupported = [f"{name} ({datatype})" for name, datatype in columns.items() if datatype not in _COLUMN_TYPES]
        if unsupported:
            raise InvalidModel(f"no ONNX input type for column {unsupported[0]}")
        initial = [
            (name, getattr(data_types, _COLUMN_TYPES[datatype])([None, 1])) for name, datatype in columns.items()
        ]
    options = {"zipmap": False} if "label" in outputs else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = to_onnx(estimator, initial_types=initial, options=options, target_opset=None)
    for warning in caught:
        log.debug("skl2onnx: %s", warning.message)
    graph = model.graph
    names = list(outputs)
    name_outputs(graph, names, "skl2onnx")
    if "prediction" in outputs and outputs["prediction"].ndim == 1:
        _flatten_output(graph, "prediction")
    if columns is not None:
        taken = [name for name in columns if name in names]
        if taken:
            raise InvalidModel(f"column {taken[0]!r} has the name of an output; rename the column")
        for name in reversed(list(columns)):
            _column_input(graph, name)
    onnx.checker.check_model(model)
    return model


def _column_input(graph: Any, name: str) -> None:
    """Make the [N, 1] graph input ``name`` a [N] one, reshaped to [N, 1] by the graph's first node."""
    from onnx import helper, numpy_helper

    inner, shape = _unique(graph, f"{name}_2d"), _unique(graph, f"{name}_shape")
    rename(graph, name, inner)
    graph_input = next(i for i in graph.input if i.name == inner)
    graph_input.name = name  # the graph input keeps its name; the nodes read the Reshape's output
    dims = graph_input.type.tensor_type.shape.dim
    del dims[1:]
    dims[0].Clear()
    graph.initializer.append(numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), shape))
    graph.node.insert(0, helper.make_node("Reshape", [name, shape], [inner], name=f"{name}_column"))


def _tensor_names(graph: Any) -> set[str]:
    names = {t.name for t in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def rename(graph: Any, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere, moving a tensor already called ``new`` aside."""
    if old == new:
        return
    if new in _tensor_names(graph):
        rename(graph, new, _unique(graph, f"{new}_inner"))
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.name == old:
            info.name = new
    for tensor in graph.initializer:
        if tensor.name == old:
            tensor.name = new


def _unique(graph: Any, base: str) -> str:
    taken, name, n = _tensor_names(graph), base, 0
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


def _flatten_output(graph: Any, name: str) -> None:
    """Make a [N, 1] graph output ``name`` a [N] one with a Reshape at the end of the graph."""
    from onnx import helper, numpy_helper

    output = next(o for o in graph.output if o.name == name)
    if len(output.type.tensor_type.shape.dim) == 1:
        return
    inner, shape = _unique(graph, f"{name}_2d"), _unique(graph, f"{name}_shape")
    rename(graph, name, inner)
    output.name = name  # rename() renamed the graph output too; the output is the Reshape's now
    graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), shape))
    graph.node.append(helper.make_node("Reshape", [inner, shape], [name], name=f"{name}_flatten"))
    dims = output.type.tensor_type.shape.dim
    del dims[1:]
    dims[0].Clear()


def remove_zipmap(model: Any) -> list[tuple[str, str]]:
    """Replace outputs produced by ZipMap (sequences of maps) with the ZipMap's input tensor.

    Returns (removed output, tensor now output) pairs.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    removed = []
    for output in graph.output:
        node = producers.get(output.name)
        if node is None or node.op_type != "ZipMap" or output.type.WhichOneof("value") != "sequence_type":
            continue
        attrs = {a.name: a for a in node.attribute}
        n_classes = len(attrs["classlabels_strings"].strings) if "classlabels_strings" in attrs else None
        if n_classes is None and "classlabels_int64s" in attrs:
            n_classes = len(attrs["classlabels_int64s"].ints)
        source = node.input[0]
        removed.append((output.name, source))
        output.CopyFrom(helper.make_tensor_value_info(source, TensorProto.FLOAT, [None, n_classes]))
        graph.node.remove(node)
    if removed:
        import onnx

        onnx.checker.check_model(model)
    return removed


def _spec(info: Any) -> TensorSpec:
    from onnx import helper

    kind = info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise InvalidModel(
            f"graph tensor {info.name!r} is a {kind}, not a tensor; modelport serves models whose inputs "
            "and outputs are plain tensors"
        )
    tensor = info.type.tensor_type
    try:
        datatype = datatype_of(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)))
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidModel(f"graph tensor {info.name!r} has an element type modelport cannot serve") from exc
    if not tensor.HasField("shape"):
        raise InvalidModel(f"graph tensor {info.name!r} declares no shape; register the model with a sample input")
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(info.name, datatype, shape)


def specs(model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's input and output specs (dynamic dims are -1)."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    inputs = tuple(_spec(i) for i in graph.input if i.name not in constants)
    return inputs, tuple(_spec(o) for o in graph.output)


def name_outputs(graph: Any, names: list[str], converter: str) -> None:
    """Give a converter's graph the outputs ``names``, in order: its first outputs renamed, the rest
    dropped; InvalidModel when it produced fewer."""
    produced = [out.name for out in graph.output]
    if len(produced) < len(names):
        raise InvalidModel(f"{converter} produced outputs {produced}, expected {names}")
    for extra in produced[len(names) :]:
        graph.output.remove(next(o for o in graph.output if o.name == extra))
    for old, new in zip(produced, names, strict=False):
        rename(graph, old, new)
