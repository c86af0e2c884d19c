"""concur-loadgen: multi-agent workloads (task trees, tool pauses, growing contexts, trace replay)
against an OpenAI-compatible target, with live progress, JSON results, reports and A/B runs.

Python API (what benchmarks call)::

    sc = load_scenario("swe-swarm")                  # or parse_scenario(dict)
    plans = list(iter_tasks(sc, seed=1, max_tasks=10))  # pure, deterministic
    res = await run_scenario(sc, "http://127.0.0.1:8080", duration_s=30)
    res.summary(); res.save("out.json"); write_report([res], html="r.html")
"""

from loadgen.ab import ab_table, run_ab
from loadgen.client import TargetUnreachable
from loadgen.generator import build_task, iter_tasks
from loadgen.plan import StepSpec, TaskPlan
from loadgen.report import write_report
from loadgen.results import Results, StepResult, TaskResult, load_results
from loadgen.runner import run_scenario
from loadgen.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from loadgen.stats import goodput_per_min, percentile

__all__ = [
    "Results",
    "Scenario",
    "ScenarioError",
    "StepResult",
    "StepSpec",
    "TargetUnreachable",
    "TaskPlan",
    "TaskResult",
    "ab_table",
    "build_task",
    "goodput_per_min",
    "iter_tasks",
    "load_results",
    "load_scenario",
    "parse_scenario",
    "percentile",
    "run_ab",
    "run_scenario",
    "write_report",
]
