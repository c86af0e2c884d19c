"""Simulator speed: simulated seconds per wall-clock second at several fleet sizes.

``python -m benchmarks.simulator_speed [--sizes 8:2500,16:5000,...] [--seconds S]``

Workload (``CAPACITY``, also the docs' worked example): open-loop Poisson task
arrivals; a task is a planner, 4 executor branches of 3–8 growing steps (tool
output ~300 tokens, ~150 generated, ~1.5 s tool pauses), a critic reviewing each
branch once, and a summary: 10 agents per task, contexts up to ~6k tokens (fits the
8k-context ``llama3-8b-h100`` profile). A size ``R:A`` runs ``R`` replicas with
task arrivals scaled so that ``A`` agents arrive per simulated hour.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from typing import Any

from concurproxy.config import load_policy
from concurproxy.simulate.fleet import uniform_fleet
from concurproxy.simulate.sim import SimOptions, simulate
from loadgen.scenario import Scenario, parse_scenario

CAPACITY: dict[str, Any] = {
    "name": "capacity",
    "seed": 7,
    "arrivals": {"mode": "poisson", "rate_per_s": 0.5},
    "duration_s": 3600,
    "drain_s": 300,
    "task": {
        "system_prompt_tokens": 1200,
        "task_prompt_tokens": {"dist": "lognormal", "median": 400, "sigma": 0.5, "max": 1500},
        "planner_steps": 1,
        "branches": 4,
        "branch_steps": {"dist": "uniform", "low": 3, "high": 8},
        "critic": True,
        "critic_reject_p": 0.2,
        "max_rounds": 1,
        "summary": True,
        "deadline_s": 300,
        "roles": {
            "planner": {"growth_tokens": 80, "output_tokens": 300, "priority": "high"},
            "executor": {
                "growth_tokens": {"dist": "lognormal", "median": 300, "sigma": 0.6, "max": 900},
                "output_tokens": {"dist": "lognormal", "median": 150, "sigma": 0.4, "max": 400},
                "tool_pause_s": {"dist": "lognormal", "median": 1.5, "sigma": 0.6, "max": 8},
            },
            "critic": {"growth_tokens": 40, "output_tokens": 60},
            "summary": {"growth_tokens": 40, "output_tokens": 250},
        },
    },
    "tenants": [{"name": "swe", "api_key": "sk-swe"}],
}
AGENTS_PER_TASK = 10.0  # 1 planner + 4 executors + 4 critics + 1 summary


def capacity_scenario(agents_per_hour: float, duration_s: float = 3600.0, drain_s: float = 300.0) -> Scenario:
    doc = {
        **CAPACITY,
        "duration_s": duration_s,
        "drain_s": drain_s,
        "arrivals": {"mode": "poisson", "rate_per_s": agents_per_hour / AGENTS_PER_TASK / 3600.0},
    }
    return parse_scenario(doc)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sizes", default="8:2500,16:5000,32:10000,64:20000", help="replicas:agents-per-hour pairs")
    ap.add_argument("--seconds", type=float, default=300.0, help="simulated seconds of arrivals per size")
    ap.add_argument("--profile", default="llama3-8b-h100")
    ap.add_argument("--policy", default="policies/default.yaml")
    ap.add_argument("--engine", default="fast", choices=("fast", "exact"))
    ap.add_argument("--cprofile", action="store_true", help="print the top functions of the last size")
    args = ap.parse_args(argv)
    policy = load_policy(args.policy)
    print(
        f"{'replicas':>8} {'agents/h':>8} {'sim s':>7} {'wall s':>7} {'sim s/wall s':>12} {'cpu s':>7} "
        f"{'iterations':>11} {'engine calls':>12} {'steps':>7} {'goodput/min':>11}"
    )
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",") if s]
    for i, (n, agents) in enumerate(sizes):
        sc = capacity_scenario(agents, args.seconds, drain_s=min(300.0, args.seconds))
        prof = cProfile.Profile() if args.cprofile and i == len(sizes) - 1 else None
        if prof is not None:
            prof.enable()
        rep = simulate(uniform_fleet(args.profile, n, seed=sc.seed), policy, sc, SimOptions(engine=args.engine))
        if prof is not None:
            prof.disable()
        f = rep.fleet
        print(
            f"{n:>8} {agents:>8} {f.sim_seconds:>7.0f} {f.wall_seconds:>7.1f} {f.sim_speed:>12.1f} "
            f"{f.cpu_seconds:>7.1f} {f.engine_steps:>11} {f.engine_calls:>12} "
            f"{len(rep.results.steps):>7} {f.goodput_per_min:>11.1f}",
            flush=True,
        )
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
