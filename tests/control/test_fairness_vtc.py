"""VTC with numbers: counters, lifting, weights, priorities, role flows, cost-aware bypass, memory bounds."""

from __future__ import annotations

import pytest

from concurproxy.control.fairness import FairnessParams, FairQueue, VTCPolicy, VTCState
from concurproxy.control.types import PriorityClass, StepInfo


def step(tenant: str, role: str = "r", prompt: int = 100, prio: PriorityClass = PriorityClass.normal) -> StepInfo:
    return StepInfo(tenant, role, "ag", "t", prio, est_prompt_tokens=prompt, max_tokens=0)


def vtc(**kw: object) -> tuple[FairQueue[str], VTCState]:
    q: FairQueue[str] = FairQueue(VTCPolicy(FairnessParams(**kw)))  # type: ignore[arg-type]
    return q, q.state


def test_counters_charge_prompt_at_pop_and_usage_at_charge() -> None:
    q, s = vtc(input_weight=1.0, output_weight=2.0, tenant_weights={"a": 2.0})
    st_a = step("a", prompt=300)
    q.push("x", st_a, 0.0)
    assert q.pop(0.0) == "x"
    assert s.tenants.value["a"] == 150.0  # 300 * 1 / weight 2
    q.charge(st_a, prompt_tokens=320, output_tokens=40, now=1.0)  # + (20 + 80) / 2
    assert s.tenants.value["a"] == 200.0
    q.charge(st_a, prompt_tokens=10, output_tokens=0, now=1.0)  # not pre-charged any more: full cost
    assert s.tenants.value["a"] == 205.0


def test_returning_flow_is_lifted_and_banks_no_credit() -> None:
    q, s = vtc()
    for i in range(10):
        q.push(f"a{i}", step("a"), 0.0)
    for _ in range(5):
        q.pop(0.0)
    assert s.tenants.value["a"] == 500.0
    for i in range(5):
        q.push(f"b{i}", step("b"), 0.0)  # b was idle: lifted to a's 500, not 0
    assert s.tenants.value["b"] == 500.0
    order = [q.pop(0.0) for _ in range(10)]
    assert order == [
        "a5",
        "b0",
        "a6",
        "b1",
        "a7",
        "b2",
        "a8",
        "b3",
        "a9",
        "b4",
    ]  # alternate, no catch-up burst


def test_heavy_prefills_do_not_starve_light_control_steps() -> None:
    q, _ = vtc()
    for i in range(20):
        q.push(f"h{i}", step("heavy", prompt=8000), 0.0)
    for i in range(20):
        q.push(f"l{i}", step("light", prompt=200), 0.0)
    first = [q.pop(0.0) for _ in range(22)]
    # one 8000-token prefill buys the light tenant 40 short steps of counter (it has 20 queued)
    assert first[:2] == ["h0", "l0"]
    assert first[2:22] == [f"l{i}" for i in range(1, 20)] + ["h1"]


def test_weights_two_to_one() -> None:
    q, _ = vtc(tenant_weights={"a": 2.0, "b": 1.0})
    for i in range(300):
        q.push(f"a{i}", step("a"), 0.0)
        q.push(f"b{i}", step("b"), 0.0)
    served = [q.pop(0.0) for _ in range(300)]
    n_a = sum(1 for x in served if x and x.startswith("a"))
    assert n_a == 200  # exactly 2:1 with equal costs


def test_priority_first_within_the_tenant_share() -> None:
    q, _ = vtc()
    q.push("a-low", step("a", "worker", prio=PriorityClass.low), 0.0)
    q.push("a-norm", step("a", "planner"), 0.0)
    q.push("a-crit", step("a", "monitor", prio=PriorityClass.critical), 0.0)
    q.push("b-norm", step("b", "planner"), 0.0)
    # a was backlogged first (tie on counters): its critical step goes first,
    # then tenant b gets its turn before a's next step: priority does not exceed the share
    assert [q.pop(0.0) for _ in range(4)] == ["a-crit", "b-norm", "a-norm", "a-low"]


