"""The model frameworks packaged by a module of their own, as one protocol and one list.

:data:`FRAMEWORKS` is asked in order: the first whose :meth:`Framework.claims` says yes packages
the model (:func:`modelport.ingest.package.package`); what none claims is scikit-learn's, an ONNX
file's or a directory's. A framework with skl2onnx converters for its estimators (XGBoost and
LightGBM in a scikit-learn Pipeline) registers them when ingest converts a scikit-learn model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from modelport.ingest import boosting, pytorch, tensorflow
from modelport.ingest.packaged import Packaged


@runtime_checkable
class Framework(Protocol):
    """How ingest asks a framework about a model."""

    @property
    def name(self) -> str:
        """As notes and tests name it: "boosting", "pytorch", "tensorflow"."""
        ...

    def claims(self, model: object) -> bool:
        """Whether ``model`` (an object, or a path to a file or directory) is this framework's. It
        imports the framework's library only for an object or file it claims."""
        ...

    def package(
        self, model: object, *, workdir: Path, sample_input: object | None, trust_pickle: bool, runtime: str | None
    ) -> Packaged:
        """An artifact directory in ``workdir`` for a model it claims, converted and checked."""
        ...

    def register_converters(self, estimator: object) -> None:
        """Give skl2onnx converters for this framework's estimators ``estimator`` holds (a Pipeline's
        steps), importing the library only when it holds one; nothing for a framework without any."""
        ...


def no_converters(estimator: object) -> None:
    """A framework whose models never sit inside a scikit-learn estimator gives skl2onnx nothing."""


@dataclass(frozen=True, slots=True)
class Functions:
    """A framework made of its module's functions (``claims``, ``package``, ``register_converters``)."""

    name: str
    claims: Callable[[object], bool]
    package: Callable[..., Packaged]
    register_converters: Callable[[object], None] = no_converters


FRAMEWORKS: tuple[Framework, ...] = (
    Functions("boosting", boosting.claims, boosting.package, boosting.register_converters),
    Functions("pytorch", pytorch.claims, pytorch.package),
    Functions("tensorflow", tensorflow.claims, tensorflow.package),
)
