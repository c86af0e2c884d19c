"""The per-replica agent window: admission, tickets, pausing, TTL, starvation, footprint."""

from __future__ import annotations

from concurproxy.config.admission import AdmissionConfig, AIMDConfig, StaticConfig
from concurproxy.control.admission import (
    AdmissionCore,
    Admitted,
    EventKind,
    FifoQueue,
    Outcome,
    Queued,
    Rejected,
    ReplicaWindow,
    Ticket,
)
from concurproxy.control.limits import AIMDController, NoneController, StaticController
from concurproxy.control.types import PressureSnapshot, StepInfo

CFG = AdmissionConfig(idle_ttl_s=30, max_queue_wait_s=120, max_queue_length=3, starvation_timeout_s=30)


def step(agent: str, prompt: int = 100, tenant: str = "t") -> StepInfo:
    return StepInfo(tenant=tenant, role="r", agent_id=agent, task_id="task", est_prompt_tokens=prompt, max_tokens=100)


def static(window: int, cfg: AdmissionConfig = CFG) -> ReplicaWindow:
    return ReplicaWindow("r0", StaticController(StaticConfig(window=window)), cfg, FifoQueue[int]())


def aimd(cfg: AdmissionConfig = CFG, initial: int = 4, decrease: float = 0.7) -> ReplicaWindow:
    c = AIMDController(AIMDConfig(initial=initial, min=1, max=64, decrease=decrease, stale_after_ms=1000))
    return ReplicaWindow("r0", c, cfg, FifoQueue[int]())


def admitted(r: object) -> Ticket:
    assert isinstance(r, Admitted), r
    return r.ticket


def test_agents_not_requests_hold_slots() -> None:
    w = static(2)
    t1 = admitted(w.try_admit(step("a"), 0))
    t2 = admitted(w.try_admit(step("a"), 0))  # second parallel step of the same agent
    assert t2.reason == "in-window"
    admitted(w.try_admit(step("b"), 0))
    q = w.try_admit(step("c"), 0)
    assert isinstance(q, Queued) and q.position == 1
    assert w.end(t1, Outcome.success, 1) and w.end(t2, Outcome.success, 1)
    assert w.active == 2  # a keeps its slot across the tool pause
    assert w.grant(2) == []
    admitted(w.try_admit(step("a"), 5))  # a's next step passes at once


def test_release_opens_a_slot_for_the_waiter() -> None:
    w = static(1)
    t = admitted(w.try_admit(step("a"), 0))
    q = w.try_admit(step("b"), 0)
    assert isinstance(q, Queued)
    w.end(t, Outcome.success, 3, release=True)
    grants = w.grant(3)
    assert [g.waiter_id for g in grants] == [q.waiter_id]
    assert grants[0].admitted.waited_s == 3 and grants[0].admitted.ticket.reason == "new"


def test_release_while_running_frees_at_step_end() -> None:
    w = static(1)
    t = admitted(w.try_admit(step("a"), 0))
    assert w.release_agent("a", 1)
    assert w.active == 1
    w.end(t, Outcome.success, 2)
    assert w.active == 0


def test_idle_ttl_expires_but_never_a_running_agent() -> None:
    w = static(2)
    t = admitted(w.try_admit(step("a"), 0))
    admitted(w.try_admit(step("b"), 0))
    w.end(t, Outcome.success, 1)
    assert w.expire(30.9).agents == []
    assert w.expire(31.0).agents == ["a"]  # b still runs at t=31
    assert w.active == 1


def test_queue_full_rejects_with_retry_after() -> None:
    w = static(1)
    admitted(w.try_admit(step("a"), 0))
    for name in "bcd":
        assert isinstance(w.try_admit(step(name), 0), Queued)
    r = w.try_admit(step("e"), 0)
    assert isinstance(r, Rejected) and r.reason == "queue-full" and 1 <= r.retry_after_s <= 120


def test_waiter_times_out_after_max_queue_wait() -> None:
    w = static(1)
    admitted(w.try_admit(step("a"), 0))
    q = w.try_admit(step("b"), 10)
    assert isinstance(q, Queued)
    assert w.expire(129.9).waiters == []
    (to,) = w.expire(130).waiters
    assert (to.waiter_id, to.agent_id, to.waited_s) == (q.waiter_id, "b", 120)
    assert not w.cancel_wait(q.waiter_id, 131)
    assert w.counters.timeouts == 1


