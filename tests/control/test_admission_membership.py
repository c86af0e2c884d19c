"""AdmissionCore.forget_replica: a replica that leaves keeps nothing once its running steps end."""

from __future__ import annotations

from concurproxy.config.admission import AdmissionConfig, StaticConfig
from concurproxy.control.admission import AdmissionCore, Admitted, EventKind, Outcome, Queued
from concurproxy.control.types import StepInfo

CFG = AdmissionConfig(controller="static", static=StaticConfig(window=1), max_queue_wait_s=600)


def step(agent: str) -> StepInfo:
    return StepInfo(tenant="t", role="r", agent_id=agent, task_id="task", est_prompt_tokens=100, max_tokens=100)


def test_waiters_are_returned_running_tickets_end_in_the_hidden_window_then_nothing_is_kept() -> None:
    core = AdmissionCore(CFG)
    running = core.try_admit(step("a"), "r0", 0)
    queued = core.try_admit(step("b"), "r0", 1)
    assert isinstance(running, Admitted) and isinstance(queued, Queued)
    core.drain_events()
    assert core.forget_replica("r0", 2) == [queued.waiter_id]
    events = [(e.kind, e.reason, e.value) for e in core.drain_events()]
    assert events == [(EventKind.cancelled, "replica-left", 1.0), (EventKind.window, "replica-left", None)]
    assert core.replicas == [] and core.state(2) == {} and core.expire(3) == {}
    assert core.end(running.ticket, Outcome.success, 4)  # not a double end: the window was kept for it
    assert core._leaving == {} and core._windows == {} and core._home == {}
    assert core.forget_replica("r0", 5) == []  # unknown replica: nothing to do


def test_a_replica_that_comes_back_before_its_steps_end_gets_its_window_again() -> None:
    core = AdmissionCore(CFG)
    first = core.try_admit(step("a"), "r0", 0)
    assert isinstance(first, Admitted)
    core.forget_replica("r0", 1)
    again = core.try_admit(step("c"), "r0", 2)  # rejoined: the same window, the old step still counts in it
    assert core.end(first.ticket, Outcome.success, 3) and core.replicas == ["r0"] and core._leaving == {}
    assert isinstance(again, Queued | Admitted)


def test_churn_keeps_nothing() -> None:
    core = AdmissionCore(CFG)
    for i in range(1000):
        replica = f"10.0.{i // 256}.{i % 256}:8000" if i % 2 else "r0"  # new ids and one that comes and goes
        admitted = core.try_admit(step(f"a{i}"), replica, i)
        assert isinstance(admitted, Admitted)
        core.end(admitted.ticket, Outcome.success, i)
        core.forget_replica(replica, i)
    assert core._windows == {} and core._leaving == {} and core._home == {}
