"""Table tests and hypothesis properties of the latency-gradient window controller (no clock, no sleeps)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.config.admission import GradientConfig
from concurproxy.control.limits import GradientController, StepSample, WindowDecision

L = 0.01  # baseline: 10 ms per output token
CFG = GradientConfig(
    initial=10,
    min=2,
    max=40,
    tolerance=1.5,
    smoothing=0.2,
    queue_allowance=1.0,
    window_s=1.0,
    min_samples=4,
    probe_interval_s=60,
    probe_fraction=0.5,
    probe_samples=4,
    probe_max_s=10,
)
REASONS = {
    "hold-collecting",
    "hold-underused",
    "hold-max",
    "hold-latency",
    "increase",
    "decrease-latency",
    "probe-start",
    "probe",
    "probe-deeper",
    "probe-end",
    "probe-timeout",
}


def feed(c: GradientController, per_token: float, running: int, n: int = 4, tokens: int = 10, ok: bool = True) -> None:
    for _ in range(n):
        c.on_step(StepSample(output_tokens=tokens, latency_s=per_token * tokens, running=running, ok=ok))


def settled(cfg: GradientConfig = CFG) -> tuple[GradientController, float]:
    """A controller past its warm-up window and its first probe, at a steady L per token; the next
    probe is 60 s away. W is then initial + smoothing·sqrt(initial) (one growth step)."""
    c = GradientController(cfg)
    w = cfg.initial
    assert c.update(None, w, 0.0).reason == "hold-collecting"
    feed(c, L, running=w)
    d = c.update(None, w, 1.0)  # the first window: a law step (W grows), then the first probe
    assert (d.reason, d.window, c.probing) == ("probe-start", w // 2, True)
    feed(c, L, running=w // 2, n=1)  # running fell to half: drained
    assert c.update(None, w, 1.25).reason == "probe"
    feed(c, L, running=w // 2)  # started after the drain (0.1 s steps)
    d = c.update(None, w // 2, 1.5)
    assert (d.reason, c.probing) == ("probe-end", False)
    assert c.baseline_s_per_token == pytest.approx(L)
    assert d.window == int(cfg.initial + cfg.smoothing * math.sqrt(cfg.initial))
    return c, 1.5


def grown(w: float, g: float = 1.0) -> float:
    return w * (1 - CFG.smoothing) + (w * g + math.sqrt(w)) * CFG.smoothing


W0 = 10 + 0.2 * math.sqrt(10)


@pytest.mark.parametrize(
    ("name", "per_token", "in_use", "reason", "window"),
    [
        ("steady latency, full window grows", L, 10, "increase", grown(W0)),
        ("within tolerance (1.4x) still grows", 1.4 * L, 10, "increase", grown(W0)),
        ("steady latency, window not full holds", L, 9, "hold-underused", W0),
        ("latency 3x cuts (gradient floor 0.5)", 3 * L, 10, "decrease-latency", grown(10, 0.5)),
        ("a cut starts from the agents in use", 3 * L, 6, "decrease-latency", grown(6, 0.5)),
        ("latency falling (recovery) grows", 0.5 * L, 10, "increase", grown(W0)),
    ],
)
def test_one_window(name: str, per_token: float, in_use: int, reason: str, window: float) -> None:
    c, now = settled()
    feed(c, per_token, running=in_use)
    d = c.update(None, in_use, now + 1.0)
    assert (d.reason, d.window) == (reason, int(window)), name
    assert not d.saturated and d.changed == (int(window) != int(W0))


def test_gradient_is_tolerance_times_long_over_short_clamped() -> None:
    c, now = settled()
    feed(c, 2 * L, running=10)
    c.update(None, 10, now + 1.0)
    long = L + (2 * L - L) / CFG.baseline_windows  # slow rise toward the short term
    assert c.baseline_s_per_token == pytest.approx(long)
    assert c.gradient == pytest.approx(1.5 * long / (2 * L))


def test_short_term_below_long_term_pulls_the_baseline_down() -> None:
    c, now = settled()
    feed(c, 0.5 * L, running=10)
    c.update(None, 10, now + 1.0)
    assert c.baseline_s_per_token == pytest.approx(L - 0.5 * L * CFG.baseline_fall)


def test_latency_is_per_output_token_and_token_weighted() -> None:
    c, now = settled()
    c.on_step(StepSample(output_tokens=1000, latency_s=1000 * L, running=10))  # long answer
    for _ in range(3):
        c.on_step(StepSample(output_tokens=0, latency_s=0.5, running=10))  # tool-call acks: all prefill
    c.update(None, 10, now + 1.0)
    assert c.recent_s_per_token == pytest.approx((1000 * L + 1.5) / 1003)
    assert c.gradient == 1.0  # 0.0115 s/token: within tolerance, not a 50x slowdown


@pytest.mark.parametrize(
    ("name", "samples", "dt"),
    [
        ("failed steps are ignored", [StepSample(10, 10 * 3 * L, 10, ok=False)] * 8, 1.0),
        (
            "absurd latencies are ignored",
            [StepSample(10, x, 10) for x in (0, -1, 5e-324, math.nan, math.inf, 1e9)],
            1.0,
        ),
        ("too few samples: the window extends", [StepSample(10, 10 * 3 * L, 10)] * 3, 5.0),
        ("window shorter than window_s", [StepSample(10, 10 * 3 * L, 10)] * 8, 0.5),
    ],
)
def test_no_law_step(name: str, samples: list[StepSample], dt: float) -> None:
    c, now = settled()
    for s in samples:
        c.on_step(s)
    d = c.update(None, 10, now + dt)
    assert (d.reason, d.window, d.changed) == ("hold-collecting", int(W0), False), name


def test_steady_latency_grows_to_max_and_stays() -> None:
    c, now = settled()
    reasons = drive(c, lambda r: L, demand=100, t0=now, seconds=50)
    assert c.window == CFG.max and reasons[-1] == "hold-max"
    assert "decrease-latency" not in reasons


def test_latency_rising_with_concurrency_cuts_then_recovery_grows_back() -> None:
    cfg = CFG.model_copy(update={"initial": 40, "max": 64, "probe_interval_s": 30})
    c, now = settled(cfg)
    knee = 8
    reasons = drive(c, lambda r: L * max(1.0, r / knee), demand=100, t0=now, seconds=120)
    assert "decrease-latency" in reasons
    assert knee <= c.window <= 2.5 * knee  # settles near tolerance·knee + sqrt(W)
    # the engine gets faster (a bigger knee): the next probe re-measures and W grows back
    reasons = drive(c, lambda r: L * max(1.0, r / 32), demand=100, t0=now + 120, seconds=120)
    assert "increase" in reasons and c.window >= 32


def test_probe_recurs_every_interval_and_restores_the_window() -> None:
    c, now = settled()
    trace: list[tuple[float, WindowDecision]] = []
    drive(c, lambda r: L, demand=c.window, t0=now, seconds=200, trace=trace)
    starts = [t for t, d in trace if d.reason == "probe-start"]
    ends = [(t, d.window) for t, d in trace if d.reason == "probe-end"]
    assert len(starts) == len(ends) == 3 and starts[0] - now == pytest.approx(60, abs=0.25)
    assert all(e - s < 2 for s, (e, _) in zip(starts, ends, strict=True))  # one level: a drain, 4 samples
    assert all(60 <= s - e <= 61 for s, (e, _) in zip(starts[1:], ends, strict=False))  # from the end, at a window
    before = [trace[i - 1][1].window for i, (_, d) in enumerate(trace) if d.reason == "probe-start"]
    assert [w for _, w in ends] == before  # the window before the probe comes back
    assert not any(d.reason == "probe-deeper" for _, d in trace)  # latency flat: one level


def test_probe_descends_while_latency_falls_with_load() -> None:
    cfg = CFG.model_copy(update={"initial": 40})
    c = GradientController(cfg)
    knee = 4  # 10x past the knee from the start: the warm-up baseline is 10 L
    trace: list[tuple[float, WindowDecision]] = []
    drive(c, lambda r: L * max(1.0, r / knee), demand=100, t0=0.0, seconds=20, trace=trace)
    reasons = [d.reason for _, d in trace]
    assert reasons.count("probe-deeper") >= 2
    end = next(d for _, d in trace if d.reason == "probe-end")
    assert end.window <= 1.5 * 10  # tolerance × the deepest level still queueing
    assert c.baseline_s_per_token == pytest.approx(L, rel=0.3)


def test_probe_without_samples_times_out_and_keeps_the_baseline() -> None:
    c, now = settled()
    feed(c, L, running=10)
    t = now + 60
    assert c.update(None, 10, t).reason == "probe-start"
    assert c.update(None, 10, t + 9.9).reason == "probe"
    d = c.update(None, 10, t + 10.0)  # probe_max_s: nothing ended at the reduced window
    assert (d.reason, d.window, c.probing) == ("probe-timeout", int(grown(W0)), False)
    assert c.baseline_s_per_token == pytest.approx(L)


def test_a_due_probe_waits_for_a_window_under_load() -> None:
    c, now = settled()
    assert c.update(None, 0, now + 61).reason == "hold-collecting"  # idle: no samples
    feed(c, L, running=1)
    assert c.update(None, 0, now + 62).reason == "hold-underused"  # samples, but no agent holds a slot
    assert c.update(None, 4, now + 62.5).reason == "hold-collecting"
    feed(c, L, running=4)
    assert c.update(None, 4, now + 63).reason == "probe-start"


def test_gradient_at_its_floor_reprobes_early() -> None:
    c, now = settled()
    trace: list[tuple[float, WindowDecision]] = []
    # the engine became 10x slower whatever the load (longer prompts): the baseline is stale
    drive(c, lambda r: 10 * L, demand=100, t0=now, seconds=40, trace=trace)
    reasons = [d.reason for _, d in trace]
    first = next(t for t, d in trace if d.reason == "probe-start")
    assert first - now < 10  # not the 60 s interval: five law steps with the gradient at 0.5
    law = [r for r in reasons if r != "hold-collecting"]
    assert law[:5] == ["decrease-latency"] * 4 + ["probe-start"]  # the fifth law step at g = 0.5 probes
    assert "probe-deeper" not in reasons  # latency independent of load: one level
    assert c.baseline_s_per_token == pytest.approx(10 * L, rel=0.05)
    after = reasons[reasons.index("probe-end") :]
    assert "increase" in after and "decrease-latency" not in after  # grows again on the new baseline


def test_probe_interval_jitter_comes_from_the_rng_it_is_handed() -> None:
    c = GradientController(CFG, rng=lambda: 1.0)
    c.update(None, 10, 0.0)
    feed(c, L, running=10)
    assert c.update(None, 10, 1.0).reason == "probe-start"
    end = 1.0 + CFG.probe_max_s
    assert c.update(None, 10, end).reason == "probe-timeout"
    for t, probes in [(67.99, False), (68.99, False), (69.99, True)]:  # 60 s + 15 %
        feed(c, L, running=10)
        assert (c.update(None, 10, end + t).reason == "probe-start") == probes


def test_reads_no_pressure() -> None:
    c = GradientController()
    assert c.stale_after_s is None and c.name == "gradient"
    assert c.window == 64  # a first burst of 32 agents goes through at once
    d = c.update(None, 0, 0.0)
    assert not d.saturated


def test_initial_window_can_be_handed_over() -> None:
    """A replica falling back to this controller mid-run starts from the window it had."""
    assert GradientController(CFG, initial=7).window == 7
    assert GradientController(CFG, initial=1000).window == CFG.max
    assert GradientController(CFG, initial=0).window == CFG.min


# ---- a closed loop in virtual time: samples at the window's concurrency ------------------------


def drive(
    c: GradientController,
    latency: Callable[[int], float],
    *,
    demand: int,
    t0: float,
    seconds: float,
    tick: float = 0.25,
    trace: list[tuple[float, WindowDecision]] | None = None,
) -> list[str]:
    """Every tick: ``update`` with ``in_use = min(W, demand)``, then two steps of 5 tokens end at
    ``running = in_use`` with per-token ``latency(running)`` (short steps: they start after any drain)."""
    reasons: list[str] = []
    now = t0
    while now < t0 + seconds:
        now += tick
        in_use = min(c.window, demand)
        d = c.update(None, in_use, now)
        reasons.append(d.reason)
        if trace is not None:
            trace.append((now, d))
        running = min(c.window, demand)
        feed(c, latency(running), running=running, n=2, tokens=5)
    return reasons


# ---- properties ----------------------------------------------------------------------------------

configs = st.builds(
    lambda lo, span, init, tol, smooth, allow, win, n, pint, pfrac, psamp: GradientConfig(
        min=lo,
        max=lo + span,
        initial=lo + min(init, span),
        tolerance=tol,
        smoothing=smooth,
        queue_allowance=allow,
        window_s=win,
        min_samples=n,
        probe_interval_s=pint,
        probe_fraction=pfrac,
        probe_samples=psamp,
        probe_max_s=5.0,
    ),
    st.integers(1, 20),
    st.integers(0, 200),
    st.integers(0, 200),
    st.floats(1.0, 3.0),
    st.floats(0.01, 1.0),
    st.floats(0.0, 4.0),
    st.floats(0.1, 3.0),
    st.integers(1, 8),
    st.floats(1.0, 100.0),
    st.floats(0.05, 0.95),
    st.integers(1, 8),
)
samples = st.builds(
    StepSample,
    st.integers(-5, 5000),
    st.one_of(st.floats(), st.floats(1e-6, 100.0), st.sampled_from([5e-324, 1e-7, 1e-6, 1e6, 1e300])),
    st.integers(0, 300),
    st.booleans(),
)
ops = st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(0, 300), st.lists(samples, max_size=6)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(configs, ops)
def test_window_stays_in_bounds_for_any_samples(
    cfg: GradientConfig, seq: list[tuple[float, int, list[StepSample]]]
) -> None:
    c = GradientController(cfg)
    now = 0.0
    for dt, in_use, batch in seq:
        for s in batch:
            c.on_step(s)
        now += dt
        before = c.window
        d = c.update(None, in_use, now)
        assert cfg.min <= d.window <= cfg.max
        assert d.window == c.window and d.changed == (d.window != before)
        assert not d.saturated and d.reason in REASONS
        if d.reason == "decrease-latency":
            assert c.gradient < 1.0  # only latency above tolerance × baseline cuts
        if d.reason == "increase":
            assert c.gradient == 1.0 and d.window >= before


@settings(max_examples=40, deadline=None)
@given(
    knee=st.integers(4, 48),
    power=st.floats(1.0, 3.0),
    slope=st.floats(0.0, 0.05),
    base=st.floats(1e-5, 1e-4),
)
def test_latency_rising_with_concurrency_converges_near_the_knee(
    knee: int, power: float, slope: float, base: float
) -> None:
    """Latency strictly increasing in concurrency (flat-ish up to ``knee``, then queueing or worse):
    from a window 8x past the knee, W ends at most at the *tolerance knee* — where latency reaches
    tolerance x its unloaded value — plus the queue allowance, and does not starve the engine.
    (``base`` keeps a 5-token step shorter than a tick even at 8x the knee: `drive`'s model.)"""
    cfg = GradientConfig(initial=8 * knee, max=512)

    def latency(r: int) -> float:
        return base * (math.pow(max(1.0, r / knee), power) + slope * r / knee)

    c = GradientController(cfg)
    trace: list[tuple[float, WindowDecision]] = []
    drive(c, latency, demand=10 * knee, t0=0.0, seconds=400, trace=trace)
    late = [d.window for t, d in trace if t > 300 and not d.reason.startswith("probe")]
    mean = sum(late) / len(late)
    tol_knee = next(r for r in range(1, 10_000) if latency(r) > cfg.tolerance * latency(0))
    assert mean <= tol_knee + 2 * math.sqrt(tol_knee) + 2
    assert mean >= 0.5 * min(knee, tol_knee)
