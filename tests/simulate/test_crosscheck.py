"""Cross-check: the simulation against a real-time run through the proxy to bundled workers.

Same scenario, same seed, one ``tiny`` worker: loadgen → ``running_proxy`` → the worker's
engine in real time (``run_fleet``), versus ``simulate`` with the same profile in virtual
time. Tolerances (stated):

* tasks completed and completion tokens: equal (ignore_eos makes outputs exact);
* goodput (tasks/min over the busy period) within 40 %, the real busy period taken in the
  engine's time: wall clock minus the worker's host lag (``EngineDriver.lag_s``, the seconds
  the simulated GPU was ready to step but this process's event loop had not run it yet);
* preemptions within max(8, 50 % of the larger count);
* the prefill gate holds steps in both paths under the ``dispatch`` policy, in neither otherwise.

Why the host lag is subtracted: the worker's engine clock is the wall clock, so on a CPU-starved
machine every engine step ends late and the real run stretches with the machine's load, not with
anything the proxy or the simulation does. Measured on the 2-core box with 6-10 CPU burners
(load 7-11): raw wall-clock goodput fell to 0.25-0.59x the simulation's (0.85-0.91x unloaded)
and the old check failed 4 runs in 4 with 10 burners, while the lag-corrected goodput stayed at
0.95-0.97x (none) and 0.86-0.95x (aimd), 0.97-1.00x unloaded; the engine's modelled busy time
matched the simulation's within 2 % (none) and 10 % (aimd) at every load. Hence one attempt, no
retries. What the comparison still catches: the simulation's timing or batching drifting from the worker
engine's, and engine idle time the simulation does not reproduce (tool pauses, admission holds,
requests that reach the engine late through the proxy). What it no longer sees: a slow host —
including code that blocks this process's event loop, which the lag absorbs (the proxy's own
per-step cost is measured by benchmarks/overhead.py, not here).
"""

from __future__ import annotations

import hashlib

import pytest

from concurproxy.config import load_policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.simulate import SimOptions, simulate, uniform_fleet
from concurproxy.worker.fleet import run_fleet
from loadgen.runner import run_scenario
from loadgen.scenario import parse_scenario

SCENARIO = {
    "name": "crosscheck",
    "model": "concurworker-tiny",
    "seed": 11,
    "max_tasks": 8,
    "drain_s": 60,
    "arrivals": {"mode": "closed", "concurrency": 4},
    "task": {"system_prompt_tokens": 24, "task_prompt_tokens": 24, "branches": 2, "branch_steps": 4,
             "critic": False, "summary": True,
             "roles": {"planner": {"growth_tokens": 8, "output_tokens": 16},
                       "executor": {"growth_tokens": 50, "output_tokens": 16, "tool_pause_s": 0.05},
                       "summary": {"growth_tokens": 8, "output_tokens": 16}}},
    "tenants": [{"name": "alpha", "api_key": "sk-alpha"}],
}  # fmt: skip


def _busy_minutes(res: object) -> float:
    tasks = res.tasks  # type: ignore[attr-defined]
    start = min(t.start_s for t in tasks)
    end = max(t.end_s for t in tasks if t.end_s is not None)
    return (end - start) / 60.0


async def _real_run(
    sc: object, controller: str, tenants: list[dict[str, object]], extra: dict[str, object]
) -> tuple[object, int, float, object, int]:
    """Results, the engine's preemptions, the worker's host lag (s), the policy used and the steps its
    prefill gate held."""
    async with run_fleet("tiny", 1, time_scale=1.0, seed=sc.seed) as workers:  # type: ignore[attr-defined]
        policy = load_policy(
            overrides={
                "upstreams": [{"url": workers[0].url, "name": "tiny-0"}],
                "tenants": tenants,
                "admission.controller": controller,
                "routing.policy": "round-robin",
                **extra,
            },
            env={},
        )
        comps = build_components(policy)
        async with running_proxy(policy, comps) as proxy:
            real = await run_scenario(sc, proxy, run_tag="")  # type: ignore[arg-type]
        held = sum(row["held"] or 0 for row in comps.dispatch.state().values()) if comps.dispatch else 0
        return real, workers[0].engine.stats.preemptions, workers[0].driver.lag_s, policy, held


# The same policy object is served (``running_proxy``) and simulated (``simulate``): both build its
# decision core with ``DecisionCore.from_policy``. ``dispatch``: a long-prefill bar the executors'
# contexts pass, so the prefill gate holds steps in both paths (one long prefill per replica at once).
POLICIES = {"none": ("none", {}), "aimd": ("aimd", {}), "dispatch": ("aimd", {"fairness.long_prefill_tokens": 64})}


@pytest.mark.parametrize("name", list(POLICIES))
async def test_simulation_agrees_with_real_time_run(name: str) -> None:
    controller, extra = POLICIES[name]
    sc = parse_scenario(SCENARIO)
    tenants = [{"name": "alpha", "key_sha256": [hashlib.sha256(b"sk-alpha").hexdigest()]}]
    real, real_preempt, lag_s, policy, real_held = await _real_run(sc, controller, tenants, extra)
    sim = simulate(uniform_fleet("tiny", 1, seed=sc.seed), policy, sc, SimOptions())  # type: ignore[arg-type]
    rs, ss = real.summary(), sim.results.summary()  # type: ignore[attr-defined]
    assert rs["tasks"]["completed"] == ss["tasks"]["completed"] == 8
    assert rs["steps"]["completion_tokens"] == ss["steps"]["completion_tokens"]
    wall_min = _busy_minutes(real)
    g_real = 8 / (wall_min - lag_s / 60.0)  # in engine time: the host's lag is not the system's
    g_sim = 8 / _busy_minutes(sim.results)
    p_sim = sim.fleet.preemptions
    seen = f"goodput real {g_real:.1f} (wall clock {8 / wall_min:.1f}, host lag {lag_s:.2f} s) vs sim {g_sim:.1f}"
    assert abs(g_real - g_sim) <= 0.4 * max(g_real, g_sim), seen
    assert abs(real_preempt - p_sim) <= max(8, 0.5 * max(real_preempt, p_sim)), (real_preempt, p_sim)
    sim_held = sim.fleet.dispatch.get("held", 0)
    if name == "dispatch":  # the prefill gate held long steps in both paths
        assert real_held > 0 and sim_held > 0, (real_held, sim_held)
    else:
        assert real_held == sim_held == 0, (real_held, sim_held)
