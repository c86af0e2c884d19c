"""The async admission shell with a fake clock: waiting, waking, timeouts, cancellation, outcomes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from concurproxy.config.admission import AdmissionConfig, AIMDConfig, DormancyConfig, StaticConfig
from concurproxy.control.admission import AdmissionEvent, EventKind
from concurproxy.control.types import PressureSnapshot, StepInfo, StepOutcome
from concurproxy.server.admission import (
    AdmissionRejected,
    AdmissionTicket,
    AdmissionTimeout,
    RecordingListener,
    WindowGate,
)


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def step(agent: str, prompt: int = 100) -> StepInfo:
    return StepInfo(tenant="t", role="r", agent_id=agent, task_id="task", est_prompt_tokens=prompt)


def service(window: int = 1, clock: FakeClock | None = None, **cfg: Any) -> WindowGate:
    base: dict[str, Any] = {
        "controller": "static",
        "static": StaticConfig(window=window),
        "max_queue_wait_s": 60,
        "max_queue_length": 3,
        "starvation_timeout_s": 1000,
        "idle_ttl_s": 30,
    }
    base.update(cfg)
    return WindowGate.for_config(AdmissionConfig(**base), clock=clock or FakeClock(), listeners=[RecordingListener()])


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def spawn(svc: WindowGate, agent: str, replica: str = "r0") -> asyncio.Task[AdmissionTicket]:
    return asyncio.ensure_future(svc.admit(step(agent), replica))


def counters(svc: WindowGate, replica: str = "r0") -> Any:
    return svc.core.window(replica).counters


async def test_admitted_agent_passes_and_waiter_wakes_on_release() -> None:
    svc = service(window=1)
    async with await svc.admit(step("a"), "r0") as t:
        assert t.queue_wait_s == 0
        waiter = spawn(svc, "b")
        await settle()
        assert not waiter.done() and svc.waiting() == 1
        again = await svc.admit(step("a"), "r0")  # a's parallel step passes
        again.end()
        t.finish_agent()
    tb = await asyncio.wait_for(waiter, 1)
    assert tb.core.agent_id == "b" and tb.core.reason == "new"
    tb.end()
    assert counters(svc).ended == {"success": 3}


async def test_timeout_after_max_queue_wait_with_retry_after() -> None:
    clock = FakeClock()
    svc = service(window=1, clock=clock)
    held = await svc.admit(step("a"), "r0")
    waiter = spawn(svc, "b")
    await settle()
    clock.t += 59.9
    svc.tick()
    await settle()
    assert not waiter.done()
    clock.t += 0.1
    svc.tick()
    with pytest.raises(AdmissionTimeout) as ei:
        await asyncio.wait_for(waiter, 1)
    assert ei.value.status == 503 and ei.value.retry_after_s is not None and ei.value.retry_after_s >= 1
    assert "Retry-After" in ei.value.response_headers()
    assert svc.waiting() == 0 and svc.core.window("r0").state(clock.t).waiting == 0
    held.end()


async def test_queue_full_is_rejected_at_once() -> None:
    svc = service(window=1)
    held = await svc.admit(step("a"), "r0")
    waiters = [spawn(svc, x) for x in "bcd"]
    await settle()
    with pytest.raises(AdmissionRejected) as ei:
        await svc.admit(step("e"), "r0")
    assert ei.value.status == 429 and ei.value.reason == "queue-full"
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    held.end()


async def test_cancel_while_waiting_leaves_the_queue() -> None:
    svc = service(window=1)
    held = await svc.admit(step("a"), "r0")
    wb, wc = spawn(svc, "b"), spawn(svc, "c")
    await settle()
    wb.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wb
    assert svc.core.window("r0").state(svc.clock()).waiting == 1
    assert counters(svc).cancelled_waits == 1
    held.finish_agent()
    held.end()
    tc = await asyncio.wait_for(wc, 1)
    assert tc.core.agent_id == "c"
    tc.end()


async def test_grant_racing_with_cancel_does_not_leak_the_step() -> None:
    svc = service(window=1)
    held = await svc.admit(step("a"), "r0")
    wb = spawn(svc, "b")
    await settle()
    held.finish_agent()
    held.end()  # grants b: its future is resolved, the task has not resumed yet
    wb.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wb
    w = svc.core.window("r0")
    assert w.open_tickets() == 0
    assert counters(svc).ended == {"success": 1, "cancelled": 1}


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (lambda: None, "success"),
        (lambda: (_ for _ in ()).throw(ValueError("boom")), "error"),
        (lambda: (_ for _ in ()).throw(TimeoutError()), "timeout"),
        (lambda: (_ for _ in ()).throw(asyncio.CancelledError()), "cancelled"),
    ],
)
async def test_ticket_outcome_follows_how_the_block_exits(body: Callable[[], object], outcome: str) -> None:
    svc = service(window=2)
    try:
        async with await svc.admit(step("a"), "r0"):
            body()
    except (ValueError, TimeoutError, asyncio.CancelledError):
        pass
    assert counters(svc).ended == {outcome: 1}


async def test_explicit_outcome_wins_and_double_end_is_counted() -> None:
    svc = service(window=2)
    async with await svc.admit(step("a"), "r0") as t:
        t.set_outcome(StepOutcome.timeout)  # the request path's outcome, as is
    assert not t.end()  # a second end is a counted no-op
    assert counters(svc).ended == {"timeout": 1} and counters(svc).double_end == 1


async def test_task_cancelled_inside_the_block_ends_cancelled() -> None:
    svc = service(window=2)
    started = asyncio.Event()

    async def stream() -> None:
        async with await svc.admit(step("a"), "r0"):
            started.set()
            await asyncio.Event().wait()  # client streaming forever

    task = asyncio.ensure_future(stream())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counters(svc).ended == {"cancelled": 1}


async def test_aimd_stale_pressure_blocks_then_fresh_pressure_admits() -> None:
    clock = FakeClock()
    cfg = AdmissionConfig(aimd=AIMDConfig(initial=2, stale_after_ms=1000), fallback_controller=None)
    svc = WindowGate.for_config(cfg, clock=clock)
    waiter = spawn(svc, "a")
    await settle()
    assert not waiter.done()  # no pressure data yet, and no fallback: saturated
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, kv_usage=0.2))
    t = await asyncio.wait_for(waiter, 1)
    clock.t += 5  # data goes stale
    svc.tick()
    w2 = spawn(svc, "b")
    await settle()
    assert not w2.done()
    st = svc.state()["replicas"]["r0"]
    assert st["saturated_reason"] == "stale" and st["waiting"] == 1
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, kv_usage=0.2))
    (await asyncio.wait_for(w2, 1)).end()
    t.end()


async def test_a_replica_without_a_kv_signal_is_led_by_latency_and_a_lost_signal_falls_back_after_the_grace() -> None:
    clock = FakeClock()
    cfg = AdmissionConfig(aimd=AIMDConfig(initial=2, stale_after_ms=1000), stale_grace_s=10)
    svc = WindowGate.for_config(cfg, clock=clock)
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, ok=False, error="HTTP 404"))  # no /metrics at all
    (await asyncio.wait_for(svc.admit(step("a"), "r0"), 1)).end()  # never waits on a signal that cannot come
    st = svc.state()["replicas"]["r0"]
    assert (st["saturated"], st["controller"], st["pressure_source"]) == (False, "gradient", "latency")
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, kv_usage=0.2))  # metrics appear: KV leads
    assert svc.state()["replicas"]["r0"]["pressure_source"] == "kv"
    clock.t += 5  # the signal goes stale: saturated for stale_after + grace
    svc.tick()
    st = svc.state()["replicas"]["r0"]
    assert st["saturated_reason"] == "stale" and st["pressure_source"] == "stale"
    clock.t += 6.5  # past 1 s + 10 s without a usable reading: latency leads again
    b = spawn(svc, "b")
    await settle()
    (await asyncio.wait_for(b, 1)).end()
    assert svc.state()["replicas"]["r0"]["pressure_source"] == "latency"


async def test_before_the_first_reading_new_agents_wait_for_it_not_admitted_without_limits() -> None:
    """At start nothing is known: no window from KV, no footprint budget. Steps that arrive before the first
    reading wait for it (one poll) instead of all being admitted by the latency fallback: a burst at start
    (virtual time, a decode swarm of 24 agents on `tiny`) admitted all 24, thrashed, and cost 4-12%."""
    clock = FakeClock()
    cfg = AdmissionConfig(aimd=AIMDConfig(initial=2, stale_after_ms=1000), stale_grace_s=10)
    svc = WindowGate.for_config(cfg, clock=clock)
    first = spawn(svc, "a")
    await settle()
    assert not first.done() and svc.state()["replicas"]["r0"]["pressure_source"] == "stale"
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, kv_usage=0.1))  # the first reading: KV leads
    (await asyncio.wait_for(first, 1)).end()
    assert svc.state()["replicas"]["r0"]["pressure_source"] == "kv"

    quiet = WindowGate.for_config(cfg, clock=clock)  # a poller that never reports anything at all
    waiter = spawn(quiet, "b")
    await settle()
    assert not waiter.done()
    clock.t += 1.1  # stale_after without a single reading: latency leads
    quiet.tick()
    (await asyncio.wait_for(waiter, 1)).end()
    assert quiet.state()["replicas"]["r0"]["pressure_source"] == "latency"


async def test_window_growth_wakes_waiters() -> None:
    clock = FakeClock()
    svc = WindowGate.for_config(AdmissionConfig(aimd=AIMDConfig(initial=1, min=1)), clock=clock)
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, kv_usage=0.2))
    first = await svc.admit(step("a"), "r0")
    waiter = spawn(svc, "b")
    await settle()
    held = await svc.admit(step("a"), "r0")  # a's next step runs before its first ends (a parallel step)
    first.end()  # a step of a ended: the readings have seen a (W grows only then: AIMD's slow start)
    await settle()
    assert not waiter.done()
    clock.t += 0.25
    svc.on_pressure("r0", PressureSnapshot(ts=clock.t, kv_usage=0.2))
    assert svc.core.window("r0").window == 2 and counters(svc).window_increases == 1
    (await asyncio.wait_for(waiter, 1)).end()
    held.end()


async def test_listeners_get_typed_events_and_a_broken_one_is_counted() -> None:
    class Broken:
        def on_admission_event(self, event: AdmissionEvent) -> None:
            raise RuntimeError("listener bug")

    rec = RecordingListener()
    svc = service(window=1)
    svc.listeners = [Broken(), rec]
    held = await svc.admit(step("a"), "r0")
    waiter = spawn(svc, "b")
    await settle()
    held.finish_agent()
    held.end()
    (await asyncio.wait_for(waiter, 1)).end()
    kinds = [e.kind for e in rec.events]
    assert kinds == [
        EventKind.admitted,
        EventKind.queued,
        EventKind.ended,
        EventKind.released,
        EventKind.admitted,
        EventKind.ended,
    ]
    assert rec.events[4].reason == "new" and svc.listener_errors == len(kinds)


async def test_snapshot_state_is_json() -> None:
    svc = service(window=1)
    held = await svc.admit(step("a", prompt=300), "r0")
    doc = json.loads(json.dumps(svc.state()))
    r0 = doc["replicas"]["r0"]
    assert (r0["window"], r0["active_agents"], r0["running_steps"]) == (1, 1, 1)
    assert r0["agents"][0]["agent_id"] == "a" and r0["counters"]["admitted_new"] == 1
    held.end()


async def test_idle_agent_expires_and_its_slot_goes_to_the_waiter() -> None:
    clock = FakeClock()
    svc = service(window=1, clock=clock, dormancy=DormancyConfig(enabled=False))
    (await svc.admit(step("a"), "r0")).end()  # a is idle (tool pause), keeps its slot
    waiter = spawn(svc, "b")
    await settle()
    clock.t += 29
    svc.tick()
    await settle()
    assert not waiter.done()
    clock.t += 1
    svc.tick()
    (await asyncio.wait_for(waiter, 1)).end()
    assert counters(svc).expired == 1


async def test_dormant_agent_yields_its_slot_to_a_waiter_at_its_return_bound() -> None:
    """No X-Agent-Done (the common client): a finished agent's slot goes to a waiter once the agent has been
    idle past its return bound, not after the 30 s idle TTL; if it comes back it resumes with priority."""
    clock = FakeClock()
    svc = service(window=1, clock=clock, dormancy=DormancyConfig(initial_s=2.0))
    (await svc.admit(step("a"), "r0")).end()  # a finished; it never says so
    waiter = spawn(svc, "b")
    await settle()
    clock.t += 1.9
    svc.tick()
    await settle()
    assert not waiter.done()
    clock.t += 0.1
    svc.tick()
    ticket = await asyncio.wait_for(waiter, 1)
    assert ticket.core.reason == "new"
    assert counters(svc).yielded == 1 and counters(svc).expired == 0
    back = spawn(svc, "a")  # a returns after all: it waits, first in the resume lane
    await settle()
    assert not back.done()
    ticket.end()  # b's step ends; b holds its slot until it, in turn, turns dormant
    clock.t += 2.0
    svc.tick()
    await settle()
    assert not back.done()  # a's return 2 s after its step is a gap: the bound is now 2 x 2 s
    clock.t += 2.0
    svc.tick()
    assert (await asyncio.wait_for(back, 1)).core.reason == "resume"


async def test_a_deadline_that_has_passed_arms_no_timer() -> None:
    """A dormancy deadline in the past that the tick could not act on (the waiter is blocked by something a
    dormant holder's yield does not fix) must not re-arm the timer at once, again and again: the event loop
    would spin. The periodic tick goes on."""
    clock = FakeClock()
    svc = service(window=1, clock=clock, dormancy=DormancyConfig(initial_s=2.0))
    (await svc.admit(step("a"), "r0")).end()
    waiter = spawn(svc, "b")
    await settle()
    assert svc._timer is not None  # armed for a's return bound
    svc._timer.cancel()
    svc._timer = None
    svc.core.deadline = lambda now: clock.t - 1.0  # type: ignore[method-assign]
    svc.tick()
    assert svc._timer is None
    svc.core.deadline = lambda now: clock.t + 1.0  # type: ignore[method-assign]
    svc.tick()
    assert svc._timer is not None
    waiter.cancel()


async def test_a_dormant_agent_keeps_its_slot_while_nobody_waits() -> None:
    clock = FakeClock()
    svc = service(window=1, clock=clock, dormancy=DormancyConfig(initial_s=2.0))
    (await svc.admit(step("a"), "r0")).end()
    clock.t += 25  # long past the bound, within the TTL: holding costs nothing
    svc.tick()
    assert counters(svc).yielded == 0
    assert (await svc.admit(step("a"), "r0")).core.reason == "in-window"


async def test_acquire_records_usage_releases_done_agents_and_keeps_outcome() -> None:
    from types import SimpleNamespace

    svc = service(window=1)
    gate = svc  # the request path's seam: acquire(ctx) → the one ticket

    def ctx(agent: str, done: bool) -> Any:
        return SimpleNamespace(step=replace(step(agent), last_step=done), replica=SimpleNamespace(id="r0"), usage=None)

    c1 = ctx("a", done=False)
    async with gate.acquire(c1) as t:
        c1.usage = SimpleNamespace(prompt_tokens=300, completion_tokens=50)
        t.set_outcome(StepOutcome.error)
    st = svc.core.window("r0").state(svc.clock())
    assert st.agents[0].footprint_tokens == 350 + 4 * 512  # context + 4 steps of default growth
    assert counters(svc).ended == {"error": 1}
    async with gate.acquire(ctx("a", done=True)):
        pass
    assert svc.core.window("r0").active == 0  # X-Agent-Done freed the slot
    async with gate.acquire(ctx("b", done=True)) as tb:
        assert tb.queue_wait_s == 0
