"""MetricsListener: the StepListener that records every ended step into ProxyMetrics.

Wire it once: ``components.listeners.append(MetricsListener(metrics))``. The
server calls ``on_step_end(ctx, now)`` exactly once per step, whatever the
outcome, so counters and histograms see refused, failed and cancelled steps too.

Clock assumption: ``ctx.started`` is a ``time.perf_counter()`` reading (that is
what the handlers store), so the duration is measured with the same clock here,
not with the ``now`` argument (the components' clock may be a different one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from concurproxy.telemetry.metrics import ProxyMetrics

if TYPE_CHECKING:
    from concurproxy.server.hooks import StepContext


class MetricsListener:
    """Maps a finished :class:`StepContext` onto :meth:`ProxyMetrics.observe_step` (step + queue wait)."""

    __slots__ = ("_clock", "_metrics")

    def __init__(self, metrics: ProxyMetrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self._metrics = metrics
        self._clock = clock

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        replica = ctx.replica.id if ctx.replica is not None else None
        usage = ctx.usage
        self._metrics.observe_step(
            ctx.route,
            ctx.identity.tenant,
            ctx.step.role,
            ctx.status or 499,  # 0 = the client went away before a status was chosen
            max(0.0, self._clock() - ctx.started),
            replica,
            ctx.ttft_s,
            ctx.upstream_s,
            usage.prompt_tokens if usage is not None else 0,
            usage.completion_tokens if usage is not None else 0,
            ctx.queue_wait_s if replica is not None else None,  # queue wait only for routed steps
        )
