"""The native XGBoost runtime: a Booster loaded from the artifact's XGBoost JSON or UBJ model file.

No pickle is involved: ``xgboost.Booster(model_file=...)`` reads XGBoost's own format, which
holds trees and parameters, never code. But XGBoost trusts what the trees hold, so
:func:`check_model_file` reads the file first (JSON, or UBJSON with the small decoder here:
XGBoost's own UBJ loader crashes on some crafted categorical splits) and refuses trees whose
children, split features, categories, tree ids or classes its predict would follow out of
bounds or round a cycle. ``inplace_predict`` scores the NumPy rows directly
(no DMatrix) and is thread-safe for tree boosters, so several requests may predict at once; the
``threads`` given at load become the booster's ``nthread``. See :mod:`modelport.runtimes.boosted`
for the manifest and the outputs.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidModel
from modelport.runtimes import boosted
from modelport.runtimes.base import Capabilities
from modelport.runtimes.boosted import BoostedRuntime, Manifest

SUFFIXES = (".json", ".ubj")
NO_NODE = -1  # a leaf's children
MAX_CATEGORY = 1 << 24  # XGBoost takes categories >= 2**24 as invalid: no split names one
MAX_DEPTH = 64  # nesting of JSON/UBJSON containers (XGBoost's models nest 6 deep)


def open_booster(path: Path, threads: int = 1) -> Any:
    """The Booster stored at ``path`` (XGBoost JSON or UBJ), predicting with ``threads`` threads,
    once :func:`check_model_file` passed it."""
    import xgboost

    check_model_file(path)
    booster = xgboost.Booster(model_file=str(path))
    booster.set_param({"nthread": threads})
    return booster


def scores(booster: Any, x: np.ndarray, missing: float | None = None) -> np.ndarray:
    """The booster's predictions (probabilities for classifiers) on the rows ``x``."""
    return np.asarray(booster.inplace_predict(x, missing=np.nan if missing is None else missing))


class XGBoostRuntime(BoostedRuntime):
    kind: ClassVar[str] = "xgboost"
    # inplace_predict is thread-safe for tree boosters (gblinear is refused at load)
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=True, thread_safe=True, runs_code=False)
    library: ClassVar[str] = "xgboost"
    suffixes: ClassVar[tuple[str, ...]] = SUFFIXES

    def _open(self, path: Path, manifest: Manifest, threads: int) -> Any:
        import json

        booster = open_booster(path, threads)
        name = json.loads(booster.save_config())["learner"]["gradient_booster"]["name"]
        if name not in ("gbtree", "dart"):
            raise InvalidModel(f"{path.name} is a {name} booster; the xgboost runtime serves tree boosters")
        return booster

    def _scores(self, booster: Any, x: np.ndarray, manifest: Manifest) -> np.ndarray:
        return scores(booster, x, manifest.missing)