def test_roles_within_a_tenant_share_fairly() -> None:
    q, s = vtc()
    for i in range(4):
        q.push(f"p{i}", step("a", "planner", prompt=3000), 0.0)
        q.push(f"e{i}", step("a", "executor", prompt=1000), 0.0)
    order = [q.pop(0.0) for _ in range(8)]
    assert order == ["p0", "e0", "e1", "e2", "p1", "e3", "p2", "p3"]
    assert s.queues["a"].roles.value == {"planner": 12000.0, "executor": 4000.0}


def test_short_steps_bypass_long_prefill_for_at_most_max_bypass_s() -> None:
    q, _ = vtc(long_prefill_tokens=4096, max_bypass_s=5.0)
    q.push("long", step("a", prompt=20000), 0.0)
    served: list[tuple[float, str | None]] = []
    for t in range(10):  # one short arrives and one step is served every second
        q.push(f"s{t}", step("a", prompt=100), float(t))
        served.append((float(t), q.pop(float(t))))
    assert served[:5] == [(float(t), f"s{t}") for t in range(5)]
    assert served[5] == (5.0, "long")  # waited exactly max_bypass_s, then goes first
    # an older short is never passed by a later long
    q2, _ = vtc(max_bypass_s=5.0)
    q2.push("short", step("a", prompt=100), 0.0)
    q2.push("long", step("a", prompt=20000), 0.0)
    assert q2.pop(100.0) == "short"


def test_zero_bypass_is_fifo_within_a_lane() -> None:
    q, _ = vtc(max_bypass_s=0.0)
    q.push("long", step("a", prompt=20000), 0.0)
    q.push("short", step("a", prompt=10), 0.0)
    assert q.pop(0.0) == "long"


def test_idle_flow_counters_stay_bounded() -> None:
    q, s = vtc(max_idle_flows=16)
    for i in range(2000):
        q.push(f"x{i}", step("a", role=f"role{i}"), float(i))
        assert q.pop(float(i)) == f"x{i}"
    assert len(s.queues["a"].roles.value) <= 3 * 16
    for i in range(2000):  # many pushes then removals keep heaps compact
        q.push(f"y{i}", step("b", role="r"), 0.0)
        q.push(f"z{i}", step("c", role="r"), 0.0)
        q.remove(f"y{i}")
    assert len(s.tenants.backlog._heap) <= 2 * len(s.tenants.backlog) + 33
    assert len(q) == 2000 and len(s.entries) == 2000


@pytest.mark.parametrize("w", [0.5, 1.0, 4.0])
def test_anonymous_or_unknown_tenant_uses_default_weight(w: float) -> None:
    q, s = vtc(default_weight=w)
    q.push("x", step("anonymous", prompt=100), 0.0)
    q.pop(0.0)
    assert s.tenants.value["anonymous"] == 100 / w


def test_policy_reload_swaps_logic_and_keeps_state() -> None:
    """State lives apart from the logic: a reload (new weights) keeps queued items and counters."""
    q, s = vtc(tenant_weights={"a": 1.0, "b": 1.0})
    for i in range(30):
        q.push(f"a{i}", step("a"), 0.0)
        q.push(f"b{i}", step("b"), 0.0)
    first = [q.pop(0.0) for _ in range(10)]
    assert sum(1 for x in first if x and x[0] == "a") == 5
    q.policy = VTCPolicy(FairnessParams(tenant_weights={"a": 4.0, "b": 1.0}))
    assert q.state is s and len(q) == 50
    nxt = [q.pop(0.0) for _ in range(20)]
    assert sum(1 for x in nxt if x and x[0] == "a") == 16  # 4:1 from now on


def test_charge_matches_the_popped_step_even_if_rebuilt() -> None:
    """A rebuilt StepInfo (e.g. clamped max_tokens) does not get its pop-time estimate charged twice."""
    q, s = vtc()
    pushed = StepInfo("a", "r", "agent-1", "task-1", est_prompt_tokens=1000, max_tokens=4096)
    q.push("x", pushed, 0.0)
    q.pop(0.0)
    rebuilt = StepInfo("a", "r", "agent-1", "task-1", est_prompt_tokens=1000, max_tokens=2048)
    q.charge(rebuilt, prompt_tokens=1000, output_tokens=10, now=1.0)
    assert s.tenants.value["a"] == 1000 + 20
    assert not s.precharged
