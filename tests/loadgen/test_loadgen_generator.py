from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.tokens import count_tokens, render_chat
from loadgen.apis import ChatApi, headers
from loadgen.generator import arrival_times, iter_tasks
from loadgen.plan import StepSpec, TaskPlan
from loadgen.scenario import ClientSpec, Scenario, parse_scenario

BASE = {
    "max_tasks": 5,
    "task": {
        "critic_reject_p": 0.5,
        "branches": {"dist": "uniform", "low": 1, "high": 4},
        "roles": {"executor": {"growth_tokens": {"dist": "lognormal", "median": 50, "sigma": 1}}},
    },
}


def _headers(s: StepSpec, p: TaskPlan) -> dict[str, str]:
    return headers(s, ChatApi(), p.api_key, ClientSpec())


def _requests(plans: list[TaskPlan]) -> list[tuple]:
    return [(tuple(sorted(_headers(s, p).items())), str(s.body("m", True))) for p in plans for s in p.steps()]


def test_same_seed_same_requests_in_same_order() -> None:
    sc = parse_scenario(BASE)
    a = _requests(list(iter_tasks(sc, seed=7)))
    b = _requests(list(iter_tasks(sc, seed=7)))
    assert a == b and len(a) > 20
    assert a != _requests(list(iter_tasks(sc, seed=8)))


def test_run_tag_changes_ids_not_prompts() -> None:
    sc = parse_scenario(BASE)
    a, b = list(iter_tasks(sc, tag="a-")), list(iter_tasks(sc, tag="b-"))
    assert [s.messages for p in a for s in p.steps()] == [s.messages for p in b for s in p.steps()]
    assert a[0].task_id == "a-t00000" and b[0].task_id == "b-t00000"


def test_task_plans_do_not_depend_on_how_many_were_generated() -> None:
    sc = parse_scenario(BASE)
    assert list(iter_tasks(sc, max_tasks=2)) == list(iter_tasks(sc, max_tasks=5))[:2]


def _check_invariants(sc: Scenario, plan: TaskPlan) -> None:
    by_agent: dict[str, list] = {}
    for s in plan.steps():
        by_agent.setdefault(s.agent_id, []).append(s)
        rendered = render_chat([{"role": r, "content": c} for r, c in s.messages])
        assert count_tokens(rendered) == s.est_prompt_tokens
        assert s.max_tokens >= 1
    for agent, steps in by_agent.items():
        assert [s.index for s in steps] == list(range(len(steps)))
        assert [s.agent_done for s in steps] == [False] * (len(steps) - 1) + [True], agent
        for prev, nxt in itertools.pairwise(steps):
            # the whole context is re-sent: the previous prompt plus the reply is a prefix
            assert nxt.messages[: len(prev.messages)] == prev.messages
            assert nxt.messages[len(prev.messages)][0] == "assistant"
            assert nxt.est_prompt_tokens > prev.est_prompt_tokens
    shape = sc.task
    if shape.critic:
        critics = [a for a in by_agent if ".critic" in a]
        assert all(len(by_agent[c]) <= shape.max_rounds for c in critics)
    roots = {s.messages[0] for s in plan.steps()}
    assert len(roots) == 1  # every agent shares the system prompt


def test_tree_shape_and_prefix_growth() -> None:
    sc = parse_scenario(BASE)
    for plan in iter_tasks(sc):
        _check_invariants(sc, plan)
        roles = [[s.role for c in ph for s in c] for ph in plan.phases]
        assert set(roles[0]) == {"planner"} and roles[-1] == ["summary"]
        assert set(roles[1]) <= {"executor", "critic"}


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    branches=st.integers(0, 4),
    steps=st.integers(1, 3),
    p=st.floats(0, 1),
    rounds=st.integers(1, 4),
    critic=st.booleans(),
    planner=st.integers(0, 2),
)
def test_generator_properties(
    seed: int, branches: int, steps: int, p: float, rounds: int, critic: bool, planner: int
) -> None:
    sc = parse_scenario(
        {
            "max_tasks": 2,
            "task": {
                "system_prompt_tokens": 20,
                "task_prompt_tokens": 10,
                "branches": branches,
                "branch_steps": steps,
                "critic_reject_p": p,
                "max_rounds": rounds,
                "critic": critic,
                "planner_steps": planner,
                "roles": {"executor": {"growth_tokens": {"dist": "uniform", "low": 0, "high": 30}}},
            },
        }
    )
    for plan in iter_tasks(sc, seed=seed):
        _check_invariants(sc, plan)
        n_exec = len({s.agent_id for s in plan.steps() if s.role == "executor"})
        assert n_exec == branches


def test_poisson_arrivals_bounded_and_rate() -> None:
    sc = parse_scenario({"arrivals": {"mode": "poisson", "rate_per_s": 5}, "duration_s": 200})
    ts = list(arrival_times(sc, 0, 200, None))
    assert ts == sorted(ts) and all(0 < t <= 200 for t in ts)  # type: ignore[operator]
    assert 900 < len(ts) < 1100


def test_bursts_and_closed_loop_arrivals() -> None:
    sc = parse_scenario({"arrivals": {"mode": "bursts", "every_s": 10, "size": 3, "jitter_s": 1}, "duration_s": 25})
    ts = list(arrival_times(sc, 0, 25, None))
    assert [int(t // 10) for t in ts] == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # type: ignore[operator]
    closed = parse_scenario({"arrivals": {"mode": "closed", "concurrency": 2}, "max_tasks": 4})
    assert list(arrival_times(closed, 0, None, 4)) == [None] * 4


def test_tenant_mix_follows_weights() -> None:
    sc = parse_scenario(
        {
            "max_tasks": 2000,
            "task": {"branches": 0, "summary": False},
            "tenants": [
                {"name": "a", "api_key": "ka", "weight": 3},
                {
                    "name": "b",
                    "api_key": "kb",
                    "weight": 1,
                    "task": {"branches": 0, "planner_steps": 2, "summary": False},
                },
            ],
        }
    )
    plans = list(iter_tasks(sc))
    mix = Counter(p.tenant for p in plans)
    assert 0.7 < mix["a"] / 2000 < 0.8
    assert all(p.n_steps == (1 if p.tenant == "a" else 2) for p in plans)  # per-tenant task shape
    assert all(_headers(s, p)["Authorization"] == f"Bearer k{p.tenant}" for p in plans for s in p.steps())
