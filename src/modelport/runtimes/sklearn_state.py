"""What a skops file's objects may hold before scikit-learn's compiled code is let near them.

"No code runs on load" is not "safe to serve": scikit-learn's Cython trusts the arrays inside a
fitted tree blindly (no bounds checks), so a file whose ``Tree`` names a child 2**40 reads far
outside its buffer on the first request that reaches that node (SIGSEGV), and a node that points
back to itself loops forever. :func:`check` walks everything a loaded estimator holds and:

- validates every decision tree (``sklearn.tree._tree.Tree``, in trees, forests, extra trees,
  gradient boosting, bagging, isolation forests) and every HistGradientBoosting
  ``TreePredictor``: the arrays' dtypes and shapes as scikit-learn writes them; each internal
  node's children inside the tree and after it (so no cycles), every node but the root the child
  of exactly one node (a tree, not a graph); leaves marked as scikit-learn marks them; feature
  indices below the number of features the model is given (the owner's ``n_features_in_``, the
  ensemble's, a bagging member's feature subset); a recorded depth no smaller than the real one
  (``decision_path`` sizes a buffer by it); values finite and thresholds never NaN; categorical
  splits naming a bitset that exists and a feature the bin mapper knows as categorical, with
  known categories in 0..255;
- rebuilds every neighbour index (``KDTree``, ``BallTree``) from its data and parameters with
  scikit-learn's own constructor, instead of trusting the stored node and index arrays (a
  neighbour query follows them unchecked too); the data must be finite 2-D floats;
- refuses functions (but NumPy's ufuncs, elementwise math such as ``np.log1p`` that skops
  trusts), and the allow-listed classes in a function's place (a
  ``FunctionTransformer(func=numpy.dtype)``): calling them at predict time is code the file chose.

A problem is raised as :class:`UncheckedState` naming the object and what is wrong. Whoever loads
the estimator decides what that means: without trust, it is refused.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from modelport.errors import ModelportError

TREE_LEAF = -1  # sklearn.tree._tree.TREE_LEAF
MAX_CATEGORY = 255  # HistGradientBoosting bitsets hold categories 0..255
_SKLEARN_TREE = "sklearn.tree._tree.Tree"
_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
_NEIGHBOUR_TREES = ("sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree")
_METRICS = {
    "EuclideanDistance64": "euclidean",
    "ManhattanDistance64": "manhattan",
    "ChebyshevDistance64": "chebyshev",
    "MinkowskiDistance64": "minkowski",
}


class UncheckedState(ModelportError):
    """An object in a model file holds state scikit-learn's compiled code cannot safely run on."""


def check(estimator: Any, *, classes: frozenset[str] = frozenset()) -> Any:
    """``estimator`` with its neighbour indexes rebuilt, once every tree and function in it is
    checked (see the module docstring); ``classes``: the allow-listed class names, which may be
    held as instances but never as bare classes. Raises :class:`UncheckedState`."""
    return _Walk(classes).visit(estimator, "model", None)


def _name(value: Any) -> str:
    kind = value if isinstance(value, type) else type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


