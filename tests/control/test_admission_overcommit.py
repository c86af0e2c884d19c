"""The goodput probe of how far past W and the footprint budget admission pays (control/admission/overcommit.py)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.config.admission import ProbeConfig
from concurproxy.control.admission.overcommit import OvercommitProbe, settle_band

P = ProbeConfig(epoch_s=1.0, epoch_steps=1, epoch_cycles=0, hold_epochs=2, gain=0.05, up=1.5, open_at=4.0)


def run(probe: OvercommitProbe, goodput: float, t0: float, epochs: int = 1, hit: float = 0.8) -> float:
    """``epochs`` epochs of 1 s delivering ``goodput`` tokens/s while steps wait; returns the time after."""
    t = t0
    for _ in range(epochs):
        probe.on_step(int(goodput))
        t += 1.0
        probe.on_tick(t, fresh=True, binds=True, hit_rate=hit)
    return t


def start(probe: OvercommitProbe) -> float:
    probe.on_tick(0.0, fresh=True, binds=True, hit_rate=0.8)
    return 0.0


def test_a_probe_that_delivers_more_is_kept_up_to_lifting_the_limits() -> None:
    p = OvercommitProbe(P)
    t = run(p, 100, start(p), epochs=3)  # two settled steady epochs: a probe starts
    assert p.phase == "probe" and p.multiplier == 1.5
    t = run(p, 120, t)  # +20%
    assert p.m == 1.5 and p.phase == "steady"
    t = run(p, 125, t, epochs=2)  # settled: the regret check passes; then a down-probe (m > 1)
    assert p.phase == "probe" and p.multiplier == 1.0
    t = run(p, 110, t)  # the down-probe delivered less: refused
    assert p.m == 1.5
    level = 125.0
    for _ in range(40):  # each kept up-probe lifts the level; down-probes deliver less and are refused
        if p.phase == "probe" and p.multiplier > p.m:
            level *= 1.1
            t = run(p, level, t)
        elif p.phase == "probe":
            t = run(p, 0.9 * level, t)
        else:
            t = run(p, level, t)
    assert math.isinf(p.m)  # 1.5 → 2.25 → 3.375 → 5.06 ≥ open_at: lifted


def test_a_probe_that_delivers_no_more_is_refused_and_probes_get_rarer() -> None:
    p = OvercommitProbe(P)
    t = run(p, 100, start(p), epochs=3)
    assert p.phase == "probe"
    t = run(p, 102, t)  # +2% < gain
    assert p.m == 1.0 and p.phase == "steady"
    gaps = []
    last = t
    for _ in range(40):
        t = run(p, 100, t)
        if p.phase == "probe":
            gaps.append(t - last)
            t = run(p, 100, t)
            last = t
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]


def test_a_collapsing_hit_rate_refuses_a_probe_that_looked_faster() -> None:
    p = OvercommitProbe(P)
    t = run(p, 100, start(p), epochs=3, hit=0.9)
    run(p, 150, t, hit=0.5)
    assert p.m == 1.0


def test_a_kept_probe_that_costs_later_is_taken_back() -> None:
    p = OvercommitProbe(P)
    t = run(p, 100, start(p), epochs=3)
    t = run(p, 120, t)
    assert p.m == 1.5
    run(p, 60, t)  # the over-admitted agents grew: goodput fell below the level before the probe
    assert p.m == 1.0


def test_stale_data_ends_a_probe_and_nothing_waiting_measures_nothing() -> None:
    p = OvercommitProbe(P)
    t = run(p, 100, start(p), epochs=3)
    assert p.phase == "probe"
    p.on_tick(t + 0.5, fresh=False, binds=True, hit_rate=None)
    assert p.phase == "steady" and p.multiplier == 1.0
    q = OvercommitProbe(P)
    t = start(q)
    for _ in range(10):
        q.on_step(100)
        t += 1
        q.on_tick(t, fresh=True, binds=False, hit_rate=0.8)
    assert q.probes == 0


def noisy_epochs(probe: OvercommitProbe, levels: list[float], t: float, steps: int) -> float:
    """One 1-s epoch per level, of ``steps`` steps delivering ``level`` tokens each (goodput level x steps)."""
    for level in levels:
        for _ in range(steps):
            probe.on_step(int(level))
        t += 1.0
        probe.on_tick(t, fresh=True, binds=True, hit_rate=0.8)
    return t


def test_the_settle_band_is_the_gain_or_an_epochs_sampling_noise() -> None:
    assert settle_band(0.05, 0) == 0.05
    assert settle_band(0.05, 1600) == 0.05
    assert settle_band(0.05, 16) == 0.125
    assert settle_band(0.3, 16) == 0.3


# goodput of one steady load in 2-s epochs on vLLM CPU (decode swarm, measured 2026-12-07, tokens/s): +-15%
VLLM_CPU_EPOCHS = [355.0, 289.0, 308.0, 267.0, 288.0, 294.0, 252.0, 302.0, 275.0, 263.0, 258.0, 269.0]


def test_a_probe_starts_on_an_engine_whose_few_steps_per_epoch_are_noisy() -> None:
    """16 steps an epoch spread goodput +-15%: within a 5% band no four epochs in a row ever settled and
    no probe ran in a whole run; within the epoch's own noise they settle, and the probe runs."""
    p = OvercommitProbe(ProbeConfig(epoch_s=1.0, epoch_steps=16, epoch_cycles=0, hold_epochs=4))
    noisy_epochs(p, VLLM_CPU_EPOCHS, start(p), steps=16)
    assert p.probes >= 1


def test_goodput_that_still_moves_over_many_steps_starts_no_probe() -> None:
    """Where epochs hold hundreds of steps the band is the gain: the same +-15% is a ramp, not noise."""
    p = OvercommitProbe(ProbeConfig(epoch_s=1.0, epoch_steps=16, epoch_cycles=0, hold_epochs=4))
    noisy_epochs(p, VLLM_CPU_EPOCHS, start(p), steps=400)
    assert p.probes == 0


@settings(max_examples=200, deadline=None)
@given(
    goodputs=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=80),
    fresh=st.lists(st.booleans(), min_size=1, max_size=80),
)
def test_a_probe_always_ends_and_the_multiplier_stays_in_range(goodputs, fresh) -> None:  # type: ignore[no-untyped-def]
    p = OvercommitProbe(P)
    t = start(p)
    for i, g in enumerate(goodputs):
        p.on_step(int(g))
        t += 1.0
        p.on_tick(t, fresh=fresh[i % len(fresh)], binds=True, hit_rate=0.8)
        assert p.multiplier >= 1.0
        assert math.isinf(p.m) or 1.0 <= p.m < P.open_at
    if p.phase == "probe":  # one more epoch of fresh data ends it, whatever it delivers
        run(p, 0.0, t + 1.0)
        assert p.phase == "steady"
