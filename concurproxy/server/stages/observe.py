"""Metrics at the seams: turn ended steps, admission events and pressure reads into Prometheus series.

The cores return decisions with reasons; this module is the one place that
maps them onto `concurproxy.telemetry.metrics.ProxyMetrics` calls.
"""

from __future__ import annotations

import time

from concurproxy.control.admission.events import AdmissionEvent, EventKind
from concurproxy.control.types import PressureSnapshot
from concurproxy.server.hooks import StepContext
from concurproxy.telemetry.metrics import ProxyMetrics
from concurproxy.upstream.replica import Replica


class StepMetrics:
    """StepListener: one call per ended step."""

    def __init__(self, metrics: ProxyMetrics, block_tokens: int) -> None:
        self.m = metrics
        self.block_tokens = block_tokens

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        m = self.m
        step = ctx.step
        replica = ctx.replica.id if ctx.replica is not None else None
        usage = ctx.usage
        m.observe_step(
            route=ctx.route,
            tenant=step.tenant,
            role=step.role,
            status=ctx.status or 499,
            duration_s=time.perf_counter() - ctx.started,
            replica=replica,
            ttft_s=ctx.ttft_s,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
        if replica is not None:
            m.observe_queue_wait(replica, step.role, ctx.queue_wait_s)
        d = ctx.route_decision
        if d is not None:
            m.routing_decision(
                d.replica_id, d.reason.value, pin_hit=d.pinned, prefix_match_tokens=d.matched_blocks * self.block_tokens
            )
            if d.repinned_from is not None:
                m.repinned(d.reason.value)
        if ctx.budget_denied:
            m.budget_rejected(step.tenant, step.role, ctx.budget_denied)
        elif usage is not None and ctx.budget_charged:
            m.budget_consumed(step.tenant, step.role, usage.prompt_tokens + usage.completion_tokens)
        if ctx.outcome in ("error", "timeout") and replica is not None:
            m.upstream_error(replica, ctx.outcome)


class AdmissionMetrics:
    """AdmissionListener: decisions and window changes by reason."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.m = metrics
        self._window: dict[str, float] = {}

    def on_admission_event(self, e: AdmissionEvent) -> None:
        m = self.m
        if e.kind is EventKind.window:
            new = float(e.value or 0)
            m.window_changed(e.replica, self._window.get(e.replica, new), new, e.reason or "controller")
            self._window[e.replica] = new
        elif e.kind is EventKind.ended:
            m.ticket_ended(e.reason)
        elif e.kind is EventKind.double_end:
            m.ticket_error("double_release")
        else:
            m.admission_decision(e.replica, e.kind.value, e.reason or e.kind.value)


def observe_pressure(metrics: ProxyMetrics, replica: str, snapshot: PressureSnapshot) -> None:
    metrics.observe_pressure(replica, snapshot)
    if not snapshot.ok:
        metrics.pressure_poll_error(replica, "stale" if snapshot.error and "stale" in snapshot.error else "failed")


def health_listener(metrics: ProxyMetrics):  # type: ignore[no-untyped-def]
    def on_health(replica: Replica, healthy: bool) -> None:
        metrics.set_replica_health(replica.id, healthy)

    return on_health