class _Walk:
    def __init__(self, classes: frozenset[str]) -> None:
        self.classes = classes
        self.seen: dict[int, Any] = {}

    def visit(self, value: Any, where: str, features: int | None) -> Any:
        """``value`` (or its replacement), its parts checked; ``features``: how many columns the
        enclosing estimator is given, where known."""
        if value is None or isinstance(value, str | bytes | bool | int | float | complex | np.generic | np.dtype):
            return value
        if isinstance(value, type):
            if _name(value) in self.classes:
                raise UncheckedState(f"{where} is the class {_name(value)}, used as a function: calling it is code")
            return value
        if isinstance(value, np.ufunc):  # elementwise math (np.log1p), which skops trusts: no code of the file's
            return value
        if isinstance(value, types.FunctionType | types.BuiltinFunctionType | types.MethodType):
            raise UncheckedState(
                f"{where} is the function {getattr(value, '__module__', '?')}.{getattr(value, '__name__', '?')}: "
                "a model file that holds functions chooses code to run"
            )
        key = id(value)
        if key in self.seen:
            return self.seen[key]
        self.seen[key] = value
        name = _name(value)
        if name == _SKLEARN_TREE:
            _check_tree(value, where, features)
            return value
        if name == _PREDICTOR:
            _check_predictor(value, where, features)
            return value
        if name in _NEIGHBOUR_TREES:
            rebuilt = _rebuilt(value, where)
            self.seen[key] = rebuilt
            return rebuilt
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                for place, item in np.ndenumerate(value):
                    value[place] = self.visit(item, f"{where}{list(place)}", features)
            return value
        if isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = self.visit(item, f"{where}[{index}]", features)
            return value
        if isinstance(value, tuple):
            return tuple(self.visit(item, f"{where}[{i}]", features) for i, item in enumerate(value))
        if isinstance(value, dict):
            for item_key in list(value):
                value[item_key] = self.visit(value[item_key], f"{where}[{item_key!r}]", features)
            return value
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict):
            self._visit_object(value, attributes, where, features)
        return value

    def _visit_object(self, value: Any, attributes: dict[str, Any], where: str, features: int | None) -> None:
        own = attributes.get("n_features_in_")
        if isinstance(own, int | np.integer):
            if own < 0:
                raise UncheckedState(f"{where}.n_features_in_ is {own}")
            features = int(own)
        # members of an ensemble are given the ensemble's columns, or a bagging member's subset of them
        subsets = attributes.get("estimators_features_")
        for attribute, item in list(attributes.items()):
            if attribute == "estimators_" and features is not None:
                _check_members(item, subsets, f"{where}.estimators_", features)
            attributes[attribute] = self.visit(item, f"{where}.{attribute}", features)
        if _name(value).endswith("GradientBoostingClassifier") or _name(value).endswith("GradientBoostingRegressor"):
            _check_gradient_boosting(attributes, where)
        if "_bin_mapper" in attributes and "_predictors" in attributes:
            _check_bin_mapper(attributes["_bin_mapper"], attributes["_predictors"], where)


def _members(estimators: Any) -> Iterator[Any]:
    if isinstance(estimators, np.ndarray) and estimators.dtype.hasobject:
        yield from estimators.flat
    elif isinstance(estimators, list | tuple):
        yield from estimators


def _check_members(estimators: Any, subsets: Any, where: str, features: int) -> None:
    """Each member's ``n_features_in_`` is what the ensemble gives it (its feature subset in bagging)."""
    subsets = list(subsets) if isinstance(subsets, list | tuple) else None
    for index, member in enumerate(_members(estimators)):
        given = features
        if subsets is not None and index < len(subsets):
            subset = np.asarray(subsets[index])
            if subset.ndim != 1 or subset.dtype.kind not in "iu" or ((subset < 0) | (subset >= features)).any():
                raise UncheckedState(f"{where}[{index}]'s feature subset is not a list of columns below {features}")
            given = len(subset)
        own = getattr(member, "n_features_in_", None)
        if own is not None and own != given:
            raise UncheckedState(f"{where}[{index}] says it takes {own} features, and it is given {given}")


def _check_gradient_boosting(attributes: dict[str, Any], where: str) -> None:
    """``predict_stages`` writes column k of a (rows, trees per iteration) buffer for each member."""
    estimators = attributes.get("estimators_")
    per_iteration = attributes.get("n_trees_per_iteration_")
    if estimators is None or per_iteration is None:
        return
    if not isinstance(estimators, np.ndarray) or estimators.ndim != 2 or estimators.shape[1] != per_iteration:
        raise UncheckedState(f"{where}.estimators_ is not a grid of {per_iteration} trees per iteration")
    for member in estimators.flat:
        tree = getattr(member, "tree_", None)
        if tree is None or tree.n_outputs != 1 or int(np.max(tree.n_classes)) != 1:
            raise UncheckedState(f"{where}.estimators_ holds a member that is not a one-output regression tree")


