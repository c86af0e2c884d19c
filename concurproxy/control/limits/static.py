"""Fixed window controller."""

from __future__ import annotations

from concurproxy.config.admission import StaticConfig
from concurproxy.control.limits.base import StepSample, WindowDecision
from concurproxy.control.types import PressureSnapshot


class StaticController:
    """W = ``window`` forever, whatever the pressure.

    The baseline the benchmark sweeps: the best static window is an oracle a
    user cannot know in advance (it depends on the workload mix), which is why
    ``aimd`` is the default. Pressure is ignored entirely — also its staleness —
    so ``stale_after_s`` is None and the replica is never marked saturated.

    Concurrency: immutable after construction.
    """

    name = "static"
    stale_after_s: float | None = None

    def __init__(self, config: StaticConfig | None = None) -> None:
        self._window = (config or StaticConfig()).window

    @property
    def window(self) -> int:
        return self._window

    def update(
        self, snapshot: PressureSnapshot | None, in_use: int, now: float, acked: int | None = None
    ) -> WindowDecision:
        return WindowDecision(self._window, False, "static")

    def on_step(self, sample: StepSample) -> None:
        return None
