"""Shared state across several proxy instances (Redis backend): wiring of admission, pins and budgets.

Adapter between the proxy and ``concurproxy.state.RedisState``:

* ``core_hooks`` — what the decision core is built with (``DecisionCore.from_policy``): each
  replica's window controller capped at this instance's share (``state.wrap``), and the VTC
  queues' tenant counters fleet-wide (``state/fleet_sync.py``).
* The admission gate is ``server/admission/leases.py``'s ``SharedWindowGate``: the same ticket
  as the single-instance gate, with a lease step (``leases < W``, one Lua call) for an agent
  the local core newly admits, and the step's pin sent to the pin outbox.
* ``SharedStateListener`` — a released agent (``X-Agent-Done``) drops its shared pin.
* ``attach(...)`` wires the backend to the gate (held agents for lease renewal, a tick after
  each sync, releases from other instances), to the router's pin table and to the metrics;
  ``share_budgets`` makes the token buckets fleet-wide.

The memory backend builds none of this: the single-instance path is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

from concurproxy.config.models import Policy
from concurproxy.server.admission.leases import SharedWindowGate
from concurproxy.server.stages.budgets import BudgetStage
from concurproxy.server.stages.routing import RoutingStage
from concurproxy.server.step import StepContext
from concurproxy.state.config import SharedStateSettings
from concurproxy.state.fleet_sync import BudgetSync, FairnessSync
from concurproxy.state.redis_state import RedisState
from concurproxy.telemetry.metrics import ProxyMetrics

log = logging.getLogger("concurproxy.state")


def core_hooks(state: RedisState) -> dict[str, Any]:
    """``DecisionCore.from_policy``'s keyword arguments for a fleet sharing ``state``: per-replica
    controllers capped at this instance's share, fairness counters fleet-wide."""
    fairness = FairnessSync(state)
    state.parts.append(fairness)
    return {"wrap_controller": state.wrap, "wrap_queues": fairness.track}


def share_budgets(budgets: BudgetStage, state: RedisState, clock: Callable[[], float]) -> BudgetSync:
    """Every token bucket becomes this instance's share of a fleet bucket, synced with the leases."""
    part = BudgetSync(budgets.engine, state, clock)
    state.parts.append(part)
    return part


class SharedStateListener:
    """StepListener: an agent that finished drops its shared pin."""

    def __init__(self, gate: SharedWindowGate) -> None:
        self.gate = gate

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        if ctx.identity.done and not ctx.identity.one_shot:
            self.gate.forget_pin(ctx.step.agent_id)


def pin_applier(routing: RoutingStage, gate: SharedWindowGate) -> Callable[[str, str | None], None]:
    """Apply another instance's pin change here. A release (the agent finished there) also frees
    the slot the agent may still hold here, so its lease is not renewed by this instance."""
    pins = getattr(routing.router, "pins", None)

    def apply(agent: str, replica: str | None) -> None:
        if replica is None:
            gate.release_here(agent)
            if pins is not None:
                pins.release(agent)
        elif pins is not None:
            pins.set(agent, replica, gate.clock())

    return apply


def redis_state(policy: Policy) -> RedisState:
    """The Redis backend for ``policy.state`` (settings: ``SharedStateSettings.from_policy``)."""
    if not policy.state.redis_url:
        raise ValueError("state.backend is redis but state.redis_url is not set (--redis-url)")
    return RedisState(policy.state.redis_url, SharedStateSettings.from_policy(policy.state))


def attach(gate: SharedWindowGate, routing: RoutingStage, metrics: ProxyMetrics | None) -> RedisState:
    """Wire the backend to the admission gate, the router's pins and the metrics; returns it."""
    state = gate.shared
    pins = getattr(routing.router, "pins", None)
    if pins is not None:
        gate.pin_refresh_s = pins.ttl_s / 4
    state.held = gate.held_agents
    state.on_sync = gate.after_sync
    state.pins.apply = pin_applier(routing, gate)
    state.pins.release_here = gate.release_here
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
