"""Deterministic virtual-time convergence: AIMD in front of the simulated ``tiny`` engine.

12 closed-loop agents with growing contexts (the worker's ``tiny`` preset: 96 → 392
tokens over 10 steps, 20 ms tool pauses) against a 1024-token KV cache whose knee
is at 3 concurrent agents (the engine's own thrash curve: preemptions start at 3,
goodput peaks at 3 and collapses beyond). The window must settle near that edge,
keep preemptions far below the unmanaged engine's, and keep goodput near the best
fixed window — which a user could only find by sweeping.
"""

from __future__ import annotations

import pytest

from concurproxy.config.admission import AdmissionConfig, StaticConfig
from concurproxy.simulate.vtime import VTimeResult, run_vtime
from concurproxy.worker.profile import load_profile
from concurproxy.worker.thrash import PRESETS

AGENTS = 12
SECONDS = 30.0


@pytest.fixture(scope="module")
def runs() -> dict[str, VTimeResult]:
    profile = load_profile("tiny")
    spec = PRESETS["tiny"][0]
    configs = {"none": AdmissionConfig(controller="none"), "aimd": AdmissionConfig(controller="aimd")}
    for w in (2, 3, 4):
        configs[f"static{w}"] = AdmissionConfig(controller="static", static=StaticConfig(window=w))
    return {name: run_vtime(profile, spec, AGENTS, SECONDS, cfg) for name, cfg in configs.items()}


def second_half_mean(r: VTimeResult, attr: str) -> float:
    pts = r.trace[len(r.trace) // 2 :]
    return sum(getattr(p, attr) for p in pts) / len(pts)


def test_window_settles_near_the_capacity_edge(runs: dict[str, VTimeResult]) -> None:
    r = runs["aimd"]
    assert 2.0 <= second_half_mean(r, "window") <= 4.5
    assert 2.0 <= second_half_mean(r, "active") <= 4.0
    assert max(p.window for p in r.trace[len(r.trace) // 2 :]) <= 8


def test_few_preemptions_and_goodput_near_the_best_static_window(runs: dict[str, VTimeResult]) -> None:
    aimd, none = runs["aimd"], runs["none"]
    best_static = max(runs[f"static{w}"].tasks_per_min for w in (2, 3, 4))
    assert aimd.preemptions <= 0.3 * none.preemptions
    assert aimd.tasks_per_min >= 1.25 * none.tasks_per_min
    assert aimd.tasks_per_min >= 0.8 * best_static
    assert aimd.prefix_hit_rate > 2 * none.prefix_hit_rate


def test_run_is_deterministic(runs: dict[str, VTimeResult]) -> None:
    again = run_vtime(load_profile("tiny"), PRESETS["tiny"][0], AGENTS, SECONDS, AdmissionConfig(controller="aimd"))
    assert (again.agent_steps, again.preemptions) == (runs["aimd"].agent_steps, runs["aimd"].preemptions)
