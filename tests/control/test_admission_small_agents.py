"""Small agents (``aimd.small_agent_tokens``) are admitted by KV footprint, outside the agent-count
window; footprint priors are learned per role; pausing over the budget respects role shares."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from concurproxy.config.admission import AdmissionConfig, AIMDConfig
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
from concurproxy.control.admission.small import SmallAgentLane
from concurproxy.control.limits import AIMDController
from concurproxy.control.types import PressureSnapshot, PriorityClass, StepInfo

ROLES = WindowShares.from_roles({"planner": RoleConfig(), "executor": RoleConfig()})


def step(agent: str, prompt: int, role: str = "executor", max_tokens: int = 100) -> StepInfo:
    return StepInfo(tenant="t", role=role, agent_id=agent, task_id="k", est_prompt_tokens=prompt, max_tokens=max_tokens)


def window(
    capacity: int = 10_000, size: int = 2, shares: WindowShares = ROLES, stale_ms: int = 60_000, **aimd: float
) -> ReplicaWindow:
    a = {  # the absolute rule alone here (the relative one: test_the_relative_rule_*)
        "initial": size,
        "small_agent_tokens": 500,
        "small_agent_relative": 0.0,
        "small_agent_share": 0.1,
        "footprint_headroom": 1.0,
        **aimd,
    }
    cfg = AdmissionConfig(aimd=AIMDConfig(min=1, max=size, stale_after_ms=stale_ms, **a))  # type: ignore[arg-type]
    w = ReplicaWindow("r0", AIMDController(cfg.aimd), cfg, FifoQueue[int]())
    w.set_shares(shares, 0)
    w.on_pressure(PressureSnapshot(ts=0, kv_usage=0.1, kv_capacity_tokens=capacity), 0)
    return w


def admitted(r: object) -> Ticket:
    assert isinstance(r, Admitted), r
    return r.ticket


def test_a_small_agent_takes_no_slot_and_passes_a_blocked_queue() -> None:
    w = window()  # W = 2, budget 10000, lane cap 0.1 × 10000 = 1000
    admitted(w.try_admit(step("h1", 3000), 0))
    admitted(w.try_admit(step("h2", 3000), 0))
    assert isinstance(w.try_admit(step("h3", 3000), 0), Queued)  # window full
    # 200 + 4 steps × min(max_tokens 16, 512) = 264 tokens ≤ 500: admitted at once, ahead of h3
    t = admitted(w.try_admit(step("p1", 200, "planner", max_tokens=16), 0))
    assert t.reason == "small"
    s = w.state(0)
    assert (s.active_agents, s.waiting, s.counters.admitted_small) == (3, 1, 1)
    assert [a.small for a in s.agents] == [False, False, True]
    assert s.footprint_tokens == 2 * (3000 + 400) + 264  # it still counts in the footprint budget


def test_the_lane_is_capped_by_its_share_of_the_footprint_budget() -> None:
    w = window()
    admitted(w.try_admit(step("h1", 3000), 0))
    admitted(w.try_admit(step("h2", 3000), 0))
    p = [admitted(w.try_admit(step(f"p{i}", 400, "planner", max_tokens=10), 0)) for i in range(2)]  # 2 × 440
    third = w.try_admit(step("p2", 400, "planner", max_tokens=10), 0)  # 880 + 440 > 1000
    assert isinstance(third, Queued)
    w.end(p[0], Outcome.success, 1, release=True)
    grants = w.grant(1)
    assert [(g.waiter_id, g.admitted.ticket.reason) for g in grants] == [(third.waiter_id, "small")]


def test_an_agent_above_the_size_or_stale_data_gets_no_lane() -> None:
    w = window()
    admitted(w.try_admit(step("h1", 3000), 0))
    admitted(w.try_admit(step("h2", 3000), 0))
    assert isinstance(w.try_admit(step("big", 400, "planner", max_tokens=100), 0), Queued)  # 400 + 400 > 500
    stale = window(stale_ms=1000)
    assert isinstance(stale.try_admit(step("p", 100, "planner", max_tokens=10), 5), Queued)  # data 5 s old
    assert stale.drain_events()[-1].reason == "saturated-stale"


def test_off_with_both_rules_off() -> None:
    w = window(small_agent_tokens=0)
    admitted(w.try_admit(step("h1", 3000), 0))
    admitted(w.try_admit(step("h2", 3000), 0))
    assert isinstance(w.try_admit(step("p1", 100, "planner", max_tokens=10), 0), Queued)
    assert SmallAgentLane.from_config(AIMDConfig(small_agent_relative=0)).cap(10_000) is None
    with pytest.raises(ValidationError):
        AIMDConfig(small_agent_share=0)


def test_the_relative_rule_is_the_default_and_needs_no_tuning() -> None:
    """A control agent beside long-context ones is small by default; where all agents are alike, none is."""
    w = window(small_agent_tokens=0, small_agent_relative=AIMDConfig().small_agent_relative)
    admitted(w.try_admit(step("h1", 3000), 0))
    admitted(w.try_admit(step("h2", 3000), 0))  # W (2) is full
    assert admitted(w.try_admit(step("p1", 100, "planner", max_tokens=10), 0)).reason == "small"
    assert isinstance(w.try_admit(step("h3", 3000), 0), Queued)  # alike: no lane


def test_a_dormant_small_agent_gives_its_place_in_a_full_lane() -> None:
    """Finished control agents (no X-Agent-Done) must not keep new ones out of the lane."""
    w = window()  # lane: 10% of 10 000 = 1000 tokens
    admitted(w.try_admit(step("h1", 3000), 0))
    admitted(w.try_admit(step("h2", 3000), 0))
    w.end(admitted(w.try_admit(step("p1", 300, "planner", max_tokens=10), 0)), Outcome.success, 0.1)
    w.end(admitted(w.try_admit(step("p2", 300, "planner", max_tokens=10), 0)), Outcome.success, 0.1)
    assert isinstance(w.try_admit(step("p3", 300, "planner", max_tokens=10), 0.2), Queued)  # lane full
    assert w.grant(5.0)[0].admitted.ticket.reason == "small"  # p1 idle past its bound (2 s before any gap)


def test_small_agents_survive_a_shrink_and_do_not_count_as_utilisation() -> None:
    w = window(size=2)
    admitted(w.try_admit(step("h1", 3000), 0))
    admitted(w.try_admit(step("p1", 100, "planner", max_tokens=10), 0))
    admitted(w.try_admit(step("p2", 100, "planner", max_tokens=10), 0))
    assert w.state(0).active_agents == 3
    # thrash: the window shrinks to 1; only slot holders are ranked against it, so nobody is paused
    w.on_pressure(PressureSnapshot(ts=1, kv_usage=0.97, preemptions_per_s=5.0, kv_capacity_tokens=10_000), 1)
    assert w.window == 1
    assert w.state(1).counters.paused == 0
    # utilisation counts slot holders: 1 of W = 2 is not a full window, so it never grew
    grown = window(size=4, initial=2)  # type: ignore[arg-type]
    admitted(grown.try_admit(step("h1", 100), 0))
    for i in range(3):
        admitted(grown.try_admit(step(f"p{i}", 50, "planner", max_tokens=10), 0))
    for t in range(1, 5):
        grown.on_pressure(PressureSnapshot(ts=t, kv_usage=0.1, kv_capacity_tokens=10_000), t)
    assert grown.window == 2


def test_priors_are_learned_per_role() -> None:
    w = window(capacity=100_000, size=8)
    # an executor grows 4000 → 12000 and finishes there: the executor peak prior is 12000
    t = admitted(w.try_admit(step("e", 4000), 0))
    w.end(t, Outcome.success, 1, prompt_tokens=4000, output_tokens=0)
    t = admitted(w.try_admit(step("e", 12000), 2))
    w.end(t, Outcome.success, 3, prompt_tokens=12000, output_tokens=0, release=True)
    admitted(w.try_admit(step("e2", 4000), 4))
    admitted(w.try_admit(step("p", 300, "planner", max_tokens=16), 4))
    charges = {a.agent_id: a.footprint_tokens for a in w.state(4).agents}
    assert charges["e2"] == 12000  # the executor prior: growth 8000/step, reserved up to the peak 12000
    assert charges["p"] == 300 + 4 * 16  # not 0.75 × 12000 (a replica-wide prior), not 4 × 8000 growth


def test_over_budget_pauses_burst_agents_before_guaranteed_ones() -> None:
    shares = WindowShares.from_roles({"monitor": RoleConfig(window_share=0.5), "executor": RoleConfig()})
    w = window(capacity=10_000, size=4, shares=shares, small_agent_tokens=0, growth_lookahead_steps=0)
    ts = {a: admitted(w.try_admit(step(a, 1000, role), 0)) for a, role in
          [("e1", "executor"), ("e2", "executor"), ("e3", "executor"), ("m1", "monitor")]}  # fmt: skip
    # contexts grow to 3000 each (12000 > 10000): the newest idle agent would be m1, but it is within
    # the monitor's guarantee (2 of 4); the executors are bursts (no share), so the newest of them goes
    for t in ts.values():
        w.end(t, Outcome.success, 1, prompt_tokens=2900, output_tokens=100)
    paused = [e.agent_id for e in w.drain_events() if e.kind is EventKind.paused]
    assert paused == ["e3"]
    assert "m1" in {a.agent_id for a in w.state(1).agents}


def test_over_budget_pauses_the_least_urgent_before_the_longest_idle() -> None:
    w = window(capacity=10_000, size=4, shares=WindowShares(), small_agent_tokens=0, growth_lookahead_steps=0)
    high = dataclasses.replace(step("p1", 1000, "planner"), priority=PriorityClass.high)
    t0 = admitted(w.try_admit(step("e0", 1000), 0))  # the first-kept agent is never paused for the budget
    tp = admitted(w.try_admit(high, 0))
    te = {a: admitted(w.try_admit(step(a, 1000), 0)) for a in ("e1", "e2")}
    w.end(tp, Outcome.success, 1, prompt_tokens=2900, output_tokens=100)  # idle longest: in a long tool call
    for i, t in enumerate([t0, *te.values()]):
        w.end(t, Outcome.success, 2 + i, prompt_tokens=2900, output_tokens=100)
    # 12000 > 10000: one idle agent goes; the high-priority planner idle longest keeps its prefix
    paused = [e.agent_id for e in w.drain_events() if e.kind is EventKind.paused]
    assert paused and "p1" not in paused
    assert "p1" in {a.agent_id for a in w.state(5).agents}


def test_priors_are_per_tenant_with_no_roles_configured() -> None:
    """The default policy configures no roles: one tenant's 12k-token agents must not set the lifetime
    floor of another tenant's control agents (each was charged ~9k: none was small)."""
    w = window(capacity=100_000, size=8, shares=WindowShares(), small_agent_tokens=0, small_agent_relative=0.25)
    heavy = [dataclasses.replace(step(f"e{i}", 4000), tenant="heavy") for i in range(3)]
    for s in heavy:  # three heavy agents grow 4000 -> 12000 and finish (a prior of 12000 for the heavy tenant)
        t = admitted(w.try_admit(s, 0))
        w.end(t, Outcome.success, 1, prompt_tokens=4000, output_tokens=0)
        t = admitted(w.try_admit(dataclasses.replace(s, est_prompt_tokens=12000), 2))
        w.end(t, Outcome.success, 3, prompt_tokens=12000, output_tokens=0, release=True)
    admitted(w.try_admit(dataclasses.replace(step("e9", 4000), tenant="heavy"), 4))
    light = dataclasses.replace(step("p", 300, "planner", max_tokens=16), tenant="light")
    assert admitted(w.try_admit(light, 4)).reason == "small"
    charges = {a.agent_id: a.footprint_tokens for a in w.state(4).agents}
    assert charges["p"] == 300 + 4 * 16 and charges["e9"] == 12000  # not 0.75 x 12000 for the planner


