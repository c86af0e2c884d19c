"""Shared-state stage: admission and pins across several proxy instances (Redis backend).

Adapter between the request path and ``concurproxy.state.RedisState``:

* ``SharedAdmissionStage.acquire`` — the local admission ticket as before; when
  the local core admitted an agent it did not hold (reason other than
  ``in-window``), one Lua call claims the agent's lease on the replica
  (``leases < W``). A lost race (another instance took the last slot since the
  last sync) gives the local slot back and waits in the local queue again,
  within the same ``max_queue_wait_s``. The step's new or refreshed pin goes to
  the pin outbox (no wait).
* ``SharedStateListener`` — a released agent (``X-Agent-Done``) drops its
  shared pin.
* ``attach(...)`` wires the backend to the admission core (held agents for
  lease renewal, a tick after each sync), to the router's pin table and to the
  metrics; ``share_budgets`` makes the token buckets fleet-wide, and the core's
  VTC queues share their tenant counters (``state/fleet_sync.py``).

The memory backend builds none of this: the single-instance path is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from prometheus_client import Counter, Gauge

from concurproxy.admission.errors import AdmissionTimeout
from concurproxy.admission.service import AdmissionService
from concurproxy.admission.ticket import StepTicket
from concurproxy.config.admission import AdmissionConfig
from concurproxy.config.models import Policy
from concurproxy.control.admission.core import AdmissionCore, QueueMaker
from concurproxy.control.admission.tickets import Outcome
from concurproxy.control.limits.registry import ControllerRegistry
from concurproxy.server.hooks import StepContext
from concurproxy.server.stages.admission import AdmissionStage, _HeldTicket
from concurproxy.server.stages.budgets import BudgetStage
from concurproxy.server.stages.routing import RoutingStage
from concurproxy.state.config import SharedStateSettings
from concurproxy.state.fleet_sync import BudgetSync, FairnessSync
from concurproxy.state.redis_state import RedisState
from concurproxy.telemetry.metrics import ProxyMetrics

log = logging.getLogger("concurproxy.state")


def shared_admission_core(config: AdmissionConfig, state: RedisState, queue_maker: QueueMaker) -> AdmissionCore:
    """An ``AdmissionCore`` whose per-replica controllers are capped at this instance's share
    and whose fairness counters are fleet-wide."""
    reg = ControllerRegistry()
    reg.factory(config.controller)  # fail fast on an unknown name
    fairness = FairnessSync(state)
    state.parts.append(fairness)
    return AdmissionCore(
        config,
        controller_maker=lambda r: state.wrap(r, reg.create(config)),
        queue_maker=fairness.track(queue_maker),
    )


def share_budgets(budgets: BudgetStage, state: RedisState, clock: Callable[[], float]) -> BudgetSync:
    """Every token bucket becomes this instance's share of a fleet bucket, synced with the leases."""
    part = BudgetSync(budgets.engine, state, clock)
    state.parts.append(part)
    return part


class _SharedTicket:
    __slots__ = ("_ctx", "_held", "_stage")

    def __init__(self, stage: SharedAdmissionStage, ctx: StepContext) -> None:
        self._stage = stage
        self._ctx = ctx
        self._held: _HeldTicket | None = None

    async def __aenter__(self) -> StepTicket:
        stage, ctx = self._stage, self._ctx
        assert ctx.replica is not None
        replica, agent = ctx.replica.id, ctx.step.agent_id
        stage.publish_pin(ctx)
        arriving = stage.arriving.setdefault(replica, {})
        arriving[agent] = arriving.get(agent, 0) + 1
        try:
            stage.claim_moved(replica, agent)
            return await self._enter(replica, agent)
        finally:
            arriving[agent] -= 1
            if not arriving[agent]:
                del arriving[agent]

    async def _enter(self, replica: str, agent: str) -> StepTicket:
        stage, ctx = self._stage, self._ctx
        clock, state = stage.service.clock, stage.state
        started = clock()
        limit = stage.service.config.max_queue_wait_s
        retried = False
        while True:
            held = _HeldTicket(stage.service, ctx)
            ticket = await held.__aenter__()
            if ticket.ticket.reason == "in-window" or await state.claim(replica, agent, stage.fleet_window(replica)):
                self._held = held
                if retried:  # the wait spans every try
                    ticket.queue_wait_s = clock() - started
                return ticket
            retried = True
            # Lost the last slot to another instance: give ours back, queue again (our cap just shrank).
            ticket.finish_agent()
            ticket.end(Outcome.cancelled)
            waited = clock() - started
            if waited >= limit:
                raise AdmissionTimeout(1.0, replica=replica, waited_s=waited)

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._held is not None:
            await self._held.__aexit__(et, exc, tb)


