"""Deterministic virtual-time check on a GPU profile: past capacity, ``aimd`` keeps prefixes hot.

llama3-8b-h100's preset (contexts 2000 → 7000 tokens over 16 steps, 0.5 s tool pauses,
452k KV tokens) with 128 closed-loop agents, twice what fits. Unmanaged, 80% of prefill is
recomputed (evicted prefixes). Under ``aimd`` the footprint budget (learned growth, floor at a
share of the size agents finish at, pause when admitted contexts outgrow it) must keep
recompute ≤ 5% of prefill and goodput ≥ 0.9× the best static window (an oracle, W = 64).
"""

from __future__ import annotations

from concurproxy.config.admission import AdmissionConfig, StaticConfig
from concurproxy.simulate.vtime import run_vtime
from concurproxy.worker.profile import load_profile
from concurproxy.worker.thrash import PRESETS

AGENTS = 128
SECONDS = 90.0


def test_aimd_recomputes_little_and_matches_the_oracle_window_at_2x_overload() -> None:
    profile = load_profile("llama3-8b-h100")
    spec = PRESETS["llama3-8b-h100"][0]
    aimd = run_vtime(profile, spec, AGENTS, SECONDS, AdmissionConfig(controller="aimd"))
    oracle = run_vtime(
        profile, spec, AGENTS, SECONDS, AdmissionConfig(controller="static", static=StaticConfig(window=64))
    )
    assert aimd.recomputed_tokens <= 0.05 * aimd.prefill_tokens
    assert aimd.tasks_per_min >= 0.9 * oracle.tasks_per_min