def test_cancel_wait_removes_from_queue() -> None:
    w = static(1)
    t = admitted(w.try_admit(step("a"), 0))
    qb = w.try_admit(step("b"), 0)
    qc = w.try_admit(step("c"), 0)
    assert isinstance(qb, Queued) and isinstance(qc, Queued)
    assert w.cancel_wait(qb.waiter_id, 1)
    w.end(t, Outcome.success, 2, release=True)
    assert [g.waiter_id for g in w.grant(2)] == [qc.waiter_id]


def test_other_waiting_steps_of_the_admitted_agent_pass_too() -> None:
    w = static(1)
    t = admitted(w.try_admit(step("a"), 0))
    q1 = w.try_admit(step("b"), 0)
    q2 = w.try_admit(step("c"), 0)
    q3 = w.try_admit(step("b"), 0)
    assert isinstance(q1, Queued) and isinstance(q2, Queued) and isinstance(q3, Queued)
    w.end(t, Outcome.success, 1, release=True)
    grants = w.grant(1)
    assert [g.waiter_id for g in grants] == [q1.waiter_id, q3.waiter_id]
    assert grants[1].admitted.ticket.reason == "in-window"
    assert w.active == 1


def test_double_end_is_a_counted_noop() -> None:
    w = static(1)
    t = admitted(w.try_admit(step("a"), 0))
    assert w.end(t, Outcome.error, 1)
    assert not w.end(t, Outcome.success, 2)
    assert w.counters.double_end == 1 and w.counters.ended == {"error": 1}
    assert [e.kind for e in w.drain_events()][-2:] == [EventKind.ended, EventKind.double_end]


def test_anti_starvation_admits_above_window_once_per_timeout() -> None:
    w = static(1)
    admitted(w.try_admit(step("a"), 0))  # a runs forever
    qb = w.try_admit(step("b"), 0)
    qc = w.try_admit(step("c"), 1)
    assert isinstance(qb, Queued) and isinstance(qc, Queued)
    assert w.grant(29.9) == []
    (g,) = w.grant(30)
    assert g.waiter_id == qb.waiter_id and g.admitted.ticket.reason == "starvation"
    assert w.grant(59.9) == []  # one over-window admission per starvation timeout
    (g2,) = w.grant(60)
    assert g2.waiter_id == qc.waiter_id
    assert w.active == 3 and w.counters.admitted_starvation == 2


def test_shrink_pauses_idle_newest_first_and_running_after_their_step() -> None:
    w = aimd(initial=4, decrease=0.5)
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.5), 0)
    t = {a: admitted(w.try_admit(step(a), 0)) for a in "abcd"}
    for a in "ac":
        w.end(t[a], Outcome.success, 0.1)  # a and c idle, b and d running
    d = w.on_pressure(PressureSnapshot(ts=1, kv_usage=0.95, preemptions_per_s=1), 1)
    assert d.window == 2  # ceil(4 * 0.5)
    # ranks: a b | c d -> c is idle over the window: paused now; d runs and keeps going
    assert [x.agent_id for x in w.state(1).agents] == ["a", "b", "d"]
    admitted(w.try_admit(step("d"), 1.1))  # d's parallel step still passes while it holds the slot
    w.end(t["d"], Outcome.success, 2)
    assert [x.agent_id for x in w.state(2).agents] == ["a", "b", "d"]  # d still has one step running
    assert w.counters.paused == 1
    q = w.try_admit(step("c"), 2)
    assert isinstance(q, Queued)  # c's next step waits like a new agent


def test_stale_pressure_admits_nothing_new_but_admitted_agents_pass() -> None:
    w = aimd()
    assert isinstance(w.try_admit(step("a"), 0), Queued)  # no data yet
    w.on_pressure(PressureSnapshot(ts=1, kv_usage=0.3), 1)
    (g,) = w.grant(1)
    assert g.admitted.ticket.agent_id == "a"
    q = w.try_admit(step("b"), 2.5)  # snapshot 1.5 s old > 1.0 s
    assert isinstance(q, Queued)
    assert w.state(2.5).saturated_reason == "stale"
    admitted(w.try_admit(step("a"), 2.5))
    assert w.grant(100) == []  # stale blocks even anti-starvation
    w.on_pressure(PressureSnapshot(ts=3, ok=False, error="refused"), 3)
    assert w.grant(100) == []


