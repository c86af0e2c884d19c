"""Pass-through controller: no admission limit."""

from __future__ import annotations

from concurproxy.control.limits.base import UNBOUNDED, StepSample, WindowDecision
from concurproxy.control.types import PressureSnapshot


class NoneController:
    """W = ``UNBOUNDED``: every agent is admitted at once, pressure is ignored.

    The benchmark's "plain engine" baseline, and the switch that turns admission
    off without removing the proxy (identity, budgets and routing still apply).
    Idle-TTL bookkeeping still runs so ``/admin/state`` shows the live agents.

    Concurrency: stateless.
    """

    name = "none"
    stale_after_s: float | None = None

    @property
    def window(self) -> int:
        return UNBOUNDED

    def update(
        self, snapshot: PressureSnapshot | None, in_use: int, now: float, acked: int | None = None
    ) -> WindowDecision:
        return WindowDecision(UNBOUNDED, False, "unbounded")

    def on_step(self, sample: StepSample) -> None:
        return None
