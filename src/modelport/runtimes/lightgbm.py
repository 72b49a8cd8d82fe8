"""The native LightGBM runtime: a Booster loaded from the artifact's LightGBM text model.

No pickle is involved: ``lightgbm.Booster(model_file=...)`` parses LightGBM's text format (trees
and parameters, never code). But LightGBM trusts what the text says: its loader jumps by the
``tree_sizes`` it reads, and its predict follows child, leaf, feature and category indices
unchecked; :func:`check_model_file` parses the file first and refuses what it would follow out of
bounds or round a cycle. The ``threads`` given at load are passed as ``num_threads`` to every
predict. One booster is not declared thread-safe: LightGBM sets up a predictor on the shared
booster at every call and that set-up writes shared state (LightGBM issue #6142, open), so the
server gives this runtime one call at a time (batching merges the rows of concurrent requests).
See :mod:`modelport.runtimes.boosted` for the manifest and the outputs.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.runtimes import boosted
from modelport.runtimes.base import Capabilities
from modelport.runtimes.boosted import BoostedRuntime, Manifest

SUFFIXES = (".txt",)
TREE_KEYS = 22  # LightGBM's tree parser reads at most 22 lines, each scanned up to its "=" unchecked
MULTICLASS = ("multiclass", "multiclassova", "softmax", "ova", "ovr", "multiclass_ova")


def open_booster(path: Path) -> Any:
    """The Booster stored at ``path`` (LightGBM text model), once :func:`check_model_file` passed it."""
    import lightgbm

    check_model_file(path)
    return lightgbm.Booster(model_file=str(path))


def scores(booster: Any, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """The booster's predictions (probabilities for classifiers) on the rows ``x``."""
    return np.asarray(booster.predict(x, num_threads=threads))


class LightGBMRuntime(BoostedRuntime):
    kind: ClassVar[str] = "lightgbm"
    capabilities: ClassVar[Capabilities] = Capabilities(batch_rows=True, thread_safe=False, runs_code=False)
    library: ClassVar[str] = "lightgbm"
    suffixes: ClassVar[tuple[str, ...]] = SUFFIXES

    def _open(self, path: Path, manifest: Manifest, threads: int) -> Any:
        return open_booster(path)

    def _scores(self, booster: Any, x: np.ndarray, manifest: Manifest) -> np.ndarray:
        return scores(booster, x, self._threads)


