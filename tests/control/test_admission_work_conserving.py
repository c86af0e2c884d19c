"""Work-conserving admission (issue 18): dormant agents yield, an idle engine admits past the footprint
prediction, tenants share slots at step boundaries, and the idle-while-waiting time is measured."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concurproxy.config.admission import AdmissionConfig, AIMDConfig, DormancyConfig, StaticConfig
from concurproxy.control.admission import Admitted, EventKind, FifoQueue, Outcome, Queued, ReplicaWindow, Ticket
from concurproxy.control.admission.returns import ReturnGaps
from concurproxy.control.admission.tenants import fair_shares
from concurproxy.control.limits import AIMDController, StaticController
from concurproxy.control.types import PressureSnapshot, PriorityClass, StepInfo

CFG = AdmissionConfig(idle_ttl_s=30, max_queue_wait_s=1000, max_queue_length=1000, starvation_timeout_s=30)


def step(agent: str, prompt: int = 100, tenant: str = "t", priority: PriorityClass = PriorityClass.normal) -> StepInfo:
    return StepInfo(
        tenant=tenant,
        role="r",
        agent_id=agent,
        task_id=agent,
        priority=priority,
        est_prompt_tokens=prompt,
        max_tokens=50,
    )


def static(window: int, cfg: AdmissionConfig = CFG) -> ReplicaWindow:
    return ReplicaWindow("r0", StaticController(StaticConfig(window=window)), cfg, FifoQueue[int]())


def aimd(capacity: int, cfg: AdmissionConfig = CFG) -> ReplicaWindow:
    c = AIMDController(AIMDConfig(initial=8, min=1, max=64, stale_after_ms=60_000, probe={"enabled": False}))
    w = ReplicaWindow("r0", c, cfg, FifoQueue[int]())
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, waiting=0, kv_capacity_tokens=capacity), 0)
    return w


def admitted(r: object) -> Ticket:
    assert isinstance(r, Admitted), r
    return r.ticket


# ---- dormancy -------------------------------------------------------------------------------------
def test_return_bound_is_a_clamped_multiple_of_the_observed_gaps() -> None:
    g = ReturnGaps(factor=4, min_s=0.05, max_s=30, initial_s=2)
    assert g.bound() == 2  # nothing seen yet
    for _ in range(9):
        g.record(0.01)
    g.record(1.0)  # one long tool call among short ones: q90 is still short
    assert math.isclose(g.bound(), 0.05)  # 4 × 0.01 below the floor
    for _ in range(64):
        g.record(2.0)
    assert g.bound() == 8.0
    for _ in range(64):
        g.record(100.0)
    assert g.bound() == 30  # never later than the idle TTL


def test_a_finished_agent_yields_to_a_waiter_at_its_learned_bound_not_the_ttl() -> None:
    w = static(1)
    t = admitted(w.try_admit(step("a"), 0.0))
    w.end(t, Outcome.success, 1.0)
    admitted(w.try_admit(step("a"), 1.01))  # a returns after 10 ms: a plain agent loop
    w.end(w._tickets[next(iter(w._tickets))], Outcome.success, 2.0)  # a finishes; it never says so
    assert isinstance(w.try_admit(step("b"), 2.0), Queued)
    assert w.deadline(2.0) == 2.0 + w.state(2.0).return_bound_s
    assert w.grant(2.04) == []  # bound: max(0.05, 4 × 0.01)
    (g,) = w.grant(2.06)
    assert g.admitted.ticket.reason == "new"
    assert [(e.agent_id, e.reason) for e in w.drain_events() if e.kind is EventKind.paused] == [("a", "dormant")]
    assert w.state(2.06).counters.yielded == 1


def test_an_agent_that_lost_its_slot_and_comes_back_is_a_return_gap() -> None:
    """Gaps were recorded only for agents that kept their slots, so they were censored at the bound they set:
    an agent slower than it lost its slot first, its gap was never seen, and the bound sank to its floor
    (vLLM decode swarm: 59 of 64 pauses dormant yields at 0.05 s, most of those agents back within 0.7 s)."""
    w = static(1)
    w.end(admitted(w.try_admit(step("a"), 0.0)), Outcome.success, 1.0)
    w.end(admitted(w.try_admit(step("a"), 1.01)), Outcome.success, 2.0)  # gap 10 ms: bound 0.05 (floor)
    assert w.state(2.0).return_bound_s == pytest.approx(0.05)
    q = w.try_admit(step("b"), 2.0)
    assert isinstance(q, Queued)
    (g,) = w.grant(2.06)  # a is dormant: it yields to b
    assert g.waiter_id == q.waiter_id
    assert isinstance(w.try_admit(step("a"), 2.5), Queued)  # a was not done: back 0.5 s after its last step
    assert w.state(2.5).return_bound_s == pytest.approx(1.0)  # 2 x q90 of {0.01, 0.5}
    assert isinstance(w.try_admit(step("a"), 3.0), Queued)  # a second step of the same return: not a gap
    assert w.state(3.0).return_bound_s == pytest.approx(1.0)


def test_the_deadline_is_the_next_dormancy_not_a_passed_one() -> None:
    """A holder dormant already that did not free the waiter's block (here: stale pressure data, which
    nothing overrides) must not hide the next holder's dormancy: the shell arms its timer only at a time
    after now, so a passed minimum left the freed slot to the periodic tick."""
    w = aimd(capacity=100_000)  # pressure from t=0, stale after 60 s
    w.end(admitted(w.try_admit(step("a"), 0.0)), Outcome.success, 0.1)  # idle: dormant at 2.1 (no gaps yet)
    b = admitted(w.try_admit(step("b"), 0.2))
    assert isinstance(w.try_admit(step("c"), 65.0), Queued)  # stale data: nothing new, a stays (dormant)
    assert w.deadline(65.0) is None  # b runs; a's 2.1 has passed
    w.end(b, Outcome.success, 70.0)
    assert w.deadline(70.0) == pytest.approx(72.0)  # b's, not a's passed 2.1


def test_without_dormancy_an_idle_agent_holds_its_slot_until_the_ttl() -> None:
    w = static(1, CFG.model_copy(update={"dormancy": DormancyConfig(enabled=False)}))
    w.end(admitted(w.try_admit(step("a"), 0.0)), Outcome.success, 1.0)
    assert isinstance(w.try_admit(step("b"), 2.0), Queued)
    assert w.grant(29.0) == [] and w.deadline(29.0) is None


# ---- work conservation ------------------------------------------------------------------------------
def test_an_idle_engine_admits_past_the_footprint_budget_but_never_past_w() -> None:
    w = aimd(capacity=1000)
    a = admitted(w.try_admit(step("a", 500), 0.0))
    assert isinstance(w.try_admit(step("b", 450), 0.0), Queued)  # footprint with growth: over 950
    w.end(a, Outcome.success, 0.5, prompt_tokens=500)
    (g,) = w.grant(0.5)
    assert g.admitted.ticket.reason == "work-conserving"  # nothing of ours runs: the engine would idle
    assert w.state(0.5).idle_waiting_s == 0.0


def test_an_idle_engine_does_not_admit_a_step_that_evicts_a_returning_prefix() -> None:
    w = aimd(capacity=1000)
    a = admitted(w.try_admit(step("a", 900), 0.0))
    assert isinstance(w.try_admit(step("b", 900), 0.0), Queued)
    w.end(a, Outcome.success, 0.5, prompt_tokens=900)
    assert w.grant(0.5) == []  # a's 900 cached tokens + b's 900 > 1000: b would evict a, expected back
    bound = w.state(0.5).return_bound_s
    (g,) = w.grant(0.5 + bound + 0.01)  # a stayed away past its return bound: its prefix is fair game
    assert g.admitted.ticket.agent_id == "b"
    # the idle time in between is charged to keeping a's prefix, not to a limit
    assert w.state(1.0).idle_waiting_by_cause == pytest.approx({"prefix": bound + 0.01})


def test_idle_waiting_is_charged_to_the_cause_of_each_period() -> None:
    w = static(1)
    t = admitted(w.try_admit(step("a"), 0.0))
    w.end(t, Outcome.success, 1.0)  # a idle, within its return bound (initial 2 s) while b waits
    assert isinstance(w.try_admit(step("b"), 1.0), Queued)
    assert w.grant(1.5) == []
    admitted(w.try_admit(step("a"), 1.5))  # a is back: the period ends
    assert w.state(2.0).idle_waiting_by_cause == pytest.approx({"return": 0.5})
    assert w.state(2.0).idle_waiting_s == pytest.approx(0.5)


def test_a_hard_cap_keeps_the_footprint_a_wall() -> None:
    cfg = CFG.model_copy(update={"aimd": AIMDConfig(footprint_hard_cap=True)})
    c = AIMDController(AIMDConfig(initial=8, stale_after_ms=60_000, footprint_hard_cap=True))
    w = ReplicaWindow("r0", c, cfg, FifoQueue[int]())
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, waiting=0, kv_capacity_tokens=1000), 0)
    a = admitted(w.try_admit(step("a", 900), 0.0))
    assert isinstance(w.try_admit(step("b", 900), 0.0), Queued)
    w.end(a, Outcome.success, 0.5, prompt_tokens=900)
    assert w.grant(0.6) == []
    assert w.state(1.6).idle_waiting_s == 1.1  # measured: nothing ran while b waited
    assert w.state(1.6).idle_waiting_by_cause == pytest.approx({"return": 1.1})  # a is within its return bound


def test_an_engine_that_queues_work_is_not_idle() -> None:
    w = aimd(capacity=1000)
    a = admitted(w.try_admit(step("a", 900), 0.0))
    w.end(a, Outcome.success, 0.2, prompt_tokens=900)
    a = admitted(w.try_admit(step("a", 950), 0.21))
    assert isinstance(w.try_admit(step("b", 30), 0.22), Queued)
    w.on_pressure(PressureSnapshot(ts=0.25, kv_usage=0.5, waiting=3, kv_capacity_tokens=1000), 0.25)
    w.end(a, Outcome.success, 0.3, prompt_tokens=950)
    assert w.grant(0.3) != []  # the engine's report predates our step's end: the waiting it saw may be ours
    a2 = admitted(w.try_admit(step("a", 960), 0.35))
    w.on_pressure(PressureSnapshot(ts=0.4, kv_usage=0.5, waiting=3, kv_capacity_tokens=1000), 0.4)
    assert isinstance(w.try_admit(step("c", 30), 0.41), Queued)
    assert w.grant(0.45) == []  # a fresh report of steps waiting in the engine: it is not idle
    assert w.state(0.45).running_steps == 2 and a2.agent_id == "a"


def test_a_small_step_backfills_while_the_resuming_head_waits_for_a_prefix() -> None:
    """The lanes serve a resuming agent first, but its prefix does not fit beside the one expected back;
    a new small agent that fits runs meanwhile instead of the engine idling (backfilling)."""
    w = aimd(capacity=1000)
    a = admitted(w.try_admit(step("a", 600), 0.0))
    assert isinstance(w.try_admit(step("b", 300), 0.0), Queued)
    w.end(a, Outcome.success, 0.2, prompt_tokens=600)
    (g,) = w.grant(0.2)
    b = g.admitted.ticket
    a = admitted(w.try_admit(step("a", 650), 0.21))
    w.end(b, Outcome.success, 0.5, prompt_tokens=300)
    w._pausing.give_back(w._agents["b"], 0.5, "tenant-share")  # b loses its slot between steps
    w.end(a, Outcome.success, 0.6, prompt_tokens=600)
    a = admitted(w.try_admit(step("a", 700), 0.61))  # a returns (in window)
    assert isinstance(w.try_admit(step("b", 400), 0.62), Queued)  # b resumes: 700 + 400 > 1000
    assert isinstance(w.try_admit(step("c", 50), 0.63), Queued)
    w.end(a, Outcome.success, 0.7, prompt_tokens=700)  # a between steps: the engine idles
    (g,) = w.grant(0.7)
    assert (g.admitted.ticket.agent_id, g.admitted.ticket.reason) == ("c", "work-conserving")
    assert [x.step.agent_id for x in w._waiters] == ["b"]  # b keeps its place at the head


def test_an_idle_engine_admits_past_w_of_aimd_but_never_of_static() -> None:
    c = AIMDController(AIMDConfig(initial=1, min=1, max=64, stale_after_ms=60_000, probe={"enabled": False}))
    w = ReplicaWindow("r0", c, CFG, FifoQueue[int]())
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, waiting=0, kv_capacity_tokens=1000), 0)
    a = admitted(w.try_admit(step("a", 200), 0.0))
    assert isinstance(w.try_admit(step("b", 200), 0.0), Queued)  # W = 1
    w.end(a, Outcome.success, 0.5, prompt_tokens=200)
    (g,) = w.grant(0.5)  # a is expected back, but its prefix and b's prompt fit beside each other
    assert g.admitted.ticket.reason == "work-conserving"
    s = static(1)
    a = admitted(s.try_admit(step("a", 200), 0.0))
    assert isinstance(s.try_admit(step("b", 200), 0.0), Queued)
    s.end(a, Outcome.success, 0.5, prompt_tokens=200)
    assert s.grant(0.5) == []  # a fixed window is what it says


def test_past_w_the_returning_agents_next_step_growth_must_fit_too() -> None:
    """Contexts alone fit (a: 500, b: 300 of 1000), but a grows ~250 a step: b would make a's next step
    collide, so past W it waits; a smaller b fits with the growth and runs."""
    c = AIMDController(AIMDConfig(initial=1, min=1, max=64, stale_after_ms=60_000, probe={"enabled": False}))
    w = ReplicaWindow("r0", c, CFG, FifoQueue[int]())
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, waiting=0, kv_capacity_tokens=1000), 0)
    for t, prompt in ((0.0, 0), (0.1, 250), (0.2, 500)):
        a = admitted(w.try_admit(step("a", max(prompt, 10)), t))
        w.end(a, Outcome.success, t + 0.05, prompt_tokens=max(prompt, 10))
    assert isinstance(w.try_admit(step("b", 300), 0.3), Queued)
    assert w.grant(0.3) == []  # 500 + 250 (a's growth) + 300 + b's growth > 1000
    assert w.state(0.31).idle_waiting_by_cause == pytest.approx({"prefix": 0.01})  # keeping a's room
    assert isinstance(w.try_admit(step("c", 20), 0.3), Queued)
    (g,) = w.grant(0.3)  # c is small: it fits beside a and a's next step (backfill)
    assert (g.admitted.ticket.agent_id, g.admitted.ticket.reason) == ("c", "work-conserving")


# ---- tenants share slots ----------------------------------------------------------------------------
def test_fair_shares_are_weighted_max_min() -> None:
    one = lambda _t: 1.0  # noqa: E731
    assert fair_shares(4, {"heavy": 40, "light": 1}, one) == {"heavy": 3.0, "light": 1.0}
    assert fair_shares(4, {"heavy": 40, "light": 5}, one) == {"heavy": 2.0, "light": 2.0}
    assert fair_shares(6, {"a": 10, "b": 10}, lambda t: 2.0 if t == "a" else 1.0) == {"a": 4.0, "b": 2.0}
    assert fair_shares(3, {"a": 0, "b": 1}, one) == {"a": 0.0, "b": 1.0}


def _heavy_window(n: int, steps: int) -> tuple[ReplicaWindow, dict[str, Ticket]]:
    """W = n, all held by the heavy tenant's agents, each having taken ``steps`` steps (last still running)."""
    w = static(n)
    tickets: dict[str, Ticket] = {}
    for i in range(n):
        agent = f"h{i}"
        for k in range(steps):
            tickets[agent] = admitted(w.try_admit(step(agent, tenant="heavy"), k))
            if k < steps - 1:
                w.end(tickets[agent], Outcome.success, k + 0.5)
    return w, tickets


