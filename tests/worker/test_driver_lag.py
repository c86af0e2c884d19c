"""``EngineDriver.lag_s``: engine-clock seconds a ready engine waited for its host, on an injected clock.

The clock stands still unless the test moves it, so a host that keeps up adds exactly nothing and
a stall adds exactly what the test moved the clock by (the driver's real sleeps are a few ms).
"""

from __future__ import annotations

import pytest

from concurproxy.worker.driver import EngineDriver
from concurproxy.worker.engine import Engine, RequestOutput, StepResult
from concurproxy.worker.profile import load_profile


class StallingEngine(Engine):
    """Moves the fake clock forward by ``stall_s`` during the next step: the host was busy elsewhere."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(load_profile("tiny").engine_config(seed=0))
        self.clock = clock
        self.stall_s = 0.0
        self.stalled: list[StepResult] = []

    def step(self, now: float) -> StepResult:
        res = super().step(now)
        if self.stall_s:
            self.clock[0] += self.stall_s
            self.stall_s = 0.0
            self.stalled.append(res)
        return res


async def finish(driver: EngineDriver, req_id: str) -> RequestOutput:
    q = driver.submit(req_id, [1, 2, 3, 4], 3, ignore_eos=True)
    while not (out := await q.get()).finished:
        pass
    return out


async def test_a_host_that_keeps_up_adds_no_lag_and_a_stall_adds_its_length() -> None:
    clock = [100.0]
    engine = StallingEngine(clock)
    driver = EngineDriver(engine, clock=lambda: clock[0])
    await driver.start()
    try:
        await finish(driver, "r0")
        assert driver.lag_s == 0.0  # steps ended on time, the wake-up was immediate

        engine.stall_s = 1.0  # a step whose end the host reaches 1 s (engine clock) late
        await finish(driver, "r1")
        [res] = engine.stalled
        assert driver.lag_s == pytest.approx(1.0 - res.end)  # the engine clock stood at 0 until the stall

        before = driver.lag_s
        q = driver.submit("r2", [5, 6], 2, ignore_eos=True)
        clock[0] += 0.25  # the idle engine's wake-up waits 0.25 s for the host
        while not (await q.get()).finished:
            pass
        assert driver.lag_s == pytest.approx(before + 0.25)
    finally:
        await driver.stop()
