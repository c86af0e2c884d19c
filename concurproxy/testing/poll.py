"""Bounded waits for effects that cross sockets in tests (not sleeps for correctness)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def wait_until(pred: Callable[[], Awaitable[bool]], what: str, tries: int = 500) -> None:
    """Await ``pred()`` every 10 ms until it is true; fail with ``what`` after ``tries`` attempts."""
    for _ in range(tries):
        if await pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