def _check_tree(tree: Any, where: str, features: int | None) -> None:
    from sklearn.tree._tree import NODE_DTYPE

    state = tree.__getstate__()
    nodes, values = state.get("nodes"), state.get("values")
    count = state.get("node_count")
    if not isinstance(nodes, np.ndarray) or nodes.dtype != NODE_DTYPE or nodes.ndim != 1:
        raise UncheckedState(f"{where}: its node array is not scikit-learn's (dtype {NODE_DTYPE})")
    n_outputs = int(tree.n_outputs)
    n_classes = np.asarray(tree.n_classes)
    shape = (len(nodes), n_outputs, int(n_classes.max()) if n_classes.size else 0)
    if count != len(nodes) or not len(nodes) or n_classes.shape != (n_outputs,) or (n_classes < 1).any():
        raise UncheckedState(f"{where}: node_count {count} for {len(nodes)} nodes, {n_outputs} outputs")
    if not isinstance(values, np.ndarray) or values.dtype != np.float64 or values.shape != shape:
        raise UncheckedState(f"{where}: its values are not float64 of shape {list(shape)}")
    if not np.isfinite(values).all():
        raise UncheckedState(f"{where}: its values are not all finite")
    n_features = int(tree.n_features)
    if features is not None and n_features != features:
        raise UncheckedState(f"{where}: the tree takes {n_features} features, and its model is given {features}")
    left, right = nodes["left_child"], nodes["right_child"]
    leaf = left == TREE_LEAF
    if ((right == TREE_LEAF) != leaf).any():
        raise UncheckedState(f"{where}: a node has one child")
    depth = _check_structure(left, right, ~leaf, where)
    if depth > int(state.get("max_depth", -1)):
        raise UncheckedState(f"{where}: max_depth {state.get('max_depth')} is below the tree's depth {depth}")
    inner = ~leaf
    feature = nodes["feature"][inner]
    if ((feature < 0) | (feature >= n_features)).any():
        raise UncheckedState(f"{where}: a split names a feature outside 0..{n_features - 1}")
    if np.isnan(nodes["threshold"][inner]).any():
        raise UncheckedState(f"{where}: a split's threshold is NaN")
    if (nodes["missing_go_to_left"] > 1).any():
        raise UncheckedState(f"{where}: missing_go_to_left is not 0 or 1")


def _check_structure(left: np.ndarray, right: np.ndarray, inner: np.ndarray, where: str) -> int:
    """The depth of the tree whose internal nodes ``inner`` have children ``left``/``right``, once
    every child is after its parent and inside the array, and every node but the root has exactly
    one parent; else :class:`UncheckedState`."""
    count = len(left)
    index = np.arange(count)
    children = np.concatenate([left[inner], right[inner]]).astype(np.int64)
    parents = np.concatenate([index[inner], index[inner]])
    if ((children <= parents) | (children >= count)).any():
        raise UncheckedState(f"{where}: a node's child is outside the tree or not after it (a cycle)")
    if not np.array_equal(np.sort(children), np.arange(1, count)):
        raise UncheckedState(f"{where}: its nodes are not a tree (a node with two parents, or one no split reaches)")
    depth, level = 0, np.array([0])
    while True:
        level = level[inner[level]]
        if not level.size:
            return depth
        level = np.concatenate([left[level], right[level]]).astype(np.int64)
        depth += 1


def _check_predictor(predictor: Any, where: str, features: int | None) -> None:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE, X_BITSET_INNER_DTYPE

    nodes = getattr(predictor, "nodes", None)
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or not len(nodes):
        raise UncheckedState(f"{where}: its node array is not scikit-learn's (dtype {PREDICTOR_RECORD_DTYPE})")
    for name in ("binned_left_cat_bitsets", "raw_left_cat_bitsets"):
        bitsets = getattr(predictor, name, None)
        if not isinstance(bitsets, np.ndarray) or bitsets.dtype != X_BITSET_INNER_DTYPE or bitsets.ndim != 2:
            raise UncheckedState(f"{where}.{name} is not scikit-learn's (uint32 rows of 8)")
        if bitsets.shape[1] != 8:
            raise UncheckedState(f"{where}.{name} is not scikit-learn's (uint32 rows of 8)")
    if (nodes["is_leaf"] > 1).any() or (nodes["missing_go_to_left"] > 1).any() or (nodes["is_categorical"] > 1).any():
        raise UncheckedState(f"{where}: a node's flags are not 0 or 1")
    inner = nodes["is_leaf"] == 0
    _check_structure(nodes["left"], nodes["right"], inner, where)
    feature = nodes["feature_idx"][inner]
    if features is not None and ((feature < 0) | (feature >= features)).any():
        raise UncheckedState(f"{where}: a split names a feature outside 0..{features - 1}")
    if not np.isfinite(nodes["value"]).all() or np.isnan(nodes["num_threshold"][inner]).any():
        raise UncheckedState(f"{where}: a value is not finite or a threshold is NaN")
    categorical = inner & (nodes["is_categorical"] == 1)
    if (nodes["bitset_idx"][categorical] >= len(predictor.raw_left_cat_bitsets)).any():
        raise UncheckedState(f"{where}: a categorical split names a bitset that does not exist")


