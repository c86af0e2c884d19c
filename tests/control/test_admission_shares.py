"""Role shares of the admission window (``roles.*.window_share``): guarantee, burst, reclaim, shrink."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from concurproxy.config.admission import AdmissionConfig, AIMDConfig, DormancyConfig, StaticConfig
from concurproxy.config.budgets import RoleConfig
from concurproxy.control.admission import (
    Admitted,
    EventKind,
    FifoQueue,
    Outcome,
    Queued,
    ReplicaWindow,
    Ticket,
    WindowShares,
)
from concurproxy.control.limits import AIMDController, StaticController
from concurproxy.control.types import PressureSnapshot, StepInfo

# Idle agents hold their slots here (no dormancy, no work-conserving admission): the share rules alone.
CFG = AdmissionConfig(
    idle_ttl_s=30,
    max_queue_wait_s=120,
    max_queue_length=100,
    starvation_timeout_s=30,
    dormancy=DormancyConfig(enabled=False),
    work_conserving=False,
)
SHARES = WindowShares.from_roles(
    {"monitor": RoleConfig(window_share=0.25), "executor": RoleConfig(), "default": RoleConfig(window_share=0.1)}
)


def step(agent: str, role: str) -> StepInfo:
    return StepInfo(tenant="t", role=role, agent_id=agent, task_id="task", est_prompt_tokens=100, max_tokens=10)


def window(size: int, shares: WindowShares = SHARES) -> ReplicaWindow:
    controller = StaticController(StaticConfig(window=size))
    w = ReplicaWindow("r0", controller, CFG, FifoQueue[int]())
    w.set_shares(shares, 0.0)
    return w


def admitted(r: object) -> Ticket:
    assert isinstance(r, Admitted), r
    return r.ticket


@dataclass(frozen=True)
class Holder:
    agent_id: str
    role: str
    running: int = 0


@pytest.mark.parametrize(
    ("role", "size", "slots"),
    [
        ("monitor", 8, 2),  # floor(0.25 × 8)
        ("monitor", 10, 2),  # floor(2.5)
        ("monitor", 2, 1),  # a share is at least one slot
        ("executor", 8, 0),  # configured without a share
        ("invented", 20, 2),  # unknown role → default's 0.1
        ("invented", 5, 1),
    ],
)
def test_guaranteed_slots(role: str, size: int, slots: int) -> None:
    assert SHARES.guaranteed(SHARES.key(role), size) == slots


def test_no_shares_configured_is_falsy_and_ranks_in_admission_order() -> None:
    none = WindowShares.from_roles({"executor": RoleConfig()})
    agents = [Holder("a", "executor"), Holder("b", "monitor")]
    assert not none and none.rank(agents, 1) == agents


def test_rank_keeps_guaranteed_agents_first() -> None:
    agents = [Holder(f"e{i}", "executor") for i in range(4)] + [Holder("m0", "monitor"), Holder("m1", "monitor")]
    # window 4: monitor is guaranteed 1 → m0 ranks before every executor, m1 is burst like them
    assert [a.agent_id for a in SHARES.rank(agents, 4)] == ["m0", "e0", "e1", "e2", "e3", "m1"]


def test_reclaim_victim_is_the_newest_idle_burst_agent_else_the_newest_running() -> None:
    agents = [Holder("e0", "executor"), Holder("e1", "executor"), Holder("e2", "executor", running=1)]
    assert SHARES.reclaim_victim(agents, 3).agent_id == "e1"  # type: ignore[union-attr]
    busy = [Holder(a.agent_id, a.role, running=1) for a in agents]
    assert SHARES.reclaim_victim(busy, 3).agent_id == "e2"  # type: ignore[union-attr]
    within = [Holder("m0", "monitor"), Holder("m1", "monitor")]
    assert SHARES.reclaim_victim(within, 8) is None  # both within monitor's 2 guaranteed slots of 8
    assert SHARES.reclaim_victim(within, 4).agent_id == "m1"  # type: ignore[union-attr]  # 1 of 4: m1 bursts


def test_burst_above_share_while_nobody_below_share_waits() -> None:
    w = window(4)
    for i in range(4):  # executors have no share, yet take the whole idle window (work-conserving)
        admitted(w.try_admit(step(f"e{i}", "executor"), 0))
    assert w.active == 4


def test_below_share_waiter_reclaims_an_idle_burst_slot_at_once() -> None:
    w = window(4)
    tickets = [admitted(w.try_admit(step(f"e{i}", "executor"), 0)) for i in range(4)]
    for t in tickets[:3]:
        w.end(t, Outcome.success, 1)  # e0..e2 idle between steps, e3 running
    q = w.try_admit(step("m0", "monitor"), 2)
    assert isinstance(q, Queued)
    [g] = w.grant(2)
    assert g.waiter_id == q.waiter_id and g.admitted.ticket.reason == "share"
    assert [a.agent_id for a in w.state(2).agents] == ["e0", "e1", "e3", "m0"]  # e2, newest idle, paused
    assert w.counters.share_reclaims == 1 and w.counters.paused == 1
    assert [e.reason for e in w.drain_events() if e.kind is EventKind.paused] == ["share-reclaim"]
    q2 = w.try_admit(step("e2", "executor"), 3)  # its next step waits like a paused agent's
    assert isinstance(q2, Queued) and w.grant(3) == []


def test_running_burst_agent_gives_its_slot_back_after_its_step() -> None:
    w = window(4)
    tickets = [admitted(w.try_admit(step(f"e{i}", "executor"), 0)) for i in range(4)]  # all running
    q = w.try_admit(step("m0", "monitor"), 1)
    assert isinstance(q, Queued) and w.grant(1) == []
    assert w.state(1).active_agents == 4  # never mid-step
    w.end(tickets[3], Outcome.success, 2)  # e3, the newest, ends its step and gives its slot back
    [g] = w.grant(2)
    assert g.waiter_id == q.waiter_id
    assert [a.agent_id for a in w.state(2).agents] == ["e0", "e1", "e2", "m0"]
    assert w.counters.share_reclaims == 1


def test_an_agent_going_idle_first_is_taken_instead_of_the_marked_one() -> None:
    w = window(4)
    tickets = [admitted(w.try_admit(step(f"e{i}", "executor"), 0)) for i in range(4)]
    q = w.try_admit(step("m0", "monitor"), 1)
    assert isinstance(q, Queued) and w.grant(1) == []  # e3 (newest) marked
    w.end(tickets[0], Outcome.success, 2)  # but e0 is idle first: the waiter need not wait for e3
    [g] = w.grant(2)
    assert g.waiter_id == q.waiter_id
    w.end(tickets[3], Outcome.success, 3)
    assert [a.agent_id for a in w.state(3).agents] == ["e1", "e2", "e3", "m0"]  # e3 kept: mark dropped
    assert w.counters.share_reclaims == 1


def test_below_share_waiter_goes_before_the_queue() -> None:
    w = window(2)
    ta = admitted(w.try_admit(step("e0", "executor"), 0))
    admitted(w.try_admit(step("m0", "monitor"), 0))  # monitor holds its one guaranteed slot
    qe = w.try_admit(step("e1", "executor"), 1)
    qm = w.try_admit(step("m1", "monitor"), 2)  # monitor at its share: no priority, no reclaim
    assert isinstance(qe, Queued) and isinstance(qm, Queued)
    assert w.grant(2) == [] and w.counters.share_reclaims == 0
    w.end(ta, Outcome.success, 3, release=True)
    assert [g.waiter_id for g in w.grant(3)] == [qe.waiter_id]  # plain queue order above the share


def test_window_shrink_pauses_burst_agents_before_guaranteed_ones() -> None:
    controller = AIMDController(AIMDConfig(initial=4, min=1, max=64, decrease=0.5, stale_after_ms=1000))
    w = ReplicaWindow("r0", controller, CFG, FifoQueue[int]())
    w.set_shares(SHARES, 0)
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.5), 0)
    for agent, role in [("e0", "executor"), ("e1", "executor"), ("e2", "executor"), ("m0", "monitor")]:
        w.end(admitted(w.try_admit(step(agent, role), 0)), Outcome.success, 0.1)
    d = w.on_pressure(PressureSnapshot(ts=1, kv_usage=0.95, preemptions_per_s=1), 1)
    assert d.window == 2  # ceil(4 × 0.5); monitor keeps max(1, floor(0.25 × 2)) = 1 slot
    # newest-first alone would pause m0; its guaranteed slot keeps it and the newest burst agents go
    assert [a.agent_id for a in w.state(1).agents] == ["e0", "m0"]


def test_without_shares_nothing_changes() -> None:
    w = window(2, WindowShares())
    tickets = [admitted(w.try_admit(step(f"e{i}", "executor"), 0)) for i in range(2)]
    q = w.try_admit(step("m0", "monitor"), 1)
    assert isinstance(q, Queued) and w.grant(1) == []
    w.end(tickets[1], Outcome.success, 2)
    assert w.grant(2) == [] and w.counters.share_reclaims == 0


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 12),
    ops=st.lists(
        st.tuples(st.sampled_from(["executor", "monitor", "x"]), st.integers(0, 30), st.booleans()), max_size=60
    ),
)
# found by the random mode: executor0 keeps its slot for 32 steps, executor1 waits past starvation_timeout_s
# (30 s) and is admitted above W by design (at least one new agent per timeout): the bound counts those
@example(size=1, ops=[("executor", 0, False), ("executor", 1, False)] + [("executor", 0, False)] * 32)
def test_guarantee_bounds(size: int, ops: list[tuple[str, int, bool]]) -> None:
    """Slots never exceed the window but for anti-starvation admissions; a below-share role never waits while
    a burst agent sits idle."""
    w = window(size)
    open_tickets: dict[str, Ticket] = {}
    now = 0.0
    for role, n, finish in ops:
        now += 1
        agent = f"{role}{n}"
        if agent in open_tickets:
            w.end(open_tickets.pop(agent), Outcome.success, now, release=finish)
        else:
            r = w.try_admit(step(agent, role), now)
            if isinstance(r, Admitted):
                open_tickets[agent] = r.ticket
        for g in w.grant(now):
            open_tickets[g.admitted.ticket.agent_id] = g.admitted.ticket
        st_ = w.state(now)
        agents = [Holder(a.agent_id, a.role, a.running_steps) for a in st_.agents]
        assert len(agents) <= size + st_.counters.admitted_starvation
        if w._lanes._share_waiter() is not None and len(agents) >= size:
            burst = SHARES.split(agents, size)[1]
            assert all(a.running > 0 for a in burst), "an idle burst agent kept a slot a below-share role waits for"


def test_below_share_waiter_blocked_by_the_footprint_budget_reclaims_too() -> None:
    controller = AIMDController(AIMDConfig(initial=64, min=1, max=64, stale_after_ms=1000))
    w = ReplicaWindow("r0", controller, CFG, FifoQueue[int]())
    w.set_shares(SHARES, 0)  # monitor: 16 of 64 slots
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, kv_capacity_tokens=4000), 0)  # budget 3800
    for agent in ("e0", "e1"):  # 1000 + 4 × 100 growth = 1400 each
        w.end(admitted(w.try_admit(big(agent, "executor", 1000), 0)), Outcome.success, 0.1)
    q = w.try_admit(big("m0", "monitor", 2000), 0.2)  # 2400: 1400 + 1400 + 2400 > 3800
    assert isinstance(q, Queued)
    [g] = w.grant(0.2)  # e1 gives its slot and its footprint back: 1400 + 2400 = 3800 fits
    assert g.waiter_id == q.waiter_id
    assert [a.agent_id for a in w.state(0.2).agents] == ["e0", "m0"]
    q2 = w.try_admit(big("e2", "executor", 1000), 0.3)  # no share: the budget still holds it back
    assert isinstance(q2, Queued) and w.grant(0.3) == []


def test_stale_pressure_is_never_overridden_by_a_share() -> None:
    controller = AIMDController(AIMDConfig(initial=2, min=1, max=64, stale_after_ms=1000))
    w = ReplicaWindow("r0", controller, CFG, FifoQueue[int]())
    w.set_shares(SHARES, 0)
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1), 0)
    for agent in ("e0", "e1"):
        w.end(admitted(w.try_admit(step(agent, "executor"), 0)), Outcome.success, 0.1)
    q = w.try_admit(step("m0", "monitor"), 5)  # the last snapshot is 5 s old: saturated
    assert isinstance(q, Queued) and w.grant(5) == [] and w.counters.share_reclaims == 0


def big(agent: str, role: str, prompt: int) -> StepInfo:
    return StepInfo(tenant="t", role=role, agent_id=agent, task_id="task", est_prompt_tokens=prompt, max_tokens=100)