def test_footprint_budget_blocks_new_agents_when_capacity_known() -> None:
    w = aimd(initial=64)  # footprint = context + 4 steps of growth
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, kv_capacity_tokens=4000), 0)  # budget 3800
    admitted(w.try_admit(step("a", prompt=300), 0))  # 300 + 4 * min(max_tokens 100, 512) = 700
    admitted(w.try_admit(step("b", prompt=400), 0))  # 400 + 400 = 800
    q = w.try_admit(step("c", prompt=2000), 0)  # 1500 + 2400 > 3800
    assert isinstance(q, Queued)
    st = w.state(0)
    assert (st.footprint_tokens, st.footprint_budget_tokens) == (1500, 3800)
    assert w.drain_events()[-1].reason == "footprint"


def test_footprint_grows_with_observed_steps_and_usage() -> None:
    w = aimd(initial=64)
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1), 0)
    t = admitted(w.try_admit(step("a", prompt=100), 0))
    w.end(t, Outcome.success, 1, prompt_tokens=120, output_tokens=80)
    assert w.state(1).agents[0].footprint_tokens == 200 + 4 * 100
    admitted(w.try_admit(step("a", prompt=400), 2))  # grew by 280 since last prompt 120
    assert w.state(2).agents[0].footprint_tokens == 400 + 4 * 190  # growth ewma (100 + 280) / 2


def test_none_controller_admits_everything() -> None:
    w = ReplicaWindow("r0", NoneController(), CFG, FifoQueue[int]())
    for i in range(500):
        assert admitted(w.try_admit(step(f"a{i}"), 0)).reason == "unbounded"


def test_core_moves_agent_between_replicas() -> None:
    core = AdmissionCore(AdmissionConfig(controller="static", static=StaticConfig(window=1)))
    t = admitted(core.try_admit(step("a"), "r0", 0))
    core.end(t, Outcome.success, 1)
    t2 = admitted(core.try_admit(step("a"), "r1", 2))
    assert core.state(2)["r0"].active_agents == 0
    assert core.state(2)["r1"].active_agents == 1
    assert core.release_agent("a", 3) and core.state(3)["r1"].agents[0].releasing
    core.end(t2, Outcome.success, 4)
    assert core.state(4)["r1"].active_agents == 0
    assert not core.release_agent("a", 5)


def test_paused_agent_resumes_before_new_agents() -> None:
    w = aimd(initial=2)
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.5), 0)
    ta, tb = admitted(w.try_admit(step("a"), 0)), admitted(w.try_admit(step("b"), 0))
    w.end(tb, Outcome.success, 0.1)
    w.on_pressure(PressureSnapshot(ts=1, kv_usage=0.5, preemptions_per_s=1), 1)  # W 2 -> 1: b paused
    qn = w.try_admit(step("new"), 1.1)
    qb = w.try_admit(step("b"), 1.2)  # b comes back after its tool pause, behind "new"
    assert isinstance(qn, Queued) and isinstance(qb, Queued)
    w.end(ta, Outcome.success, 2, release=True)
    (g,) = w.grant(2)
    assert g.waiter_id == qb.waiter_id and g.admitted.ticket.reason == "resume"


def test_window_grows_only_as_steps_of_the_admitted_agents_end() -> None:
    """Slow start through the window: an agent whose first step has not ended is not in any KV reading,
    so W does not grow past twice the agents that had a step end, plus one (the tier's agent loop on
    vLLM's CPU build admitted five agents before the first step ended, and their growth preempted)."""
    # W alone (the work-conserving rule would also admit past W whenever nothing of ours runs)
    w = aimd(CFG.model_copy(update={"max_queue_length": 8, "work_conserving": False}), initial=1)
    w.on_pressure(PressureSnapshot(ts=0.0, kv_usage=0.1), 0.0)
    t0 = admitted(w.try_admit(step("a0"), 0.0))
    for i in range(1, 6):
        assert isinstance(w.try_admit(step(f"a{i}"), 0.0), Queued)
    for t in (0.25, 0.5, 0.75, 1.0):
        w.on_pressure(PressureSnapshot(ts=t, kv_usage=0.1), t)
        assert w.grant(t) == []
    assert (w.window, w.active, w.state(1.0).window_reason) == (1, 1, "hold-slow-start")
    w.end(t0, Outcome.success, 1.1)  # a0's first step ended: the next readings include it
    granted = []
    for t in (1.25, 1.5, 1.75, 2.0):
        w.on_pressure(PressureSnapshot(ts=t, kv_usage=0.1), t)
        granted += w.grant(t)
    assert (w.window, w.active, len(granted)) == (3, 3, 2)  # at most 2 x 1 + 1 until a1 or a2 has a step end