def test_a_light_tenant_claims_an_idle_slot_past_the_quantum_at_once() -> None:
    w, tickets = _heavy_window(4, steps=4)
    w.end(tickets["h1"], Outcome.success, 3.5)  # h1 idle between steps
    r = w.try_admit(step("l0", tenant="light"), 3.6)
    assert isinstance(r, Queued)
    (g,) = w.grant(3.6)
    assert (g.admitted.ticket.agent_id, g.admitted.ticket.reason) == ("l0", "claim")
    paused = [(e.agent_id, e.reason) for e in w.drain_events() if e.kind is EventKind.paused]
    assert paused == [("h1", "tenant-share")]
    # h1 comes back: it waits (resume lane) behind nothing of the light tenant, but W is full
    assert isinstance(w.try_admit(step("h1", tenant="heavy"), 3.7), Queued)


def test_a_running_agent_gives_its_slot_when_its_step_ends_and_only_past_the_quantum() -> None:
    w, _tickets = _heavy_window(2, steps=2)  # below the quantum (4): nothing to claim yet
    assert isinstance(w.try_admit(step("l0", tenant="light"), 2.0), Queued)
    assert w.grant(2.0) == []
    w2, tickets2 = _heavy_window(2, steps=4)
    assert isinstance(w2.try_admit(step("l0", tenant="light"), 4.0), Queued)
    assert w2.grant(4.0) == []  # both running: one is marked
    w2.end(tickets2["h1"], Outcome.success, 4.5)
    (g,) = w2.grant(4.5)
    assert g.admitted.ticket.reason == "claim"


