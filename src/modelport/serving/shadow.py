"""Shadow traffic: mirror a share of an alias's requests to another version, off the request path.

The manager offers each answered request to :class:`ShadowRunner`; it samples by the shadow's
fraction and puts a job in a bounded queue (a full queue drops the job: the primary never
waits). One task runs the jobs on its own thread, compares the shadow's outputs with the
primary's, and adds them to an :class:`Agreement` per (model, alias, shadow version).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.registry.traffic import empty, merge
from modelport.serving.routes import Chance

logger = logging.getLogger("modelport")

QUEUE_SIZE = 256
Key = tuple[str, str, int]  # (model name, alias, shadow version)
Predict = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def compare(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One request's agreement: per output, equal labels (strings, integers) or absolute differences."""
    outputs: dict[str, Any] = {}
    for name, mine in primary.items():
        theirs = shadow.get(name)
        if theirs is None:
            continue  # an output only the primary has: nothing to compare
        if np.shape(theirs) != np.shape(mine):
            outputs[name] = {"kind": "label", "equal": 0, "total": max(1, int(np.size(mine)))}
        elif mine.dtype.kind in "fc" and np.asarray(theirs).dtype.kind in "fciub":
            diff = np.abs(mine.astype(np.float64) - np.asarray(theirs, dtype=np.float64))
            outputs[name] = {
                "kind": "numeric",
                "count": int(diff.size),
                "sum": float(diff.sum()),
                "max": float(diff.max(initial=0.0)),
            }
        else:
            equal = int(np.count_nonzero(np.asarray(mine) == np.asarray(theirs)))
            outputs[name] = {"kind": "label", "equal": equal, "total": int(np.size(mine))}
    return outputs


@dataclass(eq=False, slots=True)
class Job:
    key: Key
    predict: Predict
    inputs: Mapping[str, np.ndarray]
    primary: Mapping[str, np.ndarray]
    done: Callable[[], None]  # releases the shadow version's in-flight count


class ShadowRunner:
    """A bounded queue of shadow jobs and the one task that runs them; totals and unflushed deltas."""

    def __init__(self, queue_size: int = QUEUE_SIZE, chance: Chance | None = None) -> None:
        self.queue_size = queue_size
        self.chance = chance if chance is not None else random.Random()
        self.totals: dict[Key, dict[str, Any]] = {}
        self.deltas: dict[Key, dict[str, Any]] = {}
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def sampled(self, fraction: float) -> bool:
        return fraction >= 1.0 or self.chance.random() < fraction

    def offer(self, job: Job) -> bool:
        """Queue ``job`` unless the queue is full (then count it dropped). Never waits."""
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_size)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelport-shadow")
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            job.done()
            self._add(job.key, {"dropped": 1})
            return False
        return True

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            try:
                outputs = await loop.run_in_executor(self._pool, job.predict, job.inputs)
                self._add(job.key, {"requests": 1, "outputs": compare(job.primary, outputs)})
            except Exception as exc:
                logger.warning(
                    "shadow %s@%s failed to predict: %s: %s", job.key[0], job.key[2], type(exc).__name__, exc
                )
                self._add(job.key, {"requests": 1, "errors": 1})
            finally:
                job.done()

    def _add(self, key: Key, delta: Mapping[str, Any]) -> None:
        merge(self.totals.setdefault(key, empty()), delta)
        merge(self.deltas.setdefault(key, empty()), delta)

    def take_deltas(self) -> dict[Key, dict[str, Any]]:
        """Counts gathered since the last call (to flush to the registry), then forget them."""
        deltas, self.deltas = self.deltas, {}
        return deltas

    def restore(self, key: Key, delta: Mapping[str, Any]) -> None:
        """Put back counts that could not be flushed."""
        merge(self.deltas.setdefault(key, empty()), delta)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().done()
            self._queue = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
