"""Engine models for the simulation: the worker's engine, stepped per iteration."""

from __future__ import annotations

from concurproxy.worker.engine import Engine, EngineConfig, StepResult


class ExactEngine(Engine):
    """The worker's engine, one ``step`` per iteration; ``step_until`` ignores the horizon."""

    def step_until(self, now: float, horizon: float) -> StepResult:
        return self.step(now)


def make_engine(config: EngineConfig, mode: str) -> Engine:
    if mode == "exact":
        return ExactEngine(config)
    raise ValueError(f"unknown engine mode {mode!r}; known: exact, fast")
