"""Dispatch stage: the async shell of the per-replica `KvReserve` and `PrefillGate`.

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
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from concurproxy.control.dispatch import DispatchParams, KvReserve, PrefillGate
from concurproxy.control.types import PressureSnapshot
from concurproxy.server.hooks import StepContext

_MAX_LEFT = 1024
_Core = TypeVar("_Core", PrefillGate, KvReserve)


class _Holder(Protocol):
    stage: str

    def deadline(self) -> float | None: ...
    def expire(self, now: float) -> list[int]: ...


class DispatchStage:
    def __init__(
        self,
        params: DispatchParams,
        clock: Callable[[], float] = time.monotonic,
        snapshots: Callable[[str], PressureSnapshot | None] | None = None,
        on_wait: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.params = params
        self.clock = clock
        self.snapshots = snapshots  # replica id → its latest pressure snapshot (KV capacity)
        self.on_wait = on_wait  # (replica, stage, seconds waited) for each hold that ended in a send
        self._gates: dict[str, PrefillGate] = {}
        self._reserves: dict[str, KvReserve] = {}
        self._held: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        self._left: dict[str, None] = {}  # replicas that left the pool, oldest first (at most _MAX_LEFT)

    def gate(self, replica_id: str) -> PrefillGate:
        g = self._gates.get(replica_id)
        return g if g is not None else self._new_core(self._gates, PrefillGate, replica_id)

    def reserve(self, replica_id: str) -> KvReserve:
        r = self._reserves.get(replica_id)
        return r if r is not None else self._new_core(self._reserves, KvReserve, replica_id)

    def _new_core(self, cores: dict[str, _Core], make: Callable[[DispatchParams], _Core], replica_id: str) -> _Core:
        """A replica's core on its first step; not kept for a replica that left (``_left``)."""
        c = make(self.params)
        if replica_id not in self._left:
            cores[replica_id] = c
        return c

    def forget_replica(self, replica_id: str) -> None:
        """The replica left the pool: drop its cores, letting every step they hold go now (never stranded).

        A step that reaches the stage for it later (routed just before it left) gets cores of its own
        that are not kept, so a replica id that comes and goes keeps nothing here (``_left`` is bounded).
        """
        for core in (self._gates.pop(replica_id, None), self._reserves.pop(replica_id, None)):
            if core is not None:
                self._wake(core.expire(math.inf))
        self._left[replica_id] = None
        if len(self._left) > _MAX_LEFT:
            del self._left[next(iter(self._left))]

    def join_replica(self, replica_id: str) -> None:
        """The replica (re)joined the pool: its cores are kept again from its first step."""
        self._left.pop(replica_id, None)

    def _capacity(self, replica_id: str) -> int | None:
        snap = self.snapshots(replica_id) if self.snapshots is not None else None
        return None if snap is None else snap.kv_capacity_tokens

    @asynccontextmanager
    async def hold(self, ctx: StepContext, replica_id: str) -> AsyncIterator[None]:
        gate, key = self.gate(replica_id), next(self._ids)
        reserve = self.reserve(replica_id) if self.params.reserve_enabled else None
        since = self.clock()
        try:
            waited = 0.0
            if reserve is not None and not reserve.start(key, ctx.step, since, self._capacity(replica_id)):
                waited += await self._wait(reserve, key, replica_id, since)
            now = self.clock() if waited else since
            if not gate.start(key, ctx.step, now) and self._gates.get(replica_id) is gate:  # (else: it left)
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
        """Per replica: long steps waiting now, held so far, and started at the bound; with the KV reserve on,
        the same for it, the KV footprint in flight and the limit it is held to while control steps are about
        (None until the engine's capacity is known) (``/admin/state``, and the metrics at scrape time)."""
        out: dict[str, dict[str, int | None]] = {
            r: {"waiting": g.waiting(), "held": g.held, "forced": g.forced} for r, g in self._gates.items()
        }
        for r, res in self._reserves.items():
            out.setdefault(r, {}).update(
                reserve_waiting=res.waiting(),
                reserve_held=res.held,
                reserve_forced=res.forced,
                reserve_in_flight_tokens=res.in_flight_tokens(),
                reserve_limit_tokens=res.limit(),
            )
        return out
