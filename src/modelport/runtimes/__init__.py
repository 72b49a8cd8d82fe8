"""Runtimes by kind: the built-in ones and those installed packages declare, and ``create``.

A package adds a runtime with an entry point in the ``modelport.runtimes`` group, named by its
kind::

    [project.entry-points."modelport.runtimes"]
    mykind = "my_package.runtime:MyRuntime"

Installing the package is what trusts its code, as with any Python package. A plugin cannot
replace a built-in kind. Runtime modules are imported only when a runtime of that kind is
used, so importing this package pulls in no model library (ONNX Runtime, scikit-learn, XGBoost,
LightGBM, PyTorch, TensorFlow) and no plugin.
:func:`modelport.testing.check_runtime` checks a runtime against the seam's promises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points

from modelport.errors import InvalidModel, NotFound
from modelport.runtimes.base import Capabilities, Runtime

__all__ = ["ENTRY_POINTS", "KINDS", "Capabilities", "Runtime", "create"]

log = logging.getLogger("modelport")

ENTRY_POINTS = "modelport.runtimes"

# kind -> "module:class"; resolved on first use.
BUILTINS: dict[str, str] = {
    "onnx": "modelport.runtimes.onnx:OnnxRuntime",
    "sklearn": "modelport.runtimes.sklearn:SklearnRuntime",
    "python": "modelport.runtimes.python:PythonRuntime",
    "xgboost": "modelport.runtimes.xgboost:XGBoostRuntime",
    "lightgbm": "modelport.runtimes.lightgbm:LightGBMRuntime",
    "torch": "modelport.runtimes.torch:TorchRuntime",
    "tensorflow": "modelport.runtimes.tensorflow:TensorFlowRuntime",
}


class Kinds(Mapping[str, type[Runtime]]):
    """A read-only mapping kind -> runtime class: the built-ins and the installed plugins (found
    on first use), each class imported on first access and checked to be a runtime."""

    def __init__(self, builtins: Mapping[str, str], group: str = ENTRY_POINTS) -> None:
        self._builtins = {kind: EntryPoint(kind, target, group) for kind, target in builtins.items()}
        self._group = group
        self._plugins: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, type[Runtime]] = {}

    @property
    def plugins(self) -> dict[str, EntryPoint]:
        """Installed plugin kinds -> their entry point (``value`` says where the class is)."""
        if self._plugins is None:
            found: dict[str, EntryPoint] = {}
            for point in entry_points(group=self._group):
                if point.name in self._builtins:
                    log.warning("the runtime plugin %r (%s) is ignored: %r is a built-in kind", point.value, point.name)
                    continue
                found[point.name] = point
            self._plugins = found
        return self._plugins

    def _targets(self) -> dict[str, EntryPoint]:
        return {**self._builtins, **self.plugins}

    def __getitem__(self, kind: str) -> type[Runtime]:
        if kind not in self._loaded:
            self._loaded[kind] = _runtime_class(self._targets()[kind])
        return self._loaded[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets())

    def __len__(self) -> int:
        return len(self._targets())

    def __contains__(self, kind: object) -> bool:
        return kind in self._builtins or kind in self.plugins

    def describe(self) -> str:
        """The kinds for messages: ``lightgbm, onnx, python, ...`` (plus ``; installed plugins: ...``)."""
        text = ", ".join(sorted(self._builtins))
        return f"{text}; installed plugins: {', '.join(sorted(self.plugins))}" if self.plugins else text


def _runtime_class(point: EntryPoint) -> type[Runtime]:
    kind, target = point.name, point.value
    try:
        cls = point.load()
    except Exception as exc:  # a plugin's module raises what it raises while imported
        raise InvalidModel(f"the {kind!r} runtime ({target}) cannot be imported: {type(exc).__name__}: {exc}") from None
    missing = [name for name in ("load", "predict", "unload", "capabilities") if not hasattr(cls, name)]
    if not isinstance(cls, type) or missing or not isinstance(getattr(cls, "capabilities", None), Capabilities):
        what = f"it has no {', '.join(missing)}" if missing else "its capabilities are not a modelport Capabilities"
        raise InvalidModel(f"the {kind!r} runtime ({target}) is not a modelport runtime: {what}")
    return cls


KINDS = Kinds(BUILTINS)


def create(kind: str) -> Runtime:
    """A new, unloaded runtime of the given kind."""
    if kind not in KINDS:
        raise NotFound(f"unknown runtime kind {kind!r}; the kinds are: {KINDS.describe()}")
    return KINDS[kind]()
