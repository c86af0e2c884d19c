"""Hypothesis properties of vtc: bounded service difference, weights, bounded waits, priority, bypass."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.control.fairness import FairnessParams, FairQueue, VTCPolicy
from concurproxy.control.types import PriorityClass, StepInfo

IW, OW = 1.0, 2.0


def queue(**kw: object) -> FairQueue[int]:
    return FairQueue(VTCPolicy(FairnessParams(input_weight=IW, output_weight=OW, **kw)))  # type: ignore[arg-type]


costs = st.tuples(st.integers(1, 4000), st.integers(0, 500))  # (prompt, output) of one step


def run_backlogged(q: FairQueue[int], tenants: dict[str, list[tuple[int, int]]], pops: int) -> list[tuple[str, float]]:
    """All tenants backlogged from t=0 (each step's usage charged as soon as it is served)."""
    steps: dict[int, StepInfo] = {}
    usage: dict[int, tuple[int, int]] = {}
    n = 0
    for tenant, work in tenants.items():
        for p, o in work:
            n += 1
            steps[n] = StepInfo(tenant, "r", "ag", "t", est_prompt_tokens=p, max_tokens=o)
            usage[n] = (p, o)
            q.push(n, steps[n], 0.0)
    served = []
    for _ in range(pops):
        item = q.pop(0.0)
        assert item is not None
        p, o = usage[item]
        q.charge(steps[item], p, o, 0.0)
        served.append((steps[item].tenant, p * IW + o * OW))
    return served


@settings(max_examples=80, deadline=None)
@given(st.lists(costs, min_size=60, max_size=60), st.lists(costs, min_size=60, max_size=60))
def test_service_difference_of_equal_weight_tenants_is_bounded(a: list, b: list) -> None:  # type: ignore[type-arg]
    """VTC bound: |W_a - W_b| <= 2U at every point while both are backlogged (U = largest step cost)."""
    served = run_backlogged(queue(), {"a": a, "b": b}, pops=60)
    u = max(p * IW + o * OW for p, o in a + b)
    wa = wb = 0.0
    for tenant, c in served:
        wa, wb = (wa + c, wb) if tenant == "a" else (wa, wb + c)
        assert abs(wa - wb) <= 2 * u


@settings(max_examples=60, deadline=None)
@given(st.lists(costs, min_size=90, max_size=90), st.lists(costs, min_size=90, max_size=90))
def test_two_to_one_weight_gives_two_to_one_service(a: list, b: list) -> None:  # type: ignore[type-arg]
    served = run_backlogged(queue(tenant_weights={"a": 2.0, "b": 1.0}), {"a": a, "b": b}, pops=90)
    u = max(p * IW + o * OW for p, o in a + b)
    wa = sum(c for t, c in served if t == "a")
    wb = sum(c for t, c in served if t == "b")
    # normalised service differs by at most one step of each: |wa/2 - wb| <= u/2 + u
    assert abs(wa / 2 - wb) <= 1.5 * u


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([1.0, 2.0, 3.0]), min_size=2, max_size=4),
    st.lists(costs, min_size=200, max_size=200),
)
def test_no_backlogged_flow_waits_beyond_the_bound(weights: list[float], pool: list) -> None:  # type: ignore[type-arg]
    """Between two services of a backlogged flow F, another flow G is served at most
    ``floor(U * w_G / (w_F * c_min)) + 1`` times (U, c_min: largest / smallest step cost)."""
    names = [f"t{i}" for i in range(len(weights))]
    w = dict(zip(names, weights, strict=True))
    work = {t: pool[i :: len(names)] for i, t in enumerate(names)}
    per = min(len(v) for v in work.values())
    served = run_backlogged(queue(tenant_weights=w), work, pops=per)  # nobody runs dry
    all_costs = [p * IW + o * OW for p, o in pool]
    u, cmin = max(all_costs), min(all_costs)
    for f in names:
        since: dict[str, int] = dict.fromkeys(names, 0)
        for tenant, _ in served:
            if tenant == f:
                since = dict.fromkeys(names, 0)
                continue
            since[tenant] += 1
            assert since[tenant] <= math.floor(u * w[tenant] / (w[f] * cmin)) + 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["p", "e", "m"]), st.sampled_from(list(PriorityClass))), min_size=1))
def test_priority_classes_first_within_a_tenant(items: list[tuple[str, PriorityClass]]) -> None:
    q = queue()
    for i, (role, prio) in enumerate(items):
        q.push(i, StepInfo("a", role, "ag", "t", prio, est_prompt_tokens=50), 0.0)
    order = [q.pop(0.0) for _ in items]
    prios = [items[i][1] for i in order if i is not None]
    assert prios == sorted(prios)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.floats(0, 3), st.booleans()), min_size=1, max_size=80),
    st.floats(0, 10),
)
def test_long_step_is_never_bypassed_after_max_bypass_s(events: list[tuple[bool, float, bool]], bypass: float) -> None:
    """A short step served while an older long step waits: that long step waited < max_bypass_s."""
    q = queue(long_prefill_tokens=1000, max_bypass_s=bypass)
    now, n = 0.0, 0
    waiting: dict[int, tuple[bool, float, int]] = {}  # item -> (long, t_enq, seq)
    for is_push, dt, long in events:
        now += dt
        if is_push:
            n += 1
            q.push(n, StepInfo("a", "r", "ag", "t", est_prompt_tokens=5000 if long else 10), now)
            waiting[n] = (long, now, n)
            continue
        item = q.pop(now)
        if item is None:
            assert not waiting
            continue
        is_long, _, seq = waiting.pop(item)
        older_longs = [t for lg, t, s in waiting.values() if lg and s < seq]
        if not is_long:
            assert all(now - t < bypass for t in older_longs)
        else:  # a long step never passes an older short one
            assert not [s for lg, _, s in waiting.values() if not lg and s < seq]
