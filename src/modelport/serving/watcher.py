"""The registry watcher: one asyncio task per server that follows alias moves and new versions.

Every ``poll_seconds`` it reads the registry's change counter (one row, one query, never on the
request path). When the counter moved it asks the manager to refresh: load and warm what the
new snapshot names (in a thread), swap routes, drain and unload what is no longer routed. On
the same beat it flushes shadow agreement counts gathered since the last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from modelport.serving.manager import ModelManager
from modelport.serving.tasks import in_background

if TYPE_CHECKING:
    from modelport.registry.registry import Registry

logger = logging.getLogger("modelport")


class Watcher:
    def __init__(self, manager: ModelManager, registry: Registry, poll_seconds: float) -> None:
        self.manager = manager
        self.registry = registry
        self.poll_seconds = max(0.01, poll_seconds)
        self.seen: int | None = None

    async def run(self) -> None:
        """Poll until cancelled; errors (a database away for a moment) are logged and retried."""
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("following the registry failed; retrying in %.1f s", self.poll_seconds)
            await asyncio.sleep(self.poll_seconds)

    async def step(self) -> bool:
        """One poll: refresh when the change counter moved; flush shadow counts. True if it refreshed."""
        serial = await asyncio.to_thread(self.registry.serial)
        refreshed = False
        if serial != self.seen:  # the first poll refreshes too: a move during start-up is not missed
            await self.manager.refresh()
            self.seen = serial
            refreshed = True
        await self.flush()
        return refreshed

    async def flush(self) -> None:
        deltas = self.manager.shadows.take_deltas()
        if deltas:
            try:
                await asyncio.to_thread(self.registry.record_shadow_stats, deltas)
            except Exception:
                for key, delta in deltas.items():  # keep them for the next flush
                    self.manager.shadows.restore(key, delta)
                raise


@asynccontextmanager
async def watching(manager: ModelManager, registry: Registry, poll_seconds: float) -> AsyncIterator[Watcher]:
    """Run a :class:`Watcher` while the block runs (a server's lifespan); flush once more at the end."""
    watcher = Watcher(manager, registry, poll_seconds)
    try:
        async with in_background(watcher.run(), "modelport-watcher"):
            yield watcher
    finally:
        with contextlib.suppress(Exception):
            await watcher.flush()
