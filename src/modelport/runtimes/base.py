"""The runtime seam: what every model runtime, built-in or a user's, provides.

A runtime turns one artifact directory into a predictor over NumPy arrays. It declares its
capabilities instead of the conformance check keeping lists of exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from modelport.types import Signature


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a runtime promises.

    batch_rows: outputs are row-aligned with inputs, so rows may be merged and split.
    thread_safe: ``predict`` may run from several threads at once.
    runs_code: loading executes code from the artifact (pickle, custom Python) and needs trust.
    bounded_cost: a call's cost follows from its number of rows (a graph or an estimator), not
        from code that may loop on the values; only then may a call measured cheap run on the
        server's event loop instead of a thread.
    devices: the device kinds it can run on. A runtime that lists more than ``cpu`` takes
        ``device`` (``cuda`` or ``cuda:N``) and ``precision`` (``fp16``, ``bf16``) keywords in
        ``load``; they are passed only when a version or the server asks for something else than
        the CPU in full precision.
    """

    batch_rows: bool = True
    thread_safe: bool = True
    runs_code: bool = False
    bounded_cost: bool = True
    devices: tuple[str, ...] = ("cpu",)


@runtime_checkable
class Runtime(Protocol):
    """Load an artifact directory, predict on named arrays, unload.

    ``predict`` receives arrays already validated against the signature (batch first) and
    returns every output of the signature by name, as plain tensors (never ZipMap maps).
    After ``unload`` a runtime holds no model and ``predict`` raises ``ModelNotReady``.
    """

    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def load(self, artifact: Path, signature: Signature, *, threads: int = 1) -> None: ...

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def unload(self) -> None: ...


@runtime_checkable
class MultiSignature(Protocol):
    """A runtime whose artifact has other signatures than the registered one (a SavedModel's).

    ``signatures`` names them (never the registered one, which ``predict`` serves); TF Serving's
    ``signature_name`` selects one and ``predict_signature`` runs it on inputs already validated
    against it, returning that signature's outputs by name. A runtime declares it by having both
    (``isinstance(runtime, MultiSignature)`` is how the server asks).
    """

    @property
    def signatures(self) -> Mapping[str, Signature]: ...

    def predict_signature(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