def test_one_tenant_alone_keeps_every_slot() -> None:
    w, tickets = _heavy_window(2, steps=6)
    w.end(tickets["h0"], Outcome.success, 6.0)
    assert isinstance(w.try_admit(step("h9", tenant="heavy"), 6.1), Queued)
    assert w.grant(6.1) == []  # same tenant, same class: nothing to claim


def test_a_higher_priority_class_claims_a_lower_ones_slot() -> None:
    w, tickets = _heavy_window(2, steps=4)
    w.end(tickets["h0"], Outcome.success, 4.0)
    assert isinstance(w.try_admit(step("c0", tenant="heavy", priority=PriorityClass.critical), 4.1), Queued)
    (g,) = w.grant(4.1)
    assert (g.admitted.ticket.agent_id, g.admitted.ticket.reason) == ("c0", "claim")


# ---- properties -------------------------------------------------------------------------------------
EVENTS = st.lists(
    st.tuples(st.sampled_from(["arrive", "end", "tick"]), st.integers(0, 9), st.sampled_from(["a", "b"])),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=EVENTS, capacity=st.sampled_from([400, 1000, 3000]))
def test_work_conservation_and_no_starvation_on_random_traces(events, capacity) -> None:  # type: ignore[no-untyped-def]
    """After every decision: never no step of ours running while a step waits only for footprint room on fresh
    data (work conservation); every waiting step — yielded agents' included — is admitted once the trace stops
    adding load and steps keep ending (no starvation); W and the slot count stay within bounds."""
    cfg = CFG.model_copy(update={"starvation_timeout_s": 5.0})
    w = aimd(capacity, cfg)
    running: dict[str, list[Ticket]] = {}
    waiting: dict[int, str] = {}
    now = 0.0

    def admit(agent: str, r: object) -> None:
        if isinstance(r, Admitted):
            running.setdefault(agent, []).append(r.ticket)
        elif isinstance(r, Queued):
            waiting[r.waiter_id] = agent

    def grant() -> None:
        for g in w.grant(now):
            agent = waiting.pop(g.waiter_id)
            running.setdefault(agent, []).append(g.admitted.ticket)

    def check() -> None:
        st_ = w.state(now)
        assert 1 <= st_.window <= 64
        if not w._tickets:
            left = [x.step.agent_id for x in w._waiters if w._gate.conserving(x.step, now)]
            assert not left, f"an idle engine left admissible steps waiting: {left}"

    for kind, i, tenant in events:
        now += 0.1
        agent = f"{tenant}{i}"
        if kind == "arrive" and agent not in waiting.values():
            admit(agent, w.try_admit(step(agent, 100 + 50 * i, tenant=tenant), now))
        elif kind == "end" and running.get(agent):
            w.end(running[agent].pop(), Outcome.success, now, prompt_tokens=100 + 50 * i, output_tokens=20)
        else:
            w.on_pressure(PressureSnapshot(ts=now, kv_usage=0.5, waiting=0, kv_capacity_tokens=capacity), now)
            w.expire(now)
        grant()
        check()
    for _ in range(400):  # drain: steps end, time passes, fresh data keeps coming
        if not waiting:
            break
        now += 0.5
        for tickets in running.values():
            while tickets:
                w.end(tickets.pop(), Outcome.success, now)
        w.on_pressure(PressureSnapshot(ts=now, kv_usage=0.5, waiting=0, kv_capacity_tokens=capacity), now)
        grant()
        check()
    assert not waiting, f"starved: {sorted(waiting.values())}"