def check_model_file(path: Path) -> None:
    """Refuse (:class:`boosted.UncheckedTrees`) a LightGBM text model whose layout its loader or
    whose trees its predict would follow out of bounds or forever, before LightGBM reads it."""
    try:
        _check_model(Path(path).read_bytes())
    except (ValueError, KeyError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
        problem = str(exc) if type(exc) is ValueError else f"it is not laid out as LightGBM writes it ({exc!r})"
        raise boosted.refusal(path, "LightGBM", problem) from None


def _check_model(data: bytes) -> None:
    data.decode("utf-8")
    starts = [m.start() for m in re.finditer(rb"^Tree=", data, re.MULTILINE)]
    ends = [m.start() for m in re.finditer(rb"^end of trees", data, re.MULTILINE)]
    header = _pairs(data[: starts[0] if starts else len(data)].decode().splitlines()[1:], flags=True)
    if data.split(b"\n", 1)[0].strip() != b"tree" or len(ends) != 1 or not starts or starts[-1] > ends[0]:
        raise ValueError("it is not a LightGBM text model (a header, Tree= blocks, end of trees)")
    classes, per_iteration = int(header["num_class"]), int(header["num_tree_per_iteration"])
    features = int(header["max_feature_idx"]) + 1
    if classes < 1 or per_iteration != classes or features < 1:
        raise ValueError(f"num_class {classes}, num_tree_per_iteration {per_iteration}, {features} features")
    objective = header.get("objective", "").split()
    if objective and objective[0] in MULTICLASS and f"num_class:{classes}" not in objective:
        raise ValueError(f"its objective {' '.join(objective)!r} is not for its {classes} classes")
    if len(header.get("feature_names", "").split()) != features:
        raise ValueError(f"feature_names does not name its {features} features")
    bounds = [*starts, ends[0]]
    if "tree_sizes" in header:  # the loader jumps by these: they must be where the trees are
        sizes = [int(size) for size in header["tree_sizes"].split()]
        if sizes != [b - a for a, b in itertools.pairwise(bounds)]:
            raise ValueError("tree_sizes are not the sizes of its Tree= blocks")
    if len(starts) % per_iteration:
        raise ValueError(f"{len(starts)} trees are not whole iterations of {per_iteration}")
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        lines = data[start:end].decode().split("\n")
        if lines[0] != f"Tree={index}":
            raise ValueError(f"tree {index} is headed {lines[0][:40]!r}")
        body = lines[1 : lines.index("")] if "" in lines else lines[1:]
        if any(line.strip() for line in lines[len(body) + 1 :]) or len(body) > TREE_KEYS:
            raise ValueError(f"tree {index} is not one block of at most {TREE_KEYS} key=value lines")
        try:
            _check_tree(_pairs(body), features)
        except ValueError as exc:
            raise ValueError(f"tree {index}: {exc}") from None


def _pairs(lines: list[str], *, flags: bool = False) -> dict[str, str]:
    """The key=value ``lines``; ``flags``: lines without "=" are keys (the header's average_output;
    the tree parser scans for an "=" past a line's end)."""
    pairs = {}
    for line in lines:
        if not line.strip():
            continue
        if "=" not in line and not flags:
            raise ValueError(f"the line {line[:40]!r} is not key=value")
        key, _, value = line.partition("=")
        pairs[key] = value
    return pairs


def _numbers(tree: dict[str, str], key: str, count: int, kind: type = int) -> np.ndarray:
    values = tree.get(key, "").split()
    if len(values) != count:
        raise ValueError(f"{key} has {len(values)} values, and the tree needs {count}")
    return np.array([kind(value) for value in values], dtype=np.int64 if kind is int else np.float64)


def _check_tree(tree: dict[str, str], features: int) -> None:
    leaves = int(tree["num_leaves"])
    if leaves < 1:
        raise ValueError(f"num_leaves is {leaves}")
    _numbers(tree, "leaf_value", leaves, float)
    if int(tree.get("is_linear", "0")) not in (0, 1):
        raise ValueError("is_linear is not 0 or 1")
    if int(tree.get("is_linear", "0")):
        _numbers(tree, "leaf_const", leaves, float)
        counts = _numbers(tree, "num_features", leaves)
        if (counts < 0).any():
            raise ValueError("a leaf has a negative number of features")
        used = _numbers(tree, "leaf_features", int(counts.sum()))
        _numbers(tree, "leaf_coeff", int(counts.sum()), float)
        if ((used < 0) | (used >= features)).any():
            raise ValueError(f"a linear leaf names a feature outside 0..{features - 1}")
    if leaves == 1:
        return
    splits = leaves - 1
    left, right = _numbers(tree, "left_child", splits), _numbers(tree, "right_child", splits)
    feature, decision = _numbers(tree, "split_feature", splits), _numbers(tree, "decision_type", splits)
    threshold = _numbers(tree, "threshold", splits, float)
    children = np.concatenate([left, right])
    outside = (children >= splits) | (~children >= leaves)
    if outside.any():
        raise ValueError(
            f"a split's child {int(children[outside][0])} is outside its {splits} splits and {leaves} leaves"
        )
    # one node space for walk(): the splits 0..splits-1, then the leaves (LightGBM writes leaf k as ~k)
    nodes = splits + leaves
    left, right = (np.where(c >= 0, c, splits + ~c) for c in (left, right))
    inner = np.arange(nodes) < splits
    pad = np.zeros(leaves, dtype=np.int64)
    reached = boosted.walk(np.concatenate([left, pad]), np.concatenate([right, pad]), inner)
    if not reached.all():
        raise ValueError("a split or leaf is not reached from the root")
    if ((feature < 0) | (feature >= features)).any():
        raise ValueError(f"a split names a feature outside 0..{features - 1}")
    if ((decision < 0) | (decision > 255) | (((decision >> 2) & 3) == 3)).any():
        raise ValueError("a decision_type is not one LightGBM writes")
    categories = int(tree.get("num_cat", "0"))
    categorical = (decision & 1) == 1
    if categories < 0 or (categorical.any() and not categories):
        raise ValueError(f"num_cat is {categories} for {int(categorical.sum())} categorical splits")
    if categories:
        bounds = _numbers(tree, "cat_boundaries", categories + 1)
        bits = _numbers(tree, "cat_threshold", int(bounds[-1]) if bounds[-1] >= 0 else -1)
        if bounds[0] != 0 or (np.diff(bounds) < 0).any() or ((bits < 0) | (bits >= 2**32)).any():
            raise ValueError("cat_boundaries do not split cat_threshold into bitsets")
        named = threshold[categorical]
        if ((named < 0) | (named >= categories) | (named != np.round(named))).any():
            raise ValueError(f"a categorical split names a bitset outside 0..{categories - 1}")