class SharedAdmissionStage(AdmissionStage):
    def __init__(self, service: AdmissionService, state: RedisState, pin_ttl_s: float = 300.0) -> None:
        super().__init__(service)
        self.state = state
        self.pin_refresh_s = pin_ttl_s / 4
        self._published: dict[str, tuple[str, float]] = {}
        self.arriving: dict[str, dict[str, int]] = {}  # replica -> agents in acquire (waiting included)

    def claim_moved(self, replica: str, agent: str) -> None:
        """An agent leased through another instance takes a step here: ask that instance to let go
        of its local slot (its lease then leaves with its next sync, and our cap grows)."""
        share = self.state.share(replica)
        if agent in share.members and agent not in share.mine:
            self.state.pins.moved(agent)

    def after_sync(self) -> None:
        for replica, agents in self.arriving.items():
            for agent in agents:
                self.claim_moved(replica, agent)
        self.service.tick()

    def acquire(self, ctx: StepContext) -> _SharedTicket:  # type: ignore[override]
        return _SharedTicket(self, ctx)

    def fleet_window(self, replica: str) -> int:
        share = self.state.share(replica)
        if share.global_window is not None:
            return share.global_window
        w = self.service.core.window(replica).controller
        return int(getattr(w, "own_window", w.window))

    def publish_pin(self, ctx: StepContext) -> None:
        """Share the step's pin when it is new, moved, or was last shared a while ago."""
        d = ctx.route_decision
        if d is None or ctx.identity.one_shot or not d.agent_id:
            return
        now = self.service.clock()
        last = self._published.get(d.agent_id)
        if last is not None and last[0] == d.replica_id and now - last[1] < self.pin_refresh_s:
            return
        if len(self._published) > 200_000:
            self._published.clear()
        self._published[d.agent_id] = (d.replica_id, now)
        self.state.publish_pin(d.agent_id, d.replica_id)

    def forget_pin(self, agent: str) -> None:
        self._published.pop(agent, None)
        self.state.publish_pin(agent, None)

    def held_agents(self) -> dict[str, set[str]]:
        now = self.service.clock()
        return {r: {a.agent_id for a in s.agents} for r, s in self.service.core.state(now).items()}


class SharedStateListener:
    """StepListener: an agent that finished drops its shared pin."""

    def __init__(self, stage: SharedAdmissionStage) -> None:
        self.stage = stage

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        if ctx.identity.done and not ctx.identity.one_shot:
            self.stage.forget_pin(ctx.step.agent_id)


def release_here(service: AdmissionService, agent: str) -> None:
    """Free ``agent``'s local slot on whichever replica window holds it (at once if idle, else when
    its running step ends). Per window rather than ``AdmissionService.release_agent``: the core's
    agent→replica map may not know an agent that was granted from the queue after a release."""
    now = service.clock()
    if any([service.core.window(r).release_agent(agent, now) for r in service.core.replicas]):
        service.tick(now)


def pin_applier(routing: RoutingStage, service: AdmissionService) -> Callable[[str, str | None], None]:
    """Apply another instance's pin change here. A release (the agent finished there) also frees
    the slot the agent may still hold here, so its lease is not renewed by this instance."""
    pins = getattr(routing.router, "pins", None)

    def apply(agent: str, replica: str | None) -> None:
        if replica is None:
            release_here(service, agent)
            if pins is not None:
                pins.release(agent)
        elif pins is not None:
            pins.set(agent, replica, service.clock())

    return apply


def redis_state(policy: Policy) -> RedisState:
    """The Redis backend for ``policy.state`` (settings: ``SharedStateSettings.from_policy``)."""
    if not policy.state.redis_url:
        raise ValueError("state.backend is redis but state.redis_url is not set (--redis-url)")
    return RedisState(policy.state.redis_url, SharedStateSettings.from_policy(policy.state))


def attach(stage: SharedAdmissionStage, routing: RoutingStage, metrics: ProxyMetrics | None) -> RedisState:
    """Wire the backend to the admission core, the router's pins and the metrics; returns it."""
    service, state = stage.service, stage.state
    pins = getattr(routing.router, "pins", None)
    if pins is not None:
        stage.pin_refresh_s = pins.ttl_s / 4
    state.held = stage.held_agents
    state.on_sync = stage.after_sync
    state.pins.apply = pin_applier(routing, service)
    state.pins.release_here = lambda agent: release_here(service, agent)
    if metrics is None:
        return state
    try:
        up = Gauge(
            "concurproxy_shared_state_connected",
            "1 while the shared state (Redis) is reachable, 0 while this instance serves from local state",
            registry=metrics.registry,
        )
        outages = Counter(
            "concurproxy_shared_state_outages",
            "Times this instance lost the shared state and fell back to local state",
            registry=metrics.registry,
        )
    except ValueError:  # already registered in this registry (a second instance sharing it)
        return state
    up.set(0)

    def on_connected(connected: bool) -> None:
        up.set(1 if connected else 0)
        if not connected:
            outages.inc()

    state.on_connected.append(on_connected)
    return state
