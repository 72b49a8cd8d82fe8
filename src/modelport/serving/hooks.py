"""The seam through which observability watches served versions, without serving knowing it.

The manager asks its :class:`Watching` for one :class:`VersionWatch` per version it loads and
calls it from the request path with plain numbers and arrays: metrics count them, payload capture
samples them. Serving imports no metrics library; :data:`UNWATCHED` is the default, doing nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from modelport.types import ModelVersion


class VersionWatch(Protocol):
    """What happens to one loaded version. ``ran`` and ``queued`` may be called from prediction
    threads; ``answered`` is called on the event loop, for every answered request."""

    def ran(self, rows: int, seconds: float, waited: float | None = None) -> None:
        """One runtime call of ``rows`` rows took ``seconds``; ``waited``: the wait before it of
        the one request it served alone (None: a batch, whose requests' waits come by :meth:`queued`)."""

    def queued(self, seconds: float) -> None:
        """A request waited ``seconds`` before the runtime call that serves it started."""

    def answered(
        self, request_id: str | None, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> None:
        """A request was answered: its validated inputs and the outputs it got."""


class Watching(Protocol):
    """Makes the watch of each version a manager loads."""

    def version(self, version: ModelVersion) -> VersionWatch: ...


class Unwatched:
    """Watches nothing (the default)."""

    def ran(self, rows: int, seconds: float, waited: float | None = None) -> None:
        pass

    def queued(self, seconds: float) -> None:
        pass

    def answered(
        self, request_id: str | None, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
    ) -> None:
        pass

    def version(self, version: ModelVersion) -> VersionWatch:
        return self


UNWATCHED = Unwatched()
