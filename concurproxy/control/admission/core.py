"""All replicas' admission windows behind one object, keyed by replica name."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from concurproxy.config.admission import AdmissionConfig
from concurproxy.control.admission.events import AdmissionEvent, EventLog
from concurproxy.control.admission.fifo import FifoQueue
from concurproxy.control.admission.shares import WindowShares
from concurproxy.control.admission.state import ReplicaState
from concurproxy.control.admission.tickets import AdmitResult, ExpireResult, Grant, Outcome, Ticket
from concurproxy.control.admission.window import ReplicaWindow
from concurproxy.control.limits.base import WindowController, WindowDecision
from concurproxy.control.limits.registry import ControllerRegistry
from concurproxy.control.types import PressureSnapshot, StepInfo, WaitQueue

ControllerMaker = Callable[[str], WindowController]
QueueMaker = Callable[[str], WaitQueue[int]]


class AdmissionCore:
    """One ``ReplicaWindow`` per replica (created on first use), and where each agent lives.

    An agent holds a slot on one replica at a time: if the router sends its step
    to another replica (its pin moved), the old slot is released (at once if
    idle, else when its running steps end) and the step is admitted on the new
    replica like any step of a new agent there. Ticket and waiter ids are unique
    across replicas.

    Concurrency: single caller. Pure: ``now`` is always passed in.
    """

    def __init__(
        self,
        config: AdmissionConfig | None = None,
        *,
        controller_maker: ControllerMaker | None = None,
        queue_maker: QueueMaker | None = None,
        registry: ControllerRegistry | None = None,
    ) -> None:
        self.config = config or AdmissionConfig()
        reg = registry or ControllerRegistry()
        if controller_maker is None:
            reg.factory(self.config.controller)  # fail fast on an unknown name
            controller_maker = lambda _replica: reg.create(self.config)  # noqa: E731
        self._make_controller = controller_maker
        self._make_fallback: Callable[[], WindowController] | None = None
        fallback = self.config.fallback_controller
        if fallback is not None:
            factory = reg.factory(fallback)  # fail fast on an unknown name
            self._make_fallback = lambda: factory(self.config)
        self._make_queue: QueueMaker = queue_maker or (lambda _replica: FifoQueue[int]())
        self._ids = itertools.count(1)
        self._windows: dict[str, ReplicaWindow] = {}
        self._leaving: dict[str, ReplicaWindow] = {}  # replicas that left, until their last ticket ends
        self._home: dict[str, str] = {}  # agent_id -> replica holding its slot
        self._shares = WindowShares()
        self._tenant_weight: Callable[[str], float] = lambda _tenant: 1.0
        self.log = EventLog()  # shared by every window: one drain per flush (the shell reads ``log.events``)

    def window(self, replica: str) -> ReplicaWindow:
        w = self._windows.get(replica)
        if w is None and (w := self._leaving.pop(replica, None)) is not None:  # it came back before it drained
            self._windows[replica] = w
        if w is None:
            w = ReplicaWindow(
                replica,
                self._make_controller(replica),
                self.config,
                self._make_queue(replica),
                ids=self._ids,
                log=self.log,
                fallback=self._make_fallback,
            )
            w.shares = self._shares
            w.set_tenant_weight(self._tenant_weight)
            self._windows[replica] = w
        return w

    @property
    def replicas(self) -> list[str]:
        return list(self._windows)

    def forget_replica(self, replica: str, now: float) -> list[int]:
        """The replica left the pool: its window leaves ``state``, ``expire`` and grants, its agents lose
        their home, and the ids of the steps waiting there are returned (the shell fails them). Steps running
        there keep their tickets: the window stays out of sight until the last one ends (or the replica
        comes back first, and it is used again), so nothing is kept for a replica id that comes and goes.
        """
        w = self._windows.pop(replica, None)
        if w is None:
            return []
        for agent_id in [a for a, r in self._home.items() if r == replica]:
            del self._home[agent_id]
        waiters = w.close(now)
        if w.open_tickets():
            self._leaving[replica] = w
        return waiters

    def set_shares(self, shares: WindowShares, now: float) -> None:
        """Role shares of every replica's window (``roles.*.window_share``; applied on reload too)."""
        self._shares = shares
        for w in self._windows.values():
            w.set_shares(shares, now)

    def set_tenant_weights(self, weight: Callable[[str], float]) -> None:
        """Tenants' weights for their fair shares of each replica's slots (``tenants[].weight``; reload too)."""
        self._tenant_weight = weight
        for w in self._windows.values():
            w.set_tenant_weight(weight)

    def on_pressure(self, replica: str, snapshot: PressureSnapshot | None, now: float) -> WindowDecision:
        return self.window(replica).on_pressure(snapshot, now)

    def try_admit(self, step: StepInfo, replica: str, now: float) -> AdmitResult:
        agent_id = step.agent_id
        home = self._home.get(agent_id)
        if home != replica:
            if home is not None and home in self._windows:
                self._windows[home].release_agent(agent_id, now)
            self._home[agent_id] = replica
        w = self._windows.get(replica)
        return (w if w is not None else self.window(replica)).try_admit(step, now)

    def grant(self, replica: str, now: float) -> list[Grant]:
        return self.window(replica).grant(now)

    def end(
        self,
        ticket: Ticket,
        outcome: Outcome,
        now: float,
        *,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
        release: bool = False,
    ) -> bool:
        w = self._windows.get(ticket.replica)
        if w is None and (w := self._leaving.get(ticket.replica)) is not None:  # its replica left
            first = w.end(ticket, outcome, now, prompt_tokens=prompt_tokens, output_tokens=output_tokens)
            if not w.open_tickets():
                del self._leaving[ticket.replica]
            return first
        return (w if w is not None else self.window(ticket.replica)).end(
            ticket, outcome, now, prompt_tokens=prompt_tokens, output_tokens=output_tokens, release=release
        )

    def has_waiters(self, replica: str) -> bool:
        w = self._windows.get(replica)
        return w is not None and bool(w.queued)

    def release_agent(self, agent_id: str, now: float) -> bool:
        home = self._home.pop(agent_id, None)
        return home is not None and self.window(home).release_agent(agent_id, now)

    def cancel_wait(self, replica: str, waiter_id: int, now: float) -> bool:
        return self.window(replica).cancel_wait(waiter_id, now)

    def expire(self, now: float) -> dict[str, ExpireResult]:
        out = {r: w.expire(now) for r, w in self._windows.items()}
        for r, res in out.items():
            for aid in res.agents:
                if self._home.get(aid) == r:
                    del self._home[aid]
        return out

    def deadline(self, now: float) -> float | None:
        """The earliest time after ``now`` at which time alone may free a slot for a waiting step on some
        replica (an idle agent turns dormant), or None; the shell grants again then (``ReplicaWindow.deadline``)."""
        times = [d for w in self._windows.values() if w.queued and (d := w.deadline(now)) is not None]
        return min(times, default=None)

    def drain_events(self) -> list[AdmissionEvent]:
        return self.log.drain()

    def state(self, now: float) -> dict[str, ReplicaState]:
        return {r: w.state(now) for r, w in self._windows.items()}
