"""Hypothesis properties of the budget engine: tokens are conserved, refunds restore exactly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.config.budgets import FairnessConfig, RoleConfig, TenantConfig
from concurproxy.control.budgets import Allow, BudgetEngine, BudgetLimits, Reservation
from concurproxy.control.types import StepInfo

ROLES = {
    "planner": RoleConfig(tokens_per_min=50_000, max_prompt_tokens=8000, max_output_tokens=1000),
    "critic": RoleConfig(tokens_per_min=20_000, max_steps_per_task=5, on_output_limit="reject", max_output_tokens=500),
}
TENANTS = [TenantConfig(name="a", tokens_per_min=60_000), TenantConfig(name="b")]
LIMITS = BudgetLimits.from_policy(ROLES, TENANTS, FairnessConfig(input_weight=1, output_weight=3))

op = st.one_of(
    st.tuples(
        st.just("check"),
        st.sampled_from(["a", "b"]),
        st.sampled_from(["planner", "critic", "other"]),
        st.integers(0, 10_000),
        st.integers(0, 2_000),
        st.sampled_from(["t1", "t2"]),
    ),
    st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 10_000), st.integers(0, 3_000)),
    st.tuples(st.just("refund"), st.integers(0, 50)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=60))
def test_charged_equals_reported_at_fixed_time(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """At a fixed ``now`` (no refill): capacity - level == settled actual cost + open estimates."""
    e = BudgetEngine(LIMITS)
    now = 0.0
    open_res: list[Reservation] = []
    settled: dict[tuple[str, str | None], float] = {}
    for o in ops:
        if o[0] == "check":
            _, tenant, role, prompt, max_tokens, task = o
            d = e.check(StepInfo(tenant, role, "ag", task, est_prompt_tokens=prompt, max_tokens=max_tokens), now)
            if isinstance(d, Allow):
                open_res.append(d.reservation)
        elif open_res:
            r = open_res.pop(o[1] % len(open_res))
            if o[0] == "settle":
                assert e.settle(r, o[2], o[3], now)
                for k in r.buckets:
                    settled[k] = settled.get(k, 0.0) + LIMITS.cost(o[2], o[3])
            else:
                assert e.refund(r, now)
    for tenant in ("a", "b"):
        for role in ("planner", "default", None):
            level = e.bucket_level(tenant, role, now)
            cap = LIMITS.tenant_tokens_per_min.get(tenant) if role is None else LIMITS.role(role).tokens_per_min
            if cap is None:
                assert level is None
                continue
            assert level is not None
            key = (tenant, role)
            held = sum(r.cost for r in open_res if key in r.buckets)
            assert cap - level == settled.get(key, 0.0) + held
    assert e.open_reservations == len(open_res)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 9000),
    st.integers(0, 3000),
    st.floats(0, 120),
    st.integers(0, 60_000),
    st.integers(0, 60_000),
)
def test_refund_restores_exactly(prompt: int, max_tokens: int, t: float, pre_p: int, pre_o: int) -> None:
    e = BudgetEngine(LIMITS)
    d0 = e.check(StepInfo("a", "planner", "x", "t", est_prompt_tokens=pre_p, max_tokens=0), 0.0)
    if isinstance(d0, Allow):  # put the buckets at some level, maybe in debt
        e.settle(d0.reservation, pre_p, pre_o, 0.0)
    before = (e.bucket_level("a", "planner", t), e.bucket_level("a", None, t))
    d = e.check(StepInfo("a", "planner", "x", "t", est_prompt_tokens=prompt, max_tokens=max_tokens), t)
    if isinstance(d, Allow):
        assert e.refund(d.reservation, t)
    after = (e.bucket_level("a", "planner", t), e.bucket_level("a", None, t))
    assert after == pytest.approx(before, rel=1e-12, abs=1e-9)  # exact up to float rounding of (l - c) + c