def _check_bin_mapper(mapper: Any, predictors: Any, where: str) -> None:
    """Categorical splits on features the bin mapper knows as categorical, whose known categories
    fit the 0..255 bitsets predict builds from them."""
    flags = np.asarray(getattr(mapper, "is_categorical_", np.zeros(0, dtype=np.uint8)))
    thresholds = getattr(mapper, "bin_thresholds_", [])
    if flags.dtype.kind not in "bu" or flags.ndim != 1 or (flags > 1).any() or len(thresholds) != len(flags):
        raise UncheckedState(f"{where}._bin_mapper does not describe its features as scikit-learn does")
    is_categorical = flags.astype(bool)
    for index in np.flatnonzero(is_categorical):
        known = np.asarray(thresholds[index], dtype=np.float64)
        if ((known < 0) | (known > MAX_CATEGORY) | (known != np.round(known))).any():
            raise UncheckedState(f"{where}._bin_mapper: feature {index}'s categories are not integers in 0..255")
    for iteration in predictors if isinstance(predictors, list) else ():
        for predictor in iteration if isinstance(iteration, list) else ():
            nodes = predictor.nodes
            split = (nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 1)
            named = nodes["feature_idx"][split]
            if ((named < 0) | (named >= len(is_categorical))).any() or not is_categorical[named].all():
                raise UncheckedState(f"{where}: a categorical split is on a feature that is not categorical")


def _rebuilt(tree: Any, where: str) -> Any:
    """The neighbour index scikit-learn builds from the stored one's data, leaf size, metric and
    sample weights; its stored node and index arrays are never used."""
    from sklearn.metrics import DistanceMetric

    state = tree.__getstate__()
    if len(state) != 13:  # (data, idx_array, node_data, node_bounds, leaf_size, 6 counts, metric, weights)
        raise UncheckedState(f"{where}: its state is not laid out as this scikit-learn writes it")
    data, leaf_size, metric, weights = state[0], state[4], state[11], state[12]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype != np.float64 or not data.size:
        raise UncheckedState(f"{where}: its data is not a 2-D float64 array")
    if not np.isfinite(data).all():
        raise UncheckedState(f"{where}: its data is not all finite")
    if not isinstance(leaf_size, int) or not 1 <= leaf_size <= len(data):
        raise UncheckedState(f"{where}: leaf_size {leaf_size!r} is not between 1 and its {len(data)} rows")
    kind = _METRICS.get(type(metric).__name__)
    if kind is None:
        raise UncheckedState(f"{where}: metric {_name(metric)} is not one modelport rebuilds")
    options: dict[str, Any] = {}
    if kind == "minkowski":
        p, w, _ = metric.__getstate__()
        options["p"] = float(p)
        if np.asarray(w).size:
            options["w"] = np.asarray(w, dtype=np.float64)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(data),) or not np.isfinite(weights).all():
            raise UncheckedState(f"{where}: its sample weights are not one finite number per row")
    try:
        return type(tree)(
            data, leaf_size=leaf_size, metric=DistanceMetric.get_metric(kind, **options), sample_weight=weights
        )
    except (ValueError, TypeError) as exc:
        raise UncheckedState(f"{where}: scikit-learn cannot rebuild it from its data: {exc}") from None
