"""The dispatch stage's async shell: a held long step goes when the control step ends, or at the bound."""

from __future__ import annotations

import asyncio

from concurproxy.control.dispatch import DispatchCores, DispatchParams
from concurproxy.control.types import PriorityClass, StepInfo
from concurproxy.identity import Identity
from concurproxy.server.hooks import StepContext
from concurproxy.server.stages.dispatch import DispatchStage


def ctx(prompt: int, priority: PriorityClass) -> StepContext:
    step = StepInfo("t", "r", "a", "k", priority=priority, est_prompt_tokens=prompt)
    return StepContext("id", "chat", Identity("t", "a", "k", "r", None, False, False), step, {}, "m", True, 0.0)


async def test_a_held_long_step_starts_when_the_control_step_ends() -> None:
    stage = DispatchStage(DispatchCores(DispatchParams(long_prefill_tokens=2048, max_hold_s=60.0)))
    order: list[str] = []
    control, long = ctx(300, PriorityClass.high), ctx(9000, PriorityClass.normal)

    async def run_long() -> None:
        async with stage.hold(long, "r0"):
            order.append("long sent")

    async with stage.hold(control, "r0"):
        task = asyncio.create_task(run_long())
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == [] and stage.state() == {"r0": {"waiting": 1, "held": 1, "forced": 0}}
        order.append("control done")
    await task
    assert order == ["control done", "long sent"]
    assert long.dispatch_wait_s > 0


async def test_the_bound_releases_it_and_a_cancelled_waiter_is_forgotten() -> None:
    now = [0.0]
    stage = DispatchStage(DispatchCores(DispatchParams(long_prefill_tokens=2048, max_hold_s=0.0)), clock=lambda: now[0])
    async with stage.hold(ctx(300, PriorityClass.critical), "r0"):
        async with stage.hold(ctx(9000, PriorityClass.normal), "r0"):  # max_hold 0: expires at once
            assert stage.state()["r0"]["forced"] == 1
    slow = DispatchStage(DispatchCores(DispatchParams(long_prefill_tokens=2048, max_hold_s=60.0)))
    async with slow.hold(ctx(300, PriorityClass.high), "r0"):
        waiter = asyncio.create_task(slow.hold(ctx(9000, PriorityClass.normal), "r0").__aenter__())
        for _ in range(5):
            await asyncio.sleep(0)
        waiter.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert slow.state()["r0"]["waiting"] == 0


async def test_the_kv_reserve_holds_a_step_until_room_frees_and_reports_it() -> None:
    from concurproxy.control.types import PressureSnapshot

    snaps = {"r0": PressureSnapshot(ts=0.0, kv_capacity_tokens=10_000)}
    params = DispatchParams(long_prefill_tokens=50_000, kv_reserve=0.2, reserve_max_hold_s=60.0)
    stage = DispatchStage(DispatchCores(params), snapshots=snaps.get)
    order: list[str] = []
    second = ctx(3000, PriorityClass.normal)

    async def run_second() -> None:
        async with stage.hold(second, "r0"):
            order.append("second sent")

    async with stage.hold(ctx(300, PriorityClass.high), "r0"):
        async with stage.hold(ctx(6000, PriorityClass.normal), "r0"):
            task = asyncio.create_task(run_second())
            for _ in range(5):
                await asyncio.sleep(0)
            assert order == [] and stage.state()["r0"]["reserve_waiting"] == 1  # 6,000 + 3,000 > 8,000
            assert stage.state()["r0"]["reserve_in_flight_tokens"] == 6000
            order.append("first done")
        await task
    assert order == ["first done", "second sent"] and second.dispatch_wait_s > 0
    assert stage.state()["r0"]["reserve_in_flight_tokens"] == 0


async def test_a_replica_that_leaves_lets_its_held_steps_go_and_keeps_no_core() -> None:
    from concurproxy.control.types import PressureSnapshot

    snaps = {"r0": PressureSnapshot(ts=0.0, kv_capacity_tokens=10_000)}
    params = DispatchParams(long_prefill_tokens=8000, max_hold_s=600.0, kv_reserve=0.2, reserve_max_hold_s=600.0)
    stage = DispatchStage(DispatchCores(params), snapshots=snaps.get)
    sent: list[str] = []

    async def run(name: str, c: StepContext) -> None:
        async with stage.hold(c, "r0"):
            sent.append(name)

    async with stage.hold(ctx(300, PriorityClass.high), "r0"):  # a control step in flight: both cores hold
        async with stage.hold(ctx(6000, PriorityClass.normal), "r0"):
            held = [asyncio.create_task(run("long", ctx(9000, PriorityClass.normal)))]  # reserve, then the gate
            for _ in range(5):
                await asyncio.sleep(0)
            assert stage.state()["r0"]["reserve_waiting"] == 1 and sent == []
            stage.forget_replica("r0")
            await asyncio.gather(*held)  # let go at once, while the control step still runs
            assert sent == ["long"] and "r0" not in stage.state()
    assert stage.state() == {}  # the steps that ended there brought no core back
    for _ in range(3):  # a step that reaches the stage after its replica left gets cores that are not kept
        await run("late", ctx(9000, PriorityClass.normal))
    assert stage.state() == {} and sent == ["long", "late", "late", "late"]
    stage.join_replica("r0")
    await run("back", ctx(300, PriorityClass.normal))
    assert "r0" in stage.state()
    for i in range(5000):  # ids that come and go keep a bounded trace
        stage.forget_replica(f"10.0.{i // 256}.{i % 256}:8000")
    assert len(stage.cores._left) <= 1024