def test_an_agent_as_long_as_the_longest_lives_seen_yields_at_once() -> None:
    """Clients that never say they are done still run tasks of a typical length: once 4 agents ended (went
    dormant) after 3 steps, an idle agent at its 3rd step gives its slot to a waiter after the shortest return
    bound, not after the learned one; an agent mid-task keeps it."""
    w = static(1)
    now = 0.0
    for i in range(5):
        agent = f"a{i}"
        for _ in range(3):
            r = w.try_admit(step(agent), now)
            if isinstance(r, Queued):  # the previous agent holds the slot until it turns dormant
                now += w.state(now).return_bound_s + 0.01
                (g,) = w.grant(now)
                t = g.admitted.ticket
            else:
                t = admitted(r)
            w.end(t, Outcome.success, now + 0.1)
            now += 0.6  # 0.5 s between an agent's steps: the learned bound is 2 x 0.5 s
    assert w.state(now).return_bound_s == pytest.approx(1.0)
    # a4 has taken its 3rd step (ended 0.5 s ago): 4 lives of 3 steps ended before it
    tb = admitted(w.try_admit(step("b"), now))  # a4 is most likely done: past ReturnGaps.min_s it yields, not at 1 s
    assert [(e.agent_id, e.reason) for e in w.drain_events() if e.kind is EventKind.paused][-1] == ("a4", "dormant")
    w.end(tb, Outcome.success, now + 0.1)
    assert isinstance(w.try_admit(step("c"), now + 0.2), Queued)  # b took one step of 3: it keeps its slot
    assert w.grant(now + 1.0) == []
    (g,) = w.grant(now + 1.11)  # until its learned return bound
    assert g.admitted.ticket.agent_id == "c"
