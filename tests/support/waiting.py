"""Waiting in async tests for a condition, not for a time: deterministic on a loaded machine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


async def until(condition: Callable[[], bool], what: str, passes: int = 10_000) -> None:
    """Let the event loop run, one pass at a time, until ``condition()`` holds; fail naming ``what``
    if it does not within ``passes`` passes (a bound on progress, not on wall-clock time)."""
    for _ in range(passes):
        if condition():
            return
        await asyncio.sleep(0)
    if not condition():
        pytest.fail(f"still waiting, after {passes} passes of the event loop, for {what}")


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds, for work done on other threads (a generous deadline: it
    only bounds a failing test, a passing one returns as soon as the condition holds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"still waiting, after {timeout:g} s, for {what}")
        await asyncio.sleep(0.01)
