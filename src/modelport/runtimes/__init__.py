"""Built-in runtimes by kind, and ``create`` to make one.

Runtime modules are imported only when a runtime of that kind is created, so importing this
package does not pull in ONNX Runtime or scikit-learn.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from modelport.errors import NotFound
from modelport.runtimes.base import Capabilities, Runtime

__all__ = ["KINDS", "Capabilities", "Runtime", "create"]

# kind -> "module:class"; resolved on first use.
_BUILTINS: dict[str, str] = {
    "onnx": "modelport.runtimes.onnx:OnnxRuntime",
    "sklearn": "modelport.runtimes.sklearn:SklearnRuntime",
    "python": "modelport.runtimes.python:PythonRuntime",
    "fake": "modelport.runtimes.fake:FakeRuntime",
}


class _Kinds(Mapping[str, type[Runtime]]):
    """A read-only mapping kind -> runtime class that imports each class on first access."""

    def __init__(self, targets: Mapping[str, str]) -> None:
        self._targets = dict(targets)
        self._loaded: dict[str, type[Runtime]] = {}

    def __getitem__(self, kind: str) -> type[Runtime]:
        if kind not in self._loaded:
            module_name, _, attr = self._targets[kind].partition(":")
            cls: type[Runtime] = getattr(importlib.import_module(module_name), attr)
            self._loaded[kind] = cls
        return self._loaded[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, kind: object) -> bool:
        return kind in self._targets


KINDS: Mapping[str, type[Runtime]] = _Kinds(_BUILTINS)


def create(kind: str) -> Runtime:
    """A new, unloaded runtime of the given kind."""
    if kind not in KINDS:
        raise NotFound(f"unknown runtime kind {kind!r}; built-in kinds are: {', '.join(sorted(KINDS))}")
    return KINDS[kind]()
