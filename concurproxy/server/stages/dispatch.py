"""Dispatch stage: the async shell of the per-replica `PrefillGate` (cost-aware dispatch).

Held around one upstream attempt, inside the admission ticket: a long step the
gate holds waits here (never longer than ``max_prefill_hold_s``: the stage
wakes at the gate's deadline and expires it), the step's first streamed token
(``StepContext.on_first_token``, called by the relay) ends its prefill, and
leaving the block — any outcome, cancellation included — ends the step, so the
gate never keeps a step that is gone. Clock injected (``time.monotonic``).
Concurrency: one event loop; no await between a gate call and acting on it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

from concurproxy.control.dispatch import DispatchParams, PrefillGate
from concurproxy.server.hooks import StepContext


class DispatchStage:
    def __init__(self, params: DispatchParams, clock: Callable[[], float] = time.monotonic) -> None:
        self.params = params
        self.clock = clock
        self._gates: dict[str, PrefillGate] = {}
        self._held: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)

    def gate(self, replica_id: str) -> PrefillGate:
        g = self._gates.get(replica_id)
        if g is None:
            g = self._gates[replica_id] = PrefillGate(self.params)
        return g

    @asynccontextmanager
    async def hold(self, ctx: StepContext, replica_id: str) -> AsyncIterator[None]:
        gate, key = self.gate(replica_id), next(self._ids)
        since = self.clock()
        try:
            if not gate.start(key, ctx.step, since):
                await self._wait(gate, key)
                ctx.dispatch_wait_s = self.clock() - since
            ctx.on_first_token = lambda: self._wake(gate.first_token(key))
            yield
        finally:
            ctx.on_first_token = None
            self._held.pop(key, None)
            self._wake(gate.end(key))

    async def _wait(self, gate: PrefillGate, key: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held[key] = fut
        while not fut.done():
            deadline = gate.deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                self._wake(gate.expire(self.clock()))

    def _wake(self, keys: Iterable[int]) -> None:
        for k in keys:
            fut = self._held.pop(k, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def state(self) -> dict[str, dict[str, int]]:
        """Per replica: long steps waiting now, held so far, and started at the bound (``/admin/state``)."""
        return {r: {"waiting": g.waiting(), "held": g.held, "forced": g.forced} for r, g in self._gates.items()}
