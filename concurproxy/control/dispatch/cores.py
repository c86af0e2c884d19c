"""Every replica's dispatch cores: its `PrefillGate`, and its `KvReserve` when the reserve is on.

One object, held by the `DecisionCore` and run the same way by the proxy's dispatch stage
(``server/stages/dispatch.py``, which awaits what the cores hold) and by the simulator
(``simulate/proxy.py``, which holds steps in virtual time). A replica's cores are made on its
first step. A replica that leaves the pool (``forget_replica``) loses them: the steps they hold
are handed back to be let go at once, and a step that reaches dispatch for it later (routed just
before it left) gets cores of its own that are not kept, so a replica id that comes and goes
keeps nothing here (``_left`` is bounded).

Pure: ``now`` is passed in to the cores. Single caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from concurproxy.control.dispatch.gate import DispatchParams, PrefillGate
from concurproxy.control.dispatch.reserve import KvReserve

_MAX_LEFT = 1024
_Core = TypeVar("_Core", PrefillGate, KvReserve)


class DispatchCores:
    def __init__(self, params: DispatchParams) -> None:
        self.params = params
        self._gates: dict[str, PrefillGate] = {}
        self._reserves: dict[str, KvReserve] = {}
        self._left: dict[str, None] = {}  # replicas that left the pool, oldest first (at most _MAX_LEFT)

    def gate(self, replica: str) -> PrefillGate:
        g = self._gates.get(replica)
        return g if g is not None else self._new(self._gates, PrefillGate, replica)

    def reserve(self, replica: str) -> KvReserve | None:
        """The replica's KV reserve, or None when the reserve is off (``fairness.kv_reserve: 0``)."""
        if not self.params.reserve_enabled:
            return None
        r = self._reserves.get(replica)
        return r if r is not None else self._new(self._reserves, KvReserve, replica)

    def kept(self, replica: str, gate: PrefillGate) -> bool:
        """``gate`` is still the replica's (False: the replica left since the step started)."""
        return self._gates.get(replica) is gate

    def _new(self, cores: dict[str, _Core], make: Callable[[DispatchParams], _Core], replica: str) -> _Core:
        c = make(self.params)
        if replica not in self._left:
            cores[replica] = c
        return c

    def forget_replica(self, replica: str) -> list[int]:
        """The replica left the pool: drop its cores; returns the keys of the steps they held (let them go)."""
        keys: list[int] = []
        for core in (self._gates.pop(replica, None), self._reserves.pop(replica, None)):
            if core is not None:
                keys += core.expire(math.inf)
        self._left[replica] = None
        if len(self._left) > _MAX_LEFT:
            del self._left[next(iter(self._left))]
        return keys

    def join_replica(self, replica: str) -> None:
        """The replica (re)joined the pool: its cores are kept again from its first step."""
        self._left.pop(replica, None)

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
