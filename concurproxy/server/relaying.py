"""Small pieces every relay shares: the idle watchdog and writes that tolerate a client gone.

Used by the step relay (`forward.py`) and the pass-through relay
(`passthrough.py`). A write to a client that went away becomes `ClientGone` in the
step relay (which then closes the upstream response, so the engine stops), or is
ignored where the answer is ending anyway (``write_quietly``).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from concurproxy.upstream.http1 import UpstreamError, UpstreamResponse


class ClientGone(Exception):
    """The client disconnected while we were writing to it."""


class IdleWatchdog:
    """Closes the upstream response when no chunk arrived for ``idle_s`` (one timer, re-armed per chunk)."""

    __slots__ = ("_deadline", "_handle", "_idle", "_loop", "_resp", "fired")

    def __init__(self, resp: UpstreamResponse, idle_s: float) -> None:
        self._resp = resp
        self._idle = idle_s
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + idle_s
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._deadline, self._check)
        self.fired = False

    def kick(self) -> None:
        # Moving a deadline is a float store; the timer re-arms itself lazily.
        self._deadline = self._loop.time() + self._idle

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._deadline:
            self.fired = True
            self._handle = None
            self._resp.close()
        else:
            self._handle = self._loop.call_at(self._deadline, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def read_quietly(resp: UpstreamResponse) -> bytes:
    """An error answer's body for the log; empty when it cannot be read."""
    try:
        return await resp.read()
    except (UpstreamError, TimeoutError):
        return b""


async def write_quietly(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except ConnectionResetError:  # the client left while the answer was ending: nothing to tell it
        return


async def write_eof_quietly(out: web.StreamResponse) -> None:
    try:
        await out.write_eof()
    except ConnectionResetError:  # as above
        return
