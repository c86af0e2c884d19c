"""Table tests with numbers for each budget rule (pure core, virtual clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concurproxy.config import load_policy
from concurproxy.config.budgets import BudgetsConfig, FairnessConfig, RoleConfig, TenantConfig
from concurproxy.control.budgets import (
    Allow,
    BudgetEngine,
    BudgetLimits,
    BudgetReason,
    Deny,
    TokenBucket,
    budget_headers,
)
from concurproxy.control.types import StepInfo

ROOT = Path(__file__).resolve().parents[2]


def engine(
    roles: dict[str, RoleConfig], tenants: list[TenantConfig] | None = None, budgets: BudgetsConfig | None = None
) -> BudgetEngine:
    fair = FairnessConfig(input_weight=1.0, output_weight=2.0)
    return BudgetEngine(BudgetLimits.from_policy(roles, tenants or [], fair, budgets))


def step(
    role: str = "planner", prompt: int = 100, max_tokens: int = 50, task: str = "t1", tenant: str = "acme"
) -> StepInfo:
    return StepInfo(
        tenant=tenant, role=role, agent_id="a1", task_id=task, est_prompt_tokens=prompt, max_tokens=max_tokens
    )


def test_bucket_refill_and_wait() -> None:
    b = TokenBucket.per_minute(600, now=0.0)  # 10 tokens/s
    assert (b.capacity, b.rate, b.level) == (600.0, 10.0, 600.0)
    b.take(650)
    assert b.level == -50.0
    assert b.wait_s(100) == 15.0  # (100 - -50) / 10
    b.refill(5.0)
    assert b.level == 0.0
    b.refill(100.0)
    assert b.level == 600.0  # capped
    assert b.fits(10_000)  # larger than the bucket: allowed when full
    b.refill(50.0)  # time going backwards refills nothing
    assert b.level == 600.0


def test_allow_reserves_weighted_estimate() -> None:
    e = engine({"planner": RoleConfig(tokens_per_min=6000)})
    d = e.check(step(prompt=1000, max_tokens=500), now=0.0)
    assert isinstance(d, Allow)
    assert d.reservation.cost == 1000 * 1 + 500 * 2
    assert d.remaining_tokens == 4000
    assert d.remaining_steps is None
    assert d.clamped_max_tokens is None
    assert budget_headers(d) == {"x-concurproxy-budget-remaining-tokens": "4000"}


def test_deny_when_bucket_short_with_retry_after_from_refill_rate() -> None:
    e = engine({"planner": RoleConfig(tokens_per_min=6000)})  # 100 weighted tokens/s
    assert isinstance(e.check(step(prompt=3000, max_tokens=1000), 0.0), Allow)  # cost 5000, 1000 left
    d = e.check(step(prompt=1500, max_tokens=0), 0.0)  # cost 1500 > 1000
    assert isinstance(d, Deny)
    assert d.reason is BudgetReason.role_tokens_per_min
    assert d.http_status == 429
    assert d.retry_after_s == pytest.approx(5.0)  # (1500 - 1000) / 100
    assert d.remaining_tokens == 1000
    assert budget_headers(d)["Retry-After"] == "5"
    assert isinstance(e.check(step(prompt=1500, max_tokens=0), 5.0), Allow)  # refilled exactly enough


def test_settle_returns_over_reservation_and_charges_overrun() -> None:
    e = engine({"planner": RoleConfig(tokens_per_min=6000)})
    d = e.check(step(prompt=1000, max_tokens=1000), 0.0)  # reserve 3000
    assert isinstance(d, Allow)
    assert e.settle(d.reservation, prompt_tokens=1000, output_tokens=100, now=0.0)  # actual 1200
    assert e.bucket_level("acme", "planner", 0.0) == 6000 - 1200
    assert not e.settle(d.reservation, 1, 1, 0.0)  # exactly once
    d2 = e.check(step(prompt=100, max_tokens=10), 0.0)  # reserve 120
    assert isinstance(d2, Allow)
    e.settle(d2.reservation, prompt_tokens=2000, output_tokens=2000, now=0.0)  # actual 6000: debt
    assert e.bucket_level("acme", "planner", 0.0) == 4800 - 6000
    d3 = e.check(step(prompt=100, max_tokens=0), 0.0)
    assert isinstance(d3, Deny) and d3.retry_after_s == pytest.approx((100 + 1200) / 100)


def test_refund_restores_tokens_and_step() -> None:
    e = engine({"planner": RoleConfig(tokens_per_min=6000, max_steps_per_task=1)})
    d = e.check(step(prompt=500, max_tokens=0), 0.0)
    assert isinstance(d, Allow) and d.remaining_steps == 0
    assert e.refund(d.reservation, 0.0)
    assert e.bucket_level("acme", "planner", 0.0) == 6000
    assert not e.refund(d.reservation, 0.0)
    assert isinstance(e.check(step(prompt=500, max_tokens=0), 0.0), Allow)  # the step came back


def test_tenant_bucket_applies_across_roles() -> None:
    e = engine({}, [TenantConfig(name="acme", tokens_per_min=1200)])  # 20/s
    assert isinstance(e.check(step(role="planner", prompt=1000, max_tokens=0), 0.0), Allow)
    d = e.check(step(role="critic", prompt=300, max_tokens=0), 0.0)
    assert isinstance(d, Deny) and d.reason is BudgetReason.tenant_tokens_per_min
    assert d.retry_after_s == pytest.approx((300 - 200) / 20)
    # another tenant is not affected
    assert isinstance(e.check(step(role="critic", prompt=300, max_tokens=0, tenant="other"), 0.0), Allow)


def test_max_prompt_tokens_rejects_with_413() -> None:
    e = engine({"planner": RoleConfig(max_prompt_tokens=32000)})
    assert isinstance(e.check(step(prompt=32000), 0.0), Allow)
    d = e.check(step(prompt=32001), 0.0)
    assert isinstance(d, Deny)
    assert (d.reason, d.http_status, d.retry_after_s) == (BudgetReason.prompt_too_large, 413, None)
    assert "Retry-After" not in budget_headers(d)


@pytest.mark.parametrize(
    ("mode", "asked", "expect"),
    [
        ("clamp", 4096, 2048),
        ("clamp", 2048, None),
        ("clamp", 0, 2048),  # unset max_tokens gets the limit
        ("reject", 4096, "deny"),
        ("reject", 2000, None),
        ("reject", 0, 2048),  # unset: clamped even in reject mode (nothing to reject)
    ],
)
def test_max_output_tokens(mode: str, asked: int, expect: int | str | None) -> None:
    e = engine({"planner": RoleConfig(max_output_tokens=2048, on_output_limit=mode, tokens_per_min=100_000)})
    d = e.check(step(prompt=0, max_tokens=asked), 0.0)
    if expect == "deny":
        assert isinstance(d, Deny)
        assert (d.reason, d.http_status, d.retry_after_s) == (BudgetReason.max_tokens_too_large, 429, None)
        return
    assert isinstance(d, Allow)
    assert d.clamped_max_tokens == expect
    effective = asked if expect is None else expect
    assert d.reservation.cost == 2 * effective  # reserved on the clamped value
    if expect is not None:
        assert d.reason is BudgetReason.max_tokens_clamped
        assert budget_headers(d)["x-concurproxy-max-tokens-clamped"] == str(expect)


def test_max_steps_per_task_counts_per_task_and_role() -> None:
    e = engine({"critic": RoleConfig(max_steps_per_task=3)})
    left = []
    for _ in range(3):
        d = e.check(step(role="critic"), 0.0)
        assert isinstance(d, Allow)
        left.append(d.remaining_steps)
    assert left == [2, 1, 0]
    d = e.check(step(role="critic"), 1.0)
    assert isinstance(d, Deny)
    assert (d.reason, d.http_status, d.retry_after_s, d.remaining_steps) == (
        BudgetReason.max_steps_per_task,
        429,
        None,
        0,
    )
    assert budget_headers(d) == {"x-concurproxy-budget-remaining-steps": "0"}
    assert isinstance(e.check(step(role="critic", task="t2"), 1.0), Allow)  # other task
    assert isinstance(e.check(step(role="planner"), 1.0), Allow)  # other role: unlimited
    assert isinstance(e.check(step(role="critic", task=""), 1.0), Allow)  # no task id: no discipline


def test_step_counters_expire_after_ttl_and_stay_bounded() -> None:
    e = engine(
        {"critic": RoleConfig(max_steps_per_task=1)}, budgets=BudgetsConfig(task_ttl_s=60, max_tracked_tasks=100)
    )
    assert isinstance(e.check(step(role="critic"), 0.0), Allow)
    assert isinstance(e.check(step(role="critic"), 59.0), Deny)
    assert isinstance(e.check(step(role="critic"), 60.0), Allow)  # forgotten after 60 s idle
    for i in range(1000):
        e.check(step(role="critic", task=f"x{i}"), 61.0)
    assert e.tracked_tasks <= 100


def test_unknown_roles_share_the_default_role_bucket() -> None:
    e = engine({"default": RoleConfig(tokens_per_min=600, max_prompt_tokens=1000)})
    assert isinstance(e.check(step(role="made-up-1", prompt=400, max_tokens=0), 0.0), Allow)
    d = e.check(step(role="made-up-2", prompt=400, max_tokens=0), 0.0)
    assert isinstance(d, Deny) and d.reason is BudgetReason.role_tokens_per_min
    assert isinstance(e.check(step(role="made-up-3", prompt=1001), 0.0), Deny)


def test_no_limits_configured_allows_everything_without_headers() -> None:
    e = engine({})
    d = e.check(step(prompt=10**7, max_tokens=10**6), 0.0)
    assert isinstance(d, Allow) and budget_headers(d) == {}
    assert e.settle(d.reservation, 5, 5, 1.0) and e.open_reservations == 0


def test_reconfigure_keeps_levels_and_caps_them() -> None:
    e = engine({"planner": RoleConfig(tokens_per_min=6000)})
    d = e.check(step(prompt=1000, max_tokens=0), 0.0)
    assert isinstance(d, Allow)
    e.reconfigure(BudgetLimits.from_policy({"planner": RoleConfig(tokens_per_min=3000)}, [], FairnessConfig()))
    assert e.bucket_level("acme", "planner", 0.0) == 3000  # 5000 capped to the new capacity
    e.reconfigure(BudgetLimits.from_policy({}, [], FairnessConfig()))
    assert e.bucket_level("acme", "planner", 0.0) is None
    assert e.settle(d.reservation, 10, 10, 0.0)  # settling against a removed budget is harmless


def test_task_counter_bounds_come_from_the_policy_file(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("roles: {critic: {max_steps_per_task: 1}}\nbudgets: {task_ttl_s: 30, max_tracked_tasks: 5}\n")
    policy = load_policy(f, env={})
    e = BudgetEngine(BudgetLimits.for_policy(policy))
    assert (e.limits.task_ttl_s, e.limits.max_tracked_tasks) == (30.0, 5)
    assert isinstance(e.check(step(role="critic"), 0.0), Allow)
    assert isinstance(e.check(step(role="critic"), 29.0), Deny)
    assert isinstance(e.check(step(role="critic"), 30.0), Allow)  # forgotten after 30 s idle
    for i in range(50):
        e.check(step(role="critic", task=f"x{i}"), 31.0)
    assert e.tracked_tasks == 5
    e.reconfigure(BudgetLimits.for_policy(load_policy(ROOT / "policies" / "default.yaml", env={})))
    assert (e.limits.task_ttl_s, e.limits.max_tracked_tasks) == (3600.0, 100_000)  # what default.yaml documents


def test_task_counter_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="task_ttl_s"):
        BudgetsConfig(task_ttl_s=0)
    with pytest.raises(ValueError, match="max_tracked_tasks"):
        BudgetsConfig(max_tracked_tasks=0)
