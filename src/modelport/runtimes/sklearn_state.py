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
- checks the arrays other estimators that skops trusts by default hand to compiled code at
  predict time, against each other and against the columns the model is given: the libsvm
  models (``SVC``, ``NuSVC``, ``SVR``, ``NuSVR``, ``OneClassSVM``: support vectors, per-class
  counts, dual coefficients, intercepts, Platt parameters, precomputed-kernel indices), k-means
  centres (``KMeans``, ``MiniBatchKMeans``, ``BisectingKMeans``), what neighbour models search
  and vote with (``_fit_X``, ``n_samples_fit_``, the encoded labels ``_y``), and what builds a
  sparse matrix's column indices (``OneHotEncoder``'s category counts, infrequent mappings and
  dropped categories; ``CountVectorizer``/``TfidfVectorizer``/``DictVectorizer`` vocabularies;
  the hashing vectorizers' ``n_features``): scipy's sparse routines trust those indices too;
- refuses functions (but NumPy's ufuncs, elementwise math such as ``np.log1p`` that skops
  trusts), and the allow-listed classes in a function's place (a
  ``FunctionTransformer(func=numpy.dtype)``): calling them at predict time is code the file chose.

What the rest of scikit-learn runs at predict time is NumPy or SciPy code that checks shapes
and indices itself (linear models, naive Bayes, MLPs, scalers, decompositions, ...), or compiled
code whose arrays scikit-learn derives from others there and then (LDA, NMF, sparse polynomial
features); the classes whose compiled predict reads other state (scipy sparse matrices, splines,
bisecting k-means' tree, kernels, ...) are not trusted by skops, so need trust anyway.

A problem is raised as :class:`UncheckedState` naming the object and what is wrong. Whoever loads
the estimator decides what that means: without trust, it is refused.
"""

from __future__ import annotations

import functools
import itertools
import types
from collections.abc import Callable, Iterator
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
        for family, check in _families():
            if isinstance(value, family):
                check(value, attributes, where, features)
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


_Check = Callable[[Any, dict[str, Any], str, int | None], None]


@functools.cache
def _families() -> tuple[tuple[type | tuple[type, ...], _Check], ...]:
    """The estimator classes whose predict hands their arrays to compiled code, with their checks."""
    from sklearn.cluster._kmeans import _BaseKMeans
    from sklearn.feature_extraction import DictVectorizer, FeatureHasher
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
    from sklearn.neighbors._base import NeighborsBase
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.svm._base import BaseLibSVM

    return (
        (BaseLibSVM, _check_svm),
        (_BaseKMeans, _check_kmeans),
        (NeighborsBase, _check_neighbours),
        (OneHotEncoder, _check_one_hot),
        ((CountVectorizer, DictVectorizer), _check_vocabulary),
        ((HashingVectorizer, FeatureHasher), _check_hashing),
    )


def _array(attributes: dict[str, Any], name: str, where: str, dtype: Any, ndim: int) -> np.ndarray:
    value = attributes.get(name)
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != ndim:
        raise UncheckedState(f"{where}.{name} is not a {ndim}-D {np.dtype(dtype)} array, as scikit-learn writes it")
    return value


def _labels(values: np.ndarray, count: int, what: str) -> None:
    """``values`` are integer indices below ``count`` (compiled code indexes with them)."""
    if values.dtype.kind not in "iu":
        raise UncheckedState(f"{what} is not integer labels")
    if values.size and (int(values.min()) < 0 or int(values.max()) >= count):
        raise UncheckedState(f"{what} names a class outside 0..{count - 1}")


LIBSVM_KERNELS = ("linear", "poly", "rbf", "sigmoid", "precomputed")


def _check_svm(model: Any, attributes: dict[str, Any], where: str, features: int | None) -> None:
    """What libsvm's predict builds its model from (``set_model`` in libsvm_helper.c, no bounds
    checks): ``len(support_)`` support vectors, ``len(_n_support)`` classes, and
    ``_dual_coef_``, ``_intercept_``, ``_probA``/``_probB`` read as that many rows and pairs."""
    impl = attributes.get("_impl", type(model)._impl)
    if impl != type(model)._impl:
        raise UncheckedState(f"{where}._impl is {impl!r}, and a {type(model).__name__} is {type(model)._impl!r}")
    kernel = attributes.get("kernel")
    if not isinstance(kernel, str) or kernel not in LIBSVM_KERNELS:
        raise UncheckedState(f"{where}.kernel {kernel!r} is not one of libsvm's kernels {list(LIBSVM_KERNELS)}")
    if "support_" not in attributes:
        return  # not fitted: predict refuses
    if attributes.get("_sparse") is not False:
        raise UncheckedState(f"{where} was fitted on a sparse matrix (_sparse): its sparse arrays are not checked")
    support = _array(attributes, "support_", where, np.int32, 1)
    vectors = _array(attributes, "support_vectors_", where, np.float64, 2)
    n_support = _array(attributes, "_n_support", where, np.int32, 1)
    dual = _array(attributes, "_dual_coef_", where, np.float64, 2)
    intercept = _array(attributes, "_intercept_", where, np.float64, 1)
    prob_a = _array(attributes, "_probA", where, np.float64, 1)
    prob_b = _array(attributes, "_probB", where, np.float64, 1)
    classes, count = len(n_support), len(support)
    pairs = classes * (classes - 1) // 2
    if classes < 2:
        raise UncheckedState(f"{where}._n_support has {classes} entries; libsvm reads at least 2")
    if impl in ("c_svc", "nu_svc") and ((n_support < 0).any() or int(n_support.sum()) != count):
        raise UncheckedState(
            f"{where}._n_support {n_support.tolist()} does not split the {count} support vectors (support_)"
        )
    if kernel == "precomputed":
        if features is None or ((support < 0) | (support >= features)).any():
            raise UncheckedState(f"{where}.support_ names a training sample outside the {features} kernel columns")
    else:
        if len(vectors) != count:
            raise UncheckedState(f"{where}.support_vectors_ has {len(vectors)} rows for {count} support vectors")
        if features is not None and vectors.shape[1] != features:
            raise UncheckedState(
                f"{where}.support_vectors_ has {vectors.shape[1]} columns, and the model is given {features}"
            )
    if dual.shape != (classes - 1, count):
        raise UncheckedState(f"{where}._dual_coef_ has shape {list(dual.shape)}, libsvm reads {[classes - 1, count]}")
    if intercept.shape != (pairs,):
        raise UncheckedState(f"{where}._intercept_ has {len(intercept)} values, libsvm reads {pairs}")
    if prob_a.shape != prob_b.shape or prob_a.size not in (0, pairs):
        raise UncheckedState(f"{where}._probA/_probB hold {prob_a.size}/{prob_b.size} values, libsvm reads {pairs}")
    if not (np.isfinite(vectors).all() and np.isfinite(dual).all() and np.isfinite(intercept).all()):
        raise UncheckedState(f"{where}: its support vectors, dual coefficients or intercepts are not all finite")


def _check_kmeans(model: Any, attributes: dict[str, Any], where: str, features: int | None) -> None:
    """``_labels_inertia`` multiplies the rows (``n_features_in_`` columns) by ``cluster_centers_``
    with BLAS, taking the centres' column count as the rows': one more column reads past the rows."""
    centers = attributes.get("cluster_centers_")
    if centers is None:
        return  # not fitted
    if not isinstance(centers, np.ndarray) or centers.dtype not in (np.float32, np.float64) or centers.ndim != 2:
        raise UncheckedState(f"{where}.cluster_centers_ is not a 2-D float array")
    if features is None or centers.shape[1] != features or not len(centers):
        raise UncheckedState(
            f"{where}.cluster_centers_ has shape {list(centers.shape)}, and the model is given {features} features"
        )
    if not np.isfinite(centers).all():
        raise UncheckedState(f"{where}.cluster_centers_ is not all finite")
    threads = attributes.get("_n_threads")
    if not isinstance(threads, int | np.integer) or isinstance(threads, bool) or threads < 1:
        raise UncheckedState(f"{where}._n_threads {threads!r} is not a number of threads")


def _check_neighbours(model: Any, attributes: dict[str, Any], where: str, features: int | None) -> None:
    """A brute-force search reads ``_fit_X`` with the rows' column count, a graph has
    ``n_samples_fit_`` columns for the neighbours found, and a classifier's class votes are
    written at ``class_scores[row, _y[neighbour]]`` in compiled code (ArgKminClassMode,
    RadiusNeighborsClassMode)."""
    data = attributes.get("_fit_X")
    if data is None:
        return  # not fitted
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        raise UncheckedState(f"{where}._fit_X is not a 2-D array")
    count = attributes.get("n_samples_fit_")
    if not isinstance(count, int | np.integer) or count != len(data):
        raise UncheckedState(f"{where}.n_samples_fit_ {count!r} is not the {len(data)} rows of _fit_X")
    if attributes.get("effective_metric_") != "precomputed" and data.shape[1] != features:
        raise UncheckedState(f"{where}._fit_X has {data.shape[1]} columns, and the model is given {features}")
    tree: Any = attributes.get("_tree")
    if _name(tree) in _NEIGHBOUR_TREES and len(tree.data) != count:
        raise UncheckedState(f"{where}._tree indexes {len(tree.data)} samples, and the model has {count}")
    labels = attributes.get("_y")
    if labels is None:
        return
    if not isinstance(labels, np.ndarray) or labels.ndim not in (1, 2) or len(labels) != count:
        raise UncheckedState(f"{where}._y is not one target per sample of _fit_X ({count})")
    classes = attributes.get("classes_")
    if classes is None:
        return  # a regressor: its targets are only averaged by NumPy
    if labels.ndim == 1:
        _labels(labels, len(classes), f"{where}._y")
        return
    if not isinstance(classes, list) or len(classes) != labels.shape[1]:
        raise UncheckedState(f"{where}.classes_ does not list the classes of each of _y's {labels.shape[1]} outputs")
    for output, known in enumerate(classes):
        _labels(labels[:, output], len(known), f"{where}._y[:, {output}]")


def _check_one_hot(model: Any, attributes: dict[str, Any], where: str, features: int | None) -> None:
    """``transform`` writes a one at column ``offset + code`` of each feature's block, the blocks
    sized by ``_n_features_outs``, into a sparse matrix scipy densifies without checks: every code
    the categories, infrequent grouping and dropped category can give must fall in its block."""
    categories = attributes.get("categories_")
    if categories is None:
        return  # not fitted
    if not isinstance(categories, list) or not all(isinstance(c, np.ndarray) and c.ndim == 1 for c in categories):
        raise UncheckedState(f"{where}.categories_ is not a list of 1-D arrays")
    if features is not None and len(categories) != features:
        raise UncheckedState(f"{where}.categories_ describes {len(categories)} features, the model is given {features}")
    sizes = []
    for index, known in enumerate(categories):
        if not _sorted_categories(known):
            raise UncheckedState(f"{where}.categories_[{index}] is not sorted as scikit-learn writes it")
        sizes.append(len(known))
    if attributes.get("_infrequent_enabled"):
        grouped = attributes.get("_infrequent_indices")
        mappings = attributes.get("_default_to_infrequent_mappings")
        if not isinstance(grouped, list) or not isinstance(mappings, list):
            raise UncheckedState(f"{where}: its infrequent categories are not lists per feature")
        if len(grouped) != len(sizes) or len(mappings) != len(sizes):
            raise UncheckedState(f"{where}: its infrequent categories are not lists per feature")
        for index, (infrequent, mapping) in enumerate(zip(grouped, mappings, strict=True)):
            if infrequent is None and mapping is None:
                continue
            if not isinstance(infrequent, np.ndarray) or not isinstance(mapping, np.ndarray):
                raise UncheckedState(f"{where}: feature {index}'s infrequent categories are not index arrays")
            if infrequent.ndim != 1 or mapping.ndim != 1 or not infrequent.size:
                raise UncheckedState(f"{where}: feature {index}'s infrequent categories are not index arrays")
            _labels(infrequent, sizes[index], f"{where}._infrequent_indices[{index}]")
            sizes[index] -= len(np.unique(infrequent)) - 1
            _labels(mapping, sizes[index], f"{where}._default_to_infrequent_mappings[{index}]")
    dropped = attributes.get("_drop_idx_after_grouping")
    if dropped is not None:
        if not isinstance(dropped, np.ndarray) or dropped.shape != (len(sizes),):
            raise UncheckedState(f"{where}._drop_idx_after_grouping is not one entry per feature")
        for index, drop in enumerate(dropped):
            if drop is None:
                continue
            if not isinstance(drop, int | np.integer) or not 0 <= drop < sizes[index]:
                raise UncheckedState(f"{where}._drop_idx_after_grouping[{index}] is {drop!r}, not a category")
            sizes[index] -= 1
    outs = attributes.get("_n_features_outs")
    if not isinstance(outs, list) or [int(n) if isinstance(n, int | np.integer) else n for n in outs] != sizes:
        raise UncheckedState(f"{where}._n_features_outs is {outs!r}, and its categories give {sizes} columns")


def _sorted_categories(known: np.ndarray) -> bool:
    """Whether ``known`` is increasing, but for missing values (None, NaN) at its end: encoding
    is a binary search in it, which on an unsorted array can answer one past its end."""
    items = known.tolist()
    while items and (items[-1] is None or (isinstance(items[-1], float) and items[-1] != items[-1])):
        items.pop()
    try:
        return all(a < b for a, b in itertools.pairwise(items))
    except TypeError:  # categories that do not compare
        return False


def _check_vocabulary(model: Any, attributes: dict[str, Any], where: str, features: int | None) -> None:
    """``transform`` builds a sparse matrix of ``len(vocabulary_)`` columns whose column indices
    are the vocabulary's values: scipy's products and densifying trust them."""
    vocabulary = attributes.get("vocabulary_")
    if vocabulary is None:
        return  # not fitted, or a fixed vocabulary scikit-learn validates itself
    if not isinstance(vocabulary, dict):
        raise UncheckedState(f"{where}.vocabulary_ is not a dict")
    size = len(vocabulary)
    for term, column in vocabulary.items():
        if not isinstance(column, int | np.integer) or isinstance(column, bool) or not 0 <= column < size:
            raise UncheckedState(f"{where}.vocabulary_ maps {term!r} to {column!r}, outside its columns 0..{size - 1}")


def _check_hashing(model: Any, attributes: dict[str, Any], where: str, features: int | None) -> None:
    """The hashing kernel takes hash % ``n_features`` in C: 0 divides by zero (SIGFPE)."""
    size = attributes.get("n_features")
    if not isinstance(size, int | np.integer) or isinstance(size, bool) or not 1 <= size <= np.iinfo(np.int32).max:
        raise UncheckedState(f"{where}.n_features {size!r} is not a number of columns in 1..2**31-1")
