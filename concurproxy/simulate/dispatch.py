"""The proxy's dispatch stage in virtual time: the decision core's `DispatchCores`, held steps and deadlines.

What ``server/stages/dispatch.py`` does with futures and timeouts, done with events: a step
admitted on a replica first passes the KV reserve (capacity from the replica's latest
snapshot), then the prefill gate; a step a core holds waits for a release (a step's first
streamed token ends its prefill, a step's end frees its room) or for the core's deadline (the
bounded hold, the reserve lapsing), for which one ``Ev.dispatch`` event per replica is pending.
A step let go goes to ``send`` (the engine). Leaving — any outcome — ends the step in both cores.

Concurrency: none; the simulation loop owns it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from concurproxy.control.dispatch import DispatchCores
from concurproxy.simulate.steps import Ev, SimStep


class SimDispatch:
    def __init__(
        self, cores: DispatchCores, push: Callable[[float, Ev, Any], None], send: Callable[[SimStep], None]
    ) -> None:
        self.cores = cores
        self._push = push
        self._send = send
        self._keys = itertools.count(1)
        self._held: dict[int, tuple[SimStep, str]] = {}  # key → (step, the core holding it)
        self._armed: dict[str, float] = {}  # replica → time of its pending deadline event

    def start(self, run: SimStep, now: float) -> None:
        """An admitted step reaches dispatch: sent now, or held."""
        rep = run.replica
        key = run.key = next(self._keys)
        reserve = self.cores.reserve(rep.id)
        if reserve is not None:
            snap = rep.snapshot
            if not reserve.start(key, run.info, now, snap.kv_capacity_tokens if snap is not None else None):
                self._hold(run, reserve.stage, now)
                return
        self._gate(run, now)

    def first_token(self, run: SimStep, now: float) -> None:
        """The step's first streamed token: its prefill is over."""
        if run.key:
            self._let_go(self.cores.gate(run.replica.id).first_token(run.key), now)
            self._arm(run.replica.id, now)

    def end(self, run: SimStep, now: float) -> None:
        """The step ended (any outcome): both cores let it go, and whom that frees is sent."""
        if not run.key:
            return
        replica, key = run.replica.id, run.key
        run.key = 0
        self._let_go(self.cores.gate(replica).end(key), now)
        reserve = self.cores.reserve(replica)
        if reserve is not None:
            self._let_go(reserve.end(key, now), now)
        self._arm(replica, now)

    def on_deadline(self, ev: tuple[str, float], now: float) -> None:
        replica, at = ev
        if self._armed.get(replica) != at:
            return  # superseded by an earlier one
        del self._armed[replica]
        reserve = self.cores.reserve(replica)
        if reserve is not None:
            self._let_go(reserve.expire(now), now)
        self._let_go(self.cores.gate(replica).expire(now), now)
        self._arm(replica, now)

    def _gate(self, run: SimStep, now: float) -> None:
        if self.cores.gate(run.replica.id).start(run.key, run.info, now):
            self._send(run)
        else:
            self._hold(run, "prefill_gate", now)

    def _hold(self, run: SimStep, stage: str, now: float) -> None:
        self._held[run.key] = (run, stage)
        self._arm(run.replica.id, now)

    def _let_go(self, keys: list[int], now: float) -> None:
        for key in keys:
            held = self._held.pop(key, None)
            if held is None:
                continue
            run, stage = held
            if stage == "kv_reserve":
                self._gate(run, now)  # on to the prefill gate, which may hold it in turn
            else:
                self._send(run)

    def _arm(self, replica: str, now: float) -> None:
        """An event at the earliest deadline of the replica's cores (one pending, moved only earlier)."""
        reserve = self.cores.reserve(replica)
        times = [d for c in (self.cores.gate(replica), reserve) if c is not None and (d := c.deadline()) is not None]
        if not times:
            return
        at = max(now, min(times))
        armed = self._armed.get(replica)
        if armed is None or at < armed:
            self._armed[replica] = at
            self._push(at, Ev.dispatch, (replica, at))
