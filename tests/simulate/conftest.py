"""Small workloads for the simulation tests (tiny engines: thrash within seconds)."""

from __future__ import annotations

from typing import Any

import pytest

from concurproxy.config import Policy, load_policy
from loadgen.scenario import Scenario, parse_scenario

THRASH: dict[str, Any] = {
    "name": "tiny-thrash",
    "seed": 5,
    "arrivals": {"mode": "closed", "concurrency": 12},
    "duration_s": 30,
    "drain_s": 20,
    "task": {
        "system_prompt_tokens": 24, "task_prompt_tokens": 40, "planner_steps": 1, "branches": 3,
        "branch_steps": 8, "critic": False, "summary": True,
        "roles": {"planner": {"growth_tokens": 8, "output_tokens": 8},
                  "executor": {"growth_tokens": 40, "output_tokens": 8, "tool_pause_s": 0.02},
                  "summary": {"growth_tokens": 8, "output_tokens": 8}},
    },
    "tenants": [{"name": "t", "api_key": "sk-t"}],
}  # fmt: skip


def scenario(**changes: Any) -> Scenario:
    doc = {**THRASH, **changes}
    return parse_scenario(doc)


def policy(controller: str = "aimd", **overrides: Any) -> Policy:
    return load_policy(overrides={"admission.controller": controller, **overrides}, env={})


@pytest.fixture
def thrash() -> Scenario:
    return scenario()