def check_model_file(path: Path) -> None:
    """Refuse (:class:`boosted.UncheckedTrees`) an XGBoost model file whose trees predict would
    follow out of bounds or forever, before XGBoost reads it."""
    data = Path(path).read_bytes()
    try:
        model = json.loads(data) if path.suffix.lower() == ".json" else _ubjson(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise boosted.refusal(path, "XGBoost", f"it is not JSON/UBJSON modelport can read: {exc}") from None
    try:
        _check_model(model)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        problem = str(exc) if isinstance(exc, ValueError) else f"it is not laid out as XGBoost writes it ({exc!r})"
        raise boosted.refusal(path, "XGBoost", problem) from None


def _check_model(model: Any) -> None:
    learner = model["learner"]
    parameters = learner["learner_model_param"]
    features, classes, targets = (int(parameters.get(k, 0) or 0) for k in ("num_feature", "num_class", "num_target"))
    if features < 1:
        raise ValueError(f"num_feature is {features}")
    groups = classes if classes > 0 else max(targets, 1)
    booster = learner["gradient_booster"]
    if booster["name"] not in ("gbtree", "dart"):
        raise ValueError(f"it is a {booster['name']} booster; modelport serves tree boosters (gbtree, dart)")
    gbtree = booster["gbtree"]["model"] if booster["name"] == "dart" else booster["model"]
    trees, info = gbtree["trees"], _ints(gbtree["tree_info"], "tree_info")
    count = int(gbtree["gbtree_model_param"]["num_trees"])
    if not isinstance(trees, list) or len(trees) != count or len(info) != count:
        raise ValueError(f"num_trees is {count}, for {len(trees)} trees and {len(info)} tree_info entries")
    if ((info < 0) | (info >= groups)).any():
        raise ValueError(f"tree_info names an output outside 0..{groups - 1}")
    if booster["name"] == "dart" and len(booster["weight_drop"]) != count:
        raise ValueError(f"weight_drop has {len(booster['weight_drop'])} weights for {count} trees")
    indptr = _ints(gbtree.get("iteration_indptr", [0, count]), "iteration_indptr")
    if not len(indptr) or indptr[0] != 0 or indptr[-1] != count or (np.diff(indptr) < 0).any():
        raise ValueError(f"iteration_indptr does not split the {count} trees into iterations")
    _check_categories(gbtree.get("cats"), features)
    for index, tree in enumerate(trees):
        if int(tree["id"]) != index:
            raise ValueError(f"tree {index} says it is tree {tree['id']}")
        try:
            _check_tree(tree, features)
        except ValueError as exc:
            raise ValueError(f"tree {index}: {exc}") from None


def _ints(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise ValueError(f"{name} is not a list of integers")
    return array.astype(np.int64)


def _check_tree(tree: Mapping[str, Any], features: int) -> None:
    nodes = int(tree["tree_param"]["num_nodes"])
    if nodes < 1:
        raise ValueError(f"num_nodes is {nodes}")
    names = ("left_children", "right_children", "parents", "split_indices", "default_left")
    columns = {name: _ints(tree[name], name) for name in names}
    columns["split_type"] = _ints(tree.get("split_type", np.zeros(nodes, np.int64)), "split_type")  # XGBoost < 1.6
    for name in ("split_conditions", "base_weights", *columns):
        if len(tree[name] if name in tree else columns[name]) < nodes:
            raise ValueError(f"{name} has {len(tree[name])} entries for {nodes} nodes")
    left, right = columns["left_children"][:nodes], columns["right_children"][:nodes]
    inner = left != NO_NODE
    if "leaf_weights" in tree:  # a multi-target tree: a leaf's right child is its row of leaf weights
        width = max(int(tree["tree_param"].get("size_leaf_vector", 1)), 1)
        rows = len(tree["leaf_weights"]) // width
        if ((right[~inner] < 0) | (right[~inner] >= rows)).any():
            raise ValueError(f"a leaf names a row of leaf weights outside 0..{rows - 1}")
    elif (right[~inner] != NO_NODE).any():
        raise ValueError("a leaf has a right child")
    reached = boosted.walk(left, right, inner)
    splits = reached & inner
    parents = columns["parents"][:nodes]
    for children in (left, right):
        if (parents[children[splits]] != np.flatnonzero(splits)).any():
            raise ValueError("a node's parent is not the node it is the child of")
    feature = columns["split_indices"][:nodes][splits]
    if ((feature < 0) | (feature >= features)).any():
        raise ValueError(f"a split names a feature outside 0..{features - 1}")
    kind = columns["split_type"][:nodes]
    default_left = columns["default_left"][:nodes]
    if ((kind[splits] != 0) & (kind[splits] != 1)).any() or ((default_left < 0) | (default_left > 1)).any():
        raise ValueError("a split's type or default direction is not 0 or 1")
    categorical = np.flatnonzero(splits & (kind == 1))
    named = _ints(tree.get("categories_nodes", []), "categories_nodes")
    if not np.array_equal(np.sort(named), categorical) or (np.diff(named) <= 0).any():
        raise ValueError("categories_nodes are not its categorical splits, in order")
    segments = _ints(tree.get("categories_segments", []), "categories_segments")
    sizes = _ints(tree.get("categories_sizes", []), "categories_sizes")
    categories = _ints(tree.get("categories", []), "categories")
    if len(segments) != len(named) or len(sizes) != len(named):
        raise ValueError("categories_segments and categories_sizes are not one per categorical split")
    if (sizes < 1).any() or (segments < 0).any() or (segments + sizes > len(categories)).any():
        raise ValueError("a categorical split's categories are outside the categories list")
    if ((categories < 0) | (categories >= MAX_CATEGORY)).any():
        raise ValueError(f"a category is outside 0..{MAX_CATEGORY - 1}")


def _check_categories(cats: Any, features: int) -> None:
    """The categories a DataFrame's columns are re-coded with (XGBoost 3): each feature's
    segment of ``sorted_idx`` indexes that feature's categories only."""
    if cats is None:
        return
    segments = _ints(cats.get("feature_segments", []), "feature_segments")
    order = _ints(cats.get("sorted_idx", []), "sorted_idx")
    if not segments.size:
        if order.size:
            raise ValueError("cats has a sorted_idx but no feature_segments")
        return
    if len(segments) != features + 1 or segments[0] != 0 or segments[-1] != len(order) or (np.diff(segments) < 0).any():
        raise ValueError("cats.feature_segments does not split sorted_idx into one segment per feature")
    for start, end in itertools.pairwise(segments):
        part = order[start:end]
        if ((part < 0) | (part >= end - start)).any():
            raise ValueError("cats.sorted_idx indexes outside its feature's categories")
    for encoding in cats.get("enc", []):
        offsets = encoding.get("offsets") if isinstance(encoding, Mapping) else None
        if offsets is not None and len(offsets):
            offsets = _ints(offsets, "cats offsets")
            if offsets[0] != 0 or offsets[-1] != len(encoding["values"]) or (np.diff(offsets) < 0).any():
                raise ValueError("cats offsets do not split its values")


# --- UBJSON (the format XGBoost's .ubj files are written in) ------------------------------------

_NUMBERS = {b"i": ">i1", b"U": ">u1", b"I": ">i2", b"l": ">i4", b"L": ">i8", b"d": ">f4", b"D": ">f8"}


def _ubjson(data: bytes) -> Any:
    """The value a UBJSON document holds: typed numeric arrays as NumPy arrays, the rest as the
    json module gives them. Every count is checked against the bytes left, so a crafted count
    can neither allocate nor loop beyond the file; ValueError for anything malformed."""
    value, end = _value(data, 0, None, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the document")
    return value


def _marker(data: bytes, pos: int) -> tuple[bytes, int]:
    while pos < len(data) and data[pos : pos + 1] == b"N":  # no-op
        pos += 1
    if pos >= len(data):
        raise ValueError("the document ends early")
    return data[pos : pos + 1], pos + 1


def _number(data: bytes, pos: int, marker: bytes) -> tuple[Any, int]:
    dtype = np.dtype(_NUMBERS[marker])
    if pos + dtype.itemsize > len(data):
        raise ValueError("the document ends early")
    return np.frombuffer(data, dtype, 1, pos)[0].item(), pos + dtype.itemsize


def _length(data: bytes, pos: int) -> tuple[int, int]:
    marker, pos = _marker(data, pos)
    if marker not in _NUMBERS or marker in (b"d", b"D"):
        raise ValueError(f"a length is not an integer (marker {marker!r})")
    length, pos = _number(data, pos, marker)
    if not 0 <= length <= len(data) - pos:
        raise ValueError(f"a length of {length} runs past the document")
    return int(length), pos


def _value(data: bytes, pos: int, marker: bytes | None, depth: int) -> tuple[Any, int]:
    if marker is None:
        marker, pos = _marker(data, pos)
    if marker in _NUMBERS:
        return _number(data, pos, marker)
    if marker in (b"T", b"F", b"Z"):
        return {b"T": True, b"F": False, b"Z": None}[marker], pos
    if marker == b"C":
        if pos >= len(data):
            raise ValueError("the document ends early")
        return data[pos : pos + 1].decode("ascii"), pos + 1
    if marker in (b"S", b"H"):
        length, pos = _length(data, pos)
        text = data[pos : pos + length].decode("utf-8")
        return (text if marker == b"S" else float(text)), pos + length
    if marker in (b"[", b"{"):
        if depth >= MAX_DEPTH:
            raise ValueError(f"containers nest deeper than {MAX_DEPTH}")
        return _container(data, pos, marker == b"{", depth + 1)
    raise ValueError(f"unknown marker {marker!r} at byte {pos - 1}")


def _container(data: bytes, pos: int, is_object: bool, depth: int) -> tuple[Any, int]:
    kind: bytes | None = None
    count: int | None = None
    if data[pos : pos + 1] == b"$":
        kind, pos = data[pos + 1 : pos + 2], pos + 2
        if data[pos : pos + 1] != b"#":
            raise ValueError("a typed container without a count")
    if data[pos : pos + 1] == b"#":
        count, pos = _length(data, pos + 1)  # each item takes at least a byte, so count <= the bytes left
    if not is_object and kind in _NUMBERS and count is not None:
        dtype = np.dtype(_NUMBERS[kind])
        if count * dtype.itemsize > len(data) - pos:
            raise ValueError(f"an array of {count} numbers runs past the document")
        array = np.frombuffer(data, dtype, count, pos).astype(dtype.newbyteorder("="))
        return array, pos + count * dtype.itemsize
    if kind in (b"T", b"F", b"Z"):
        raise ValueError("a container of empty values")  # items of no bytes: a count could be anything
    items: list[Any] = []
    values: dict[str, Any] = {}
    while count is None or len(items) + len(values) < count:
        if count is None:
            if data[pos : pos + 1] == (b"}" if is_object else b"]"):
                return (values if is_object else items), pos + 1
            if pos >= len(data):
                raise ValueError("the document ends early")
        if is_object:
            length, pos = _length(data, pos)
            key = data[pos : pos + length].decode("utf-8")
            value, pos = _value(data, pos + length, kind, depth)
            if key in values:
                raise ValueError(f"the key {key!r} appears twice")
            values[key] = value
        else:
            value, pos = _value(data, pos, kind, depth)
            items.append(value)
    return (values if is_object else items), pos
