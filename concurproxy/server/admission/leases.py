"""The window gate shared by the instances of a fleet: the same ticket, plus a lease step on Redis.

``SharedWindowGate`` is a `WindowGate` whose core caps each replica's window at this instance's
share of the fleet window (``state.wrap``, given to ``DecisionCore.from_policy``). Entering a
ticket admits locally as usual; when the local core admitted an agent it did not hold (reason
other than ``in-window``), one Lua call claims the agent's lease on the replica (``leases < W``)
before the ticket is handed out. A lost race (another instance took the last slot since the last
sync) gives the local slot back and waits in the local queue again, within the same
``max_queue_wait_s``, and the ticket's ``queue_wait_s`` spans every try. The step's new or
refreshed pin goes to the pin outbox (no wait). A step of an agent already in the window costs
what it costs on the plain gate plus the pin check: no await.

Wiring (sync hooks, pin application, budgets and metrics) is ``server/stages/shared.py``.
Concurrency: one event loop, like the gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from concurproxy.control.admission.core import AdmissionCore
from concurproxy.control.types import StepOutcome
from concurproxy.server.admission.errors import AdmissionTimeout
from concurproxy.server.admission.gate import AdmissionTicket
from concurproxy.server.admission.listener import AdmissionListener
from concurproxy.server.admission.windows import WindowGate
from concurproxy.state.redis_state import RedisState

if TYPE_CHECKING:
    from concurproxy.server.step import StepContext


class SharedWindowGate(WindowGate):
    def __init__(
        self,
        core: AdmissionCore,
        state: RedisState,
        *,
        clock: Callable[[], float] = time.monotonic,
        listeners: Iterable[AdmissionListener] = (),
        pin_ttl_s: float = 300.0,
    ) -> None:
        super().__init__(core, clock=clock, listeners=listeners)
        self.shared = state  # (not ``state``: that is the gate's admin state)
        self.pin_refresh_s = pin_ttl_s / 4
        self._published: dict[str, tuple[str, float]] = {}
        self.arriving: dict[str, dict[str, int]] = {}  # replica -> agents in acquire (waiting included)

    # ---- the ticket's lease step --------------------------------------------------------
    def _enter(self, t: AdmissionTicket) -> bool:
        if t.ctx is not None:
            self.publish_pin(t.ctx)
        self.claim_moved(t.replica, t.step.agent_id)
        if super()._enter(t):
            assert t.core is not None
            if t.core.reason == "in-window":  # its lease is held already
                return True
        return False  # waits locally, or claims the lease: ``_wait``

    async def _wait(self, t: AdmissionTicket) -> None:
        replica, agent = t.replica, t.step.agent_id
        arriving = self.arriving.setdefault(replica, {})
        arriving[agent] = arriving.get(agent, 0) + 1
        started = self.clock()
        limit = self.config.max_queue_wait_s
        retried = False
        try:
            while True:
                if t.core is None:
                    await super()._wait(t)
                core = t.core
                assert core is not None
                if core.reason == "in-window" or await self.shared.claim(replica, agent, self.fleet_window(replica)):
                    if retried:  # the wait spans every try
                        t.queue_wait_s = self.clock() - started
                    return
                retried = True
                # Lost the last slot to another instance: give ours back, queue again (our cap just shrank).
                t.core = None
                self.end_ticket(core, StepOutcome.cancelled, release=True)
                waited = self.clock() - started
                if waited >= limit:
                    raise AdmissionTimeout(1.0, replica=replica, waited_s=waited)
                super()._enter(t)
        finally:
            arriving[agent] -= 1
            if not arriving[agent]:
                del arriving[agent]

    # ---- leases and pins -----------------------------------------------------------------
    def claim_moved(self, replica: str, agent: str) -> None:
        """An agent leased through another instance takes a step here: ask that instance to let go
        of its local slot (its lease then leaves with its next sync, and our cap grows)."""
        share = self.shared.share(replica)
        if agent in share.members and agent not in share.mine:
            self.shared.pins.moved(agent)

    def after_sync(self) -> None:
        for replica, agents in self.arriving.items():
            for agent in agents:
                self.claim_moved(replica, agent)
        self.tick()

    def fleet_window(self, replica: str) -> int:
        share = self.shared.share(replica)
        if share.global_window is not None:
            return share.global_window
        w = self.core.window(replica).controller
        return int(getattr(w, "own_window", w.window))

    def publish_pin(self, ctx: StepContext) -> None:
        """Share the step's pin when it is new, moved, or was last shared a while ago."""
        d = ctx.route_decision
        if d is None or ctx.identity.one_shot or not d.agent_id:
            return
        now = self.clock()
        last = self._published.get(d.agent_id)
        if last is not None and last[0] == d.replica_id and now - last[1] < self.pin_refresh_s:
            return
        if len(self._published) > 200_000:
            self._published.clear()
        self._published[d.agent_id] = (d.replica_id, now)
        self.shared.publish_pin(d.agent_id, d.replica_id)

    def forget_pin(self, agent: str) -> None:
        self._published.pop(agent, None)
        self.shared.publish_pin(agent, None)

    def held_agents(self) -> dict[str, set[str]]:
        now = self.clock()
        return {r: {a.agent_id for a in s.agents} for r, s in self.core.state(now).items()}

    def release_here(self, agent: str) -> None:
        """Free ``agent``'s local slot on whichever replica window holds it (at once if idle, else when
        its running step ends). Per window rather than ``release_agent``: the core's agent→replica map
        may not know an agent that was granted from the queue after a release."""
        now = self.clock()
        if any([self.core.window(r).release_agent(agent, now) for r in self.core.replicas]):
            self.tick(now)
