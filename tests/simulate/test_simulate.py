"""The simulation: determinism, conservation, fast == exact engine, controllers compared, outputs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.cli import main as cli_main
from concurproxy.simulate import SimOptions, simulate, uniform_fleet
from concurproxy.simulate.fleet import FleetError, load_fleet
from loadgen.results import load_results
from loadgen.scenario import Scenario

from .conftest import THRASH, policy, scenario


def _key(rep: object) -> list[tuple[object, ...]]:
    return [
        (
            s.task_id,
            s.agent_id,
            s.step,
            s.attempt,
            s.start_s,
            s.end_s,
            s.status,
            s.replica,
            s.prompt_tokens,
            s.completion_tokens,
        )
        for s in rep.results.steps
    ]  # type: ignore[attr-defined]


def test_same_seed_same_run_other_seed_differs(thrash: Scenario) -> None:
    task = thrash.task.model_dump()
    task["roles"]["executor"]["growth_tokens"] = {"dist": "uniform", "low": 20, "high": 60}
    thrash = scenario(task=task)
    fleet = uniform_fleet("tiny", 2)
    a = simulate(fleet, policy(), thrash, SimOptions(duration_s=10))
    b = simulate(uniform_fleet("tiny", 2), policy(), thrash, SimOptions(duration_s=10))
    c = simulate(uniform_fleet("tiny", 2), policy(), thrash, SimOptions(duration_s=10, seed=99))
    assert _key(a) == _key(b)
    assert a.fleet.preemptions == b.fleet.preemptions and a.fleet.kv_usage == b.fleet.kv_usage
    assert _key(a) != _key(c)


def test_fast_engine_is_exact(thrash: Scenario) -> None:
    """Fast-forwarded decode runs give the same run as stepping every iteration."""
    sc = scenario(
        task={
            **thrash.task.model_dump(),
            "roles": {
                "planner": {"growth_tokens": 8, "output_tokens": 40},
                "executor": {"growth_tokens": 40, "output_tokens": 30, "tool_pause_s": 0.02},
                "summary": {"growth_tokens": 8, "output_tokens": 40},
            },
        }
    )
    for ctl in ("none", "aimd"):
        fast = simulate(uniform_fleet("tiny", 2), policy(ctl), sc, SimOptions(duration_s=8, engine="fast"))
        exact = simulate(uniform_fleet("tiny", 2), policy(ctl), sc, SimOptions(duration_s=8, engine="exact"))
        assert _key(fast) == _key(exact)
        assert fast.fleet.engine_steps == exact.fleet.engine_steps
        assert fast.fleet.recomputed_tokens == exact.fleet.recomputed_tokens
        assert fast.fleet.engine_calls < exact.fleet.engine_calls


def test_conservation_every_task_and_step_accounted(thrash: Scenario) -> None:
    rep = simulate(uniform_fleet("tiny", 2), policy("none"), thrash, SimOptions(duration_s=10, drain_s=1))
    res = rep.results
    ids = Counter(t.task_id for t in res.tasks)
    assert all(n == 1 for n in ids.values())
    status = Counter(t.status for t in res.tasks)
    assert set(status) <= {"ok", "failed", "cancelled"}
    assert status["cancelled"] > 0 and res.meta.truncated  # a 1 s drain cuts running tasks
    assert rep.fleet.tasks["started"] == len(res.tasks)
    ok_steps = Counter(s.task_id for s in res.steps if s.ok)
    for t in res.tasks:
        if t.status == "ok":
            assert ok_steps[t.task_id] == t.n_steps
    # every served token was produced by some engine
    gen = sum(r.steps_served for r in rep.fleet.replica_figures)
    assert gen >= sum(1 for s in res.steps if s.ok)


def test_aimd_beats_none_under_overload_on_tiny(thrash: Scenario) -> None:
    none = simulate(uniform_fleet("tiny", 2), policy("none"), thrash)
    aimd = simulate(uniform_fleet("tiny", 2), policy("aimd"), thrash)
    assert none.fleet.preemptions > 2 * aimd.fleet.preemptions
    assert aimd.fleet.goodput_per_min > 1.1 * none.fleet.goodput_per_min
    assert aimd.fleet.recomputed_tokens < none.fleet.recomputed_tokens


def test_budgets_and_routing_decide_in_the_sim(thrash: Scenario) -> None:
    pol = policy("aimd", roles={"executor": {"max_steps_per_task": 4}}, **{"routing.policy": "round-robin"})
    rep = simulate(uniform_fleet("tiny", 2), pol, thrash, SimOptions(duration_s=5, drain_s=10))
    codes = Counter(s.error for s in rep.results.steps if not s.ok)
    assert codes["max_steps_per_task"] > 0  # the budget engine refused the 5th executor step
    assert {s.replica for s in rep.results.steps if s.ok} == {"tiny-0", "tiny-1"}


def test_the_dispatch_stage_decides_in_the_sim() -> None:
    """The simulator runs the proxy's dispatch cores: long prefills wait at the prefill gate, the KV
    reserve holds other steps while control (high-priority) steps are about; none under controller none."""
    roles = {**THRASH["task"]["roles"], "planner": {"growth_tokens": 8, "output_tokens": 8, "priority": "high"}}
    sc = scenario(task={**THRASH["task"], "roles": roles, "planner_steps": 3})
    opts, fleet = SimOptions(duration_s=5, drain_s=10), uniform_fleet("tiny", 2)
    plain = simulate(fleet, policy(), sc, opts).fleet.dispatch
    gate = simulate(fleet, policy(**{"fairness.long_prefill_tokens": 64}), sc, opts).fleet
    reserve = simulate(fleet, policy(**{"fairness.kv_reserve": 0.9}), sc, opts).fleet
    assert plain == {"held": 0, "forced": 0, "reserve_held": 0, "reserve_forced": 0}  # nothing long, no reserve
    assert gate.dispatch["held"] > 0 and gate.tasks["failed"] == 0
    assert reserve.dispatch["reserve_held"] > 0 and reserve.tasks["failed"] == 0
    assert simulate(fleet, policy("none", **{"fairness.long_prefill_tokens": 64}), sc, opts).fleet.dispatch == {}


def test_results_json_renders_with_loadgen_report(tmp_path: Path, thrash: Scenario) -> None:
    rep = simulate(uniform_fleet("tiny", 2), policy(), thrash, SimOptions(duration_s=5))
    out = tmp_path / "sim.json"
    rep.save(out)
    doc = orjson.loads(out.read_bytes())
    assert {"meta", "summary", "steps", "tasks", "fleet"} <= set(doc)
    assert len(doc["fleet"]["kv_usage_hist"]) == 20
    back = load_results(out)
    assert len(back.steps) == len(rep.results.steps)
    from loadgen.cli import main as loadgen_main

    assert loadgen_main(["report", str(out), "--html", str(tmp_path / "r.html")]) in (0, None)


def test_cli_run_and_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sc = tmp_path / "sc.yaml"
    sc.write_bytes(orjson.dumps({**scenario().model_dump(mode="json"), "duration_s": 4, "drain_s": 5}))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("name: t\nreplicas:\n  - {profile: tiny, count: 1}\n  - {profile: tiny, count: 1, name: b}\n")
    pol = tmp_path / "p.yaml"
    pol.write_text("admission: {controller: aimd}\n")
    out = tmp_path / "r.json"
    assert (
        cli_main(["simulate", "--fleet", str(fleet), "--policy", str(pol), "--scenario", str(sc), "--out", str(out)])
        == 0
    )
    assert "goodput" in capsys.readouterr().out and out.exists()
    png = tmp_path / "s.png"
    assert (
        cli_main(
            [
                "simulate",
                "sweep",
                "--fleet",
                str(fleet),
                "--policy",
                str(pol),
                "--scenario",
                str(sc),
                "--replicas",
                "1,2",
                "--rate",
                "2,4",
                "--target-p99",
                "1",
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "goodput/min" in text and text.count("\n") >= 6
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_fleet_files(tmp_path: Path) -> None:
    f = tmp_path / "f.yaml"
    f.write_text("replicas:\n  - {profile: tiny, count: 2}\n  - {profile: llama3-8b-h100, count: 1}\n")
    fleet = load_fleet(f)
    assert [r.id for r in fleet.replicas] == ["tiny-0", "tiny-1", "llama3-8b-h100-0"]
    assert len(fleet.scaled(5)) == 5
    f.write_text("replicas:\n  - {profile: nope, count: 2}\n")
    with pytest.raises(FleetError, match="unknown profile"):
        load_fleet(f)
    f.write_text("replicas: []\n")
    with pytest.raises(FleetError, match="replicas"):
        load_fleet(f)
    for p in Path("simulate/fleets").glob("*.yaml"):
        assert len(load_fleet(p)) >= 1


def test_workload_tokens_match_the_proxy_tokenizer() -> None:
    from concurproxy.simulate.workload import AgentTokens, TaskTokens, fast_tokenize
    from concurproxy.tokens import render_chat, tokenize
    from loadgen.generator import iter_tasks
    from loadgen.scenario import load_scenario

    sc = load_scenario("swe-swarm")
    shared: dict[tuple[bool, str, str], list[int]] = {}
    for plan in iter_tasks(sc, max_tasks=2):
        tt = TaskTokens(shared)
        agents: dict[str, AgentTokens] = {}
        for spec in plan.steps():
            ids = agents.setdefault(spec.agent_id, AgentTokens()).prompt(spec, tt, 16)
            text = render_chat([{"role": r, "content": c} for r, c in spec.messages])
            assert ids == tokenize(text) == fast_tokenize(text)
            assert len(ids) == spec.est_prompt_tokens


def test_heterogeneous_fleet(tmp_path: Path, thrash: Scenario) -> None:
    f = tmp_path / "f.yaml"
    f.write_text("replicas:\n  - {profile: tiny, count: 2}\n  - {profile: llama3-8b-h100, count: 1, name: big}\n")
    rep = simulate(load_fleet(f), policy(), thrash, SimOptions(duration_s=4, drain_s=10))
    figs = {r.id: r for r in rep.fleet.replica_figures}
    assert rep.fleet.profiles == {"tiny": 2, "llama3-8b-h100": 1}
    assert figs["big-0"].steps_served > 0 and figs["tiny-0"].steps_served > 0
    assert rep.fleet.tasks["failed"] == 0


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    controller=st.sampled_from(["none", "aimd", "static"]),
    conc=st.integers(1, 16),
    drain=st.sampled_from([0.5, 5.0, 30.0]),
)
def test_property_conservation(seed: int, controller: str, conc: int, drain: float) -> None:
    """Whatever the seed, controller and load: every task ends exactly once, every ok task has
    exactly its steps served once, and nothing is left holding an admission ticket when all ended."""
    sc = scenario(arrivals={"mode": "closed", "concurrency": conc})
    rep = simulate(uniform_fleet("tiny", 2), policy(controller), sc, SimOptions(duration_s=3, drain_s=drain, seed=seed))
    res = rep.results
    assert len({t.task_id for t in res.tasks}) == len(res.tasks) == rep.fleet.tasks["started"]
    ok = Counter((s.task_id, s.agent_id, s.step) for s in res.steps if s.ok)
    assert all(n == 1 for n in ok.values())
    done = {t.task_id: t for t in res.tasks if t.status == "ok"}
    for tid, t in done.items():
        assert sum(1 for k in ok if k[0] == tid) == t.n_steps
    if not res.meta.truncated:
        assert all(t.status != "cancelled" for t in res.tasks)
