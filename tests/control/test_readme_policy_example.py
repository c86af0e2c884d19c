"""The README's "How to write a policy" example validates and does what the README says."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from concurproxy.config.models import Policy
from concurproxy.control.admission import WindowShares
from concurproxy.control.budgets import Allow, BudgetEngine, BudgetLimits, Deny, budget_headers
from concurproxy.control.types import StepInfo

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_policy() -> Policy:
    text = README.read_text()
    section = text[text.index("### How to write a policy") :]
    start = section.index("```yaml") + len("```yaml")
    block = section[start : section.index("```", start)]
    block = block.replace("<sha256 of the ops key>", hashlib.sha256(b"sk-ops").hexdigest())
    return Policy.model_validate(yaml.safe_load(block))


def step(role: str, prompt: int, max_tokens: int, task: str = "T") -> StepInfo:
    return StepInfo("ops", role, "a", task, est_prompt_tokens=prompt, max_tokens=max_tokens)


def test_readme_policy_example_numbers() -> None:
    policy = readme_policy()
    e = BudgetEngine(BudgetLimits.for_policy(policy))
    d = e.check(step("planner", 10_000, 4096), 0.0)
    assert isinstance(d, Allow)
    assert budget_headers(d) == {
        "x-concurproxy-max-tokens-clamped": "2048",
        "x-concurproxy-budget-remaining-tokens": "385904",
        "x-concurproxy-budget-remaining-steps": "39",
    }
    too_big = e.check(step("planner", 33_000, 10), 0.0)
    assert isinstance(too_big, Deny) and too_big.http_status == 413 and too_big.retry_after_s is None
    critic = e.check(step("critic", 100, 1000), 0.0)
    assert isinstance(critic, Deny) and critic.reason.value == "max_tokens_too_large"
    for _ in range(10):
        assert isinstance(e.check(step("critic", 100, 10, task="T2"), 0.0), Allow)
    eleventh = e.check(step("critic", 100, 10, task="T2"), 0.0)
    assert isinstance(eleventh, Deny) and eleventh.reason.value == "max_steps_per_task"
    assert WindowShares.from_roles(policy.roles).guaranteed("monitor", 8) == 2
    assert [t.weight for t in policy.tenants] == [2, 1]
