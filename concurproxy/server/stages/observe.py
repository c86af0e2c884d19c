"""Metrics at the seams of the request path.

The telemetry package owns the metric declarations and the generic adapters
(`AdmissionMetricsListener` for admission events, `pressure_hook` for pressure
reads); this stage records each ended step with what only the request path
knows: routing decisions, budget outcomes, upstream time and per-tenant
fairness charge.
"""

from __future__ import annotations

from collections import defaultdict

from concurproxy.control.fairness.base import FairnessParams
from concurproxy.server.step import StepContext, StepOutcome
from concurproxy.telemetry.listener import MetricsListener
from concurproxy.telemetry.metrics import ProxyMetrics
from concurproxy.upstream.replica import Replica


class StepMetrics:
    """StepListener: one call per ended step (any outcome)."""

    __slots__ = ("_charged", "_steps", "block_tokens", "fairness", "m")

    def __init__(self, metrics: ProxyMetrics, block_tokens: int, fairness: FairnessParams) -> None:
        self.m = metrics
        self._steps = MetricsListener(metrics)
        self.block_tokens = block_tokens
        self.fairness = fairness
        self._charged: dict[str, float] = defaultdict(float)
        metrics.add_refresher(self._publish_charges)  # the gauges are set at scrape time, not per step

    def _publish_charges(self) -> None:
        for tenant, charged in self._charged.items():
            self.m.set_fairness_counter(tenant, charged)

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        self._steps.on_step_end(ctx, now)  # requests, latency, TTFT, upstream time, tokens, queue wait
        m, step, usage = self.m, ctx.step, ctx.usage
        replica = ctx.replica.id if ctx.replica is not None else None
        d = ctx.route_decision
        if d is not None:
            m.routing_decision(
                d.replica_id, d.reason, pin_hit=d.pinned, prefix_match_tokens=d.matched_blocks * self.block_tokens
            )
            if d.repinned_from is not None:
                m.repinned(d.reason)
        if ctx.budget_denied:
            m.budget_rejected(step.tenant, step.role, ctx.budget_denied)
        if usage is not None:
            if ctx.budget_charged:
                m.budget_consumed(step.tenant, step.role, usage.prompt_tokens + usage.completion_tokens)
            # The tenant's virtual-token counter as VTC charges it (cost / weight), fleet-wide.
            charge = self.fairness.cost(usage.prompt_tokens, usage.completion_tokens) / self.fairness.weight(
                step.tenant
            )
            self._charged[step.tenant] += charge
        if (ctx.outcome is StepOutcome.error or ctx.outcome is StepOutcome.timeout) and replica is not None:
            # A stream the client already had (headers go with the first event) ended with an error event.
            m.upstream_error(replica, "mid_stream" if ctx.stream and ctx.status == 200 else ctx.outcome)


def health_listener(metrics: ProxyMetrics):  # type: ignore[no-untyped-def]
    def on_health(replica: Replica, healthy: bool) -> None:
        metrics.set_replica_health(replica.id, healthy)

    return on_health
