from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.dists import Constant, LogNormal
from loadgen.scenario import Scenario, ScenarioError, bundled_scenarios, load_scenario, parse_scenario


def test_bundled_scenarios_are_valid() -> None:
    names = set(bundled_scenarios())
    assert {"swe-swarm", "research-swarm", "critic-loop", "two-tenant"} <= names
    for name in names:
        sc = load_scenario(name)
        assert sc.name == name and sc.description


def test_number_is_constant_shorthand() -> None:
    sc = parse_scenario({"max_tasks": 1, "task": {"roles": {"executor": {"output_tokens": 7}}}})
    assert sc.task.roles.executor.output_tokens == Constant(value=7)
    assert sc.task.roles.executor.growth_tokens == Constant(value=200)  # defaults are validated too


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"max_tasks": 1, "tenants": [{"name": "a", "api_key": "k", "wieght": 2}]}, "tenants[0].wieght"),
        (
            {
                "max_tasks": 1,
                "task": {"roles": {"executor": {"output_tokens": {"dist": "lognormal", "median": 1, "sigma": -1}}}},
            },
            "task.roles.executor.output_tokens.sigma",
        ),
        ({"max_tasks": 1, "task": {"critic_reject_p": 1.5}}, "task.critic_reject_p"),
        ({"max_tasks": 1, "arrivals": {"mode": "poisson"}}, "arrivals.rate_per_s"),
        ({"max_tasks": 1, "arrivals": {"mode": "steady"}}, "arrivals"),
        ({"max_tasks": 1, "task": {"branches": {"dist": "uniform", "low": 5, "high": 1}}}, "task.branches"),
        ({"max_tasks": 0}, "max_tasks"),
        ({}, "<top level>"),  # unbounded run
        ({"max_tasks": 1, "tenants": []}, "tenants"),
    ],
)
def test_error_names_the_bad_field(doc: dict, path: str) -> None:
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(doc, "bad.yaml")
    msg = str(ei.value)
    assert msg.startswith("bad.yaml: invalid scenario")
    assert f"  {path}: " in msg, msg


def test_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("max_tasks: 2\ntask:\n  rolez: {}\n")
    with pytest.raises(ScenarioError, match=r"task\.rolez: Extra inputs"):
        load_scenario(p)
    p.write_text("max_tasks: [1\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(p)
    p.write_text("- 1\n")
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(p)
    with pytest.raises(ScenarioError, match=r"bundled scenarios: .*swe-swarm"):
        load_scenario(tmp_path / "nope.yaml")


def test_duplicate_tenants_and_trace_path_relative(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="unique"):
        parse_scenario({"max_tasks": 1, "tenants": [{"name": "a", "api_key": "k"}, {"name": "a", "api_key": "j"}]})
    p = tmp_path / "t.yaml"
    p.write_text("trace: {path: trace.jsonl}\n")
    sc = load_scenario(p)
    assert sc.trace is not None and sc.trace.path == str(tmp_path / "trace.jsonl")


def test_lognormal_median_and_clamp() -> None:
    import random

    d = LogNormal(dist="lognormal", median=100, sigma=1.0, max=300)
    rng = random.Random(0)
    xs = sorted(d.sample(rng) for _ in range(4001))
    assert 85 < xs[2000] < 115 and max(xs) == 300


def test_json_schema_exports() -> None:
    schema = Scenario.model_json_schema()
    assert "arrivals" in schema["properties"]
