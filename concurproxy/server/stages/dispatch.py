"""Dispatch stage: the async shell of the per-replica `KvReserve` and `PrefillGate`
(``DispatchCores``, the decision core's: the simulator runs the same cores in virtual time).

Held around one upstream attempt, inside the admission ticket. A step first
passes the KV reserve (when ``fairness.kv_reserve`` is on: steps other than
control steps wait while their KV footprint would eat the room kept for control
steps, never longer than ``kv_reserve_max_hold_s``), then the prefill gate (a
long step waits while a control step runs, never longer than
``max_prefill_hold_s``); the stage wakes at each core's deadline and expires it.
The step's first streamed token (``StepContext.on_first_token``, called by the
relay) ends its prefill, and leaving the block — any outcome, cancellation
included — ends the step in both cores, so neither keeps a step that is gone.
The replica's KV capacity comes from its latest pressure snapshot
(``snapshots``, set at assembly). Clock injected (``time.monotonic``).

A replica that leaves the pool (``forget_replica``) loses its cores: the steps
they hold are let go at once (to the replica they were routed to, like any step
already on it), and steps in flight end in the cores they started in.

Telemetry: a step that waited is reported to ``on_wait(replica, stage, seconds)``
once per core it waited at (``stage``: ``prefill_gate`` / ``kv_reserve``), when
it is let go — steps sent at once cost nothing more. The cores' counters and
queues are read at scrape time through ``state()`` (``telemetry/dispatch.py``).
Concurrency: one event loop; no await between a core call and acting on it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Protocol

from concurproxy.control.dispatch import DispatchCores, DispatchParams
from concurproxy.control.types import PressureSnapshot
from concurproxy.server.step import StepContext


class _Holder(Protocol):
    stage: str

    def deadline(self) -> float | None: ...
    def expire(self, now: float) -> list[int]: ...


class DispatchStage:
    def __init__(
        self,
        cores: DispatchCores,
        clock: Callable[[], float] = time.monotonic,
        snapshots: Callable[[str], PressureSnapshot | None] | None = None,
        on_wait: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.cores = cores  # the decision core's (``DecisionCore.dispatch``)
        self.clock = clock
        self.snapshots = snapshots  # replica id → its latest pressure snapshot (KV capacity)
        self.on_wait = on_wait  # (replica, stage, seconds waited) for each hold that ended in a send
        self._held: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)

    @property
    def params(self) -> DispatchParams:
        return self.cores.params

    def forget_replica(self, replica_id: str) -> None:
        """The replica left the pool: its cores go, every step they hold is let go now (never stranded)."""
        self._wake(self.cores.forget_replica(replica_id))

    def join_replica(self, replica_id: str) -> None:
        self.cores.join_replica(replica_id)

    def _capacity(self, replica_id: str) -> int | None:
        snap = self.snapshots(replica_id) if self.snapshots is not None else None
        return None if snap is None else snap.kv_capacity_tokens

    @asynccontextmanager
    async def hold(self, ctx: StepContext, replica_id: str) -> AsyncIterator[None]:
        cores = self.cores
        gate, key = cores.gate(replica_id), next(self._ids)
        reserve = cores.reserve(replica_id)
        since = self.clock()
        try:
            waited = 0.0
            if reserve is not None and not reserve.start(key, ctx.step, since, self._capacity(replica_id)):
                waited += await self._wait(reserve, key, replica_id, since)
            now = self.clock() if waited else since
            if not gate.start(key, ctx.step, now) and cores.kept(replica_id, gate):  # (else: it left)
                waited += await self._wait(gate, key, replica_id, now)
            if waited:
                ctx.dispatch_wait_s += waited  # summed over attempts (a retry may wait again)
            ctx.on_first_token = lambda: self._wake(gate.first_token(key))
            yield
        finally:
            ctx.on_first_token = None
            self._held.pop(key, None)
            self._wake(gate.end(key))
            if reserve is not None:
                self._wake(reserve.end(key, self.clock()))

    async def _wait(self, core: _Holder, key: int, replica_id: str, since: float) -> float:
        """Wait until ``core`` lets the step go; returns the seconds waited (reported to ``on_wait``)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held[key] = fut
        while not fut.done():
            deadline = core.deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                self._wake(core.expire(self.clock()))
        waited = max(0.0, self.clock() - since)
        if self.on_wait is not None:
            self.on_wait(replica_id, core.stage, waited)
        return waited

    def _wake(self, keys: Iterable[int]) -> None:
        for k in keys:
            fut = self._held.pop(k, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def state(self) -> dict[str, dict[str, int | None]]:
        """Per replica, what its cores hold and counted (``DispatchCores.state``)."""
        return self.cores.state()