def test_small_agents_are_never_paused_over_budget() -> None:
    """Control agents in the small lane keep their place while a large agent outgrows the budget: pausing
    them frees next to nothing and their next steps would wait for admission."""
    w = window(capacity=10_000, size=4, shares=WindowShares(), growth_lookahead_steps=0)
    t0 = admitted(w.try_admit(step("e0", 1000), 0))
    small = [admitted(w.try_admit(step(f"p{i}", 200, "planner", max_tokens=10), 0)) for i in range(2)]
    assert [t.reason for t in small] == ["small", "small"]
    w.end(t0, Outcome.success, 1, prompt_tokens=1000, output_tokens=100)
    admitted(w.try_admit(step("e0", 9800), 2))  # its next step: 9800 tokens, running (never paused mid-step)
    for i, t in enumerate(small):
        w.end(t, Outcome.success, 3 + i, prompt_tokens=250, output_tokens=10)
    # 9800 + 2 x 260 > 10000, but only the small agents are idle: they stay
    assert not [e for e in w.drain_events() if e.kind is EventKind.paused]
    assert {"p0", "p1"} <= {a.agent_id for a in w.state(5).agents}


def test_a_dormant_small_agent_gives_its_footprint_to_a_blocked_large_one() -> None:
    """Finished control agents (no X-Agent-Done) hold no slot, but their footprint counts: once dormant they
    make room in the budget for a large agent that waits for it (before: only at the idle TTL)."""
    w = window(capacity=10_000, size=4, shares=WindowShares(), growth_lookahead_steps=0, small_agent_share=0.2)
    admitted(w.try_admit(step("e0", 8500), 0))
    smalls = [admitted(w.try_admit(step(f"p{i}", 390, "planner", max_tokens=10), 0)) for i in range(2)]
    assert [t.reason for t in smalls] == ["small", "small"]
    for t in smalls:
        w.end(t, Outcome.success, 0.1, prompt_tokens=390, output_tokens=10)
    q = w.try_admit(step("e1", 1000), 0.2)  # 8500 + 2 x 400 + 1000 > 10000: waits for footprint room
    assert isinstance(q, Queued)
    assert w.deadline(0.2) == pytest.approx(2.1)  # the small agents turn dormant (2 s before any return gap)
    assert w.grant(1.0) == []
    [g] = w.grant(2.2)
    assert g.waiter_id == q.waiter_id
    assert [e.reason for e in w.drain_events() if e.kind is EventKind.paused] == ["dormant"]
