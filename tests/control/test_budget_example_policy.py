"""The worked example policy validates and drives budgets, fairness and tenancy as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from concurproxy.config.load import load_policy
from concurproxy.control.budgets import Allow, BudgetEngine, BudgetLimits, BudgetReason, Deny, budget_headers
from concurproxy.control.fairness import FairnessParams, default_registry
from concurproxy.control.types import PriorityClass, StepInfo
from concurproxy.tenancy import TenantDirectory

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "examples" / "multi-tenant.yaml"


@pytest.fixture(scope="module")
def policy():  # type: ignore[no-untyped-def]
    return load_policy(EXAMPLE, env={})


def test_example_wires_up(policy) -> None:  # type: ignore[no-untyped-def]
    dirs = TenantDirectory.from_policy(
        policy.tenants,
        policy.auth,
        env={"RESEARCH_API_KEY": "sk-research-env"},
        read_file=lambda _: "sk-ops-1\n",
    )
    assert dirs.lookup("sk-research-demo") == "research"
    assert dirs.lookup("sk-research-env") == "research"
    assert dirs.lookup("sk-ops-1") == "ops"
    assert dirs.lookup("sk-other") is None  # allow_anonymous: false
    assert dirs.is_admin("sk-admin-demo")

    params = FairnessParams.from_policy(policy.fairness, policy.tenants)
    assert params.weight("research") == 2.0 and params.weight("ops") == 1.0
    q = default_registry(plugins=False).queue(policy.fairness.policy, params)
    assert q.name == "vtc"


def test_example_rules_with_numbers(policy) -> None:  # type: ignore[no-untyped-def]
    e = BudgetEngine(BudgetLimits.from_policy(policy.roles, policy.tenants, policy.fairness))

    def st(role: str, prompt: int, max_tokens: int, task: str = "T") -> StepInfo:
        return StepInfo("ops", role, "ag", task, PriorityClass.normal, prompt, max_tokens)

    d = e.check(st("planner", 10_000, 4096), 0.0)
    assert isinstance(d, Allow) and d.clamped_max_tokens == 2048
    assert budget_headers(d) == {
        "x-concurproxy-budget-remaining-tokens": str(400_000 - 10_000 - 2 * 2048),
        "x-concurproxy-budget-remaining-steps": "39",
        "x-concurproxy-max-tokens-clamped": "2048",
    }
    d = e.check(st("planner", 33_000, 100), 0.0)
    assert isinstance(d, Deny) and (d.reason, d.http_status) == (BudgetReason.prompt_too_large, 413)
    d = e.check(st("critic", 1000, 1000), 0.0)
    assert isinstance(d, Deny) and d.reason is BudgetReason.max_tokens_too_large
    for _ in range(10):
        assert isinstance(e.check(st("critic", 1000, 100), 0.0), Allow)
    d = e.check(st("critic", 1000, 100), 0.0)
    assert isinstance(d, Deny) and d.reason is BudgetReason.max_steps_per_task
    d = e.check(st("brainstormer", 9000, 10), 0.0)  # unknown role -> default role limits
    assert isinstance(d, Deny) and d.reason is BudgetReason.prompt_too_large
