"""Table tests for the AIMD window controller, with numbers."""

from __future__ import annotations

import pytest

from concurproxy.config.admission import AIMDConfig
from concurproxy.control.limits import AIMDController
from concurproxy.control.types import PressureSnapshot

CFG = AIMDConfig(
    initial=10,
    min=2,
    max=12,
    increase=1,
    decrease=0.7,
    kv_target=0.8,
    kv_high_water=0.9,
    interval_ms=250,
    stale_after_ms=1000,
    cooldown_intervals=2,
)


def snap(ts: float, kv: float | None = 0.5, **kw: object) -> PressureSnapshot:
    return PressureSnapshot(ts=ts, kv_usage=kv, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "snapshot", "in_use", "window", "reason"),
    [
        ("healthy and used grows by 1", snap(1.0, 0.5), 10, 11, "increase"),
        ("window not full holds", snap(1.0, 0.5), 9, 10, "hold-underused"),
        ("kv in hysteresis band holds", snap(1.0, 0.85), 10, 10, "hold-kv-high"),
        ("kv above high water alone holds", snap(1.0, 0.95), 10, 10, "hold-kv-high"),
        ("kv unknown holds", snap(1.0, None), 10, 10, "hold-kv-unknown"),
        ("preemption cuts 10 -> 7", snap(1.0, 0.5, preemptions_per_s=0.5), 10, 7, "thrash-preemption"),
        ("preemption above hw cuts", snap(1.0, 0.97, preemptions_per_s=2.0), 10, 7, "thrash-preemption"),
        ("stale sample holds, saturated", snap(0.0, 0.1), 10, 10, "stale"),
        ("failed read holds, saturated", PressureSnapshot(ts=1.0, ok=False), 10, 10, "source-error"),
        ("no sample holds, saturated", None, 10, 10, "no-data"),
    ],
)
def test_single_update(name: str, snapshot: PressureSnapshot | None, in_use: int, window: int, reason: str) -> None:
    c = AIMDController(CFG)
    d = c.update(snapshot, in_use, now=1.5)
    assert (d.window, d.reason) == (window, reason), name
    assert d.changed == (window != 10)
    assert d.saturated == (reason in {"stale", "source-error", "no-data"})


def test_stale_boundary_is_inclusive() -> None:
    c = AIMDController(CFG)
    assert not c.update(snap(1.0), 10, now=2.0).saturated  # age 1.0 == stale_after: still fresh
    assert c.update(snap(1.0), 10, now=2.001).saturated


def test_hit_rate_drop_above_high_water_is_thrash() -> None:
    c = AIMDController(CFG)
    c.update(snap(1.0, 0.92, prefix_hit_rate=0.60), 10, 1.0)
    d = c.update(snap(1.25, 0.93, prefix_hit_rate=0.45), 10, 1.25)
    assert (d.window, d.reason) == (7, "thrash-hit-rate")


def test_hit_rate_drop_below_high_water_is_not_thrash() -> None:
    c = AIMDController(CFG)
    c.update(snap(1.0, 0.5, prefix_hit_rate=0.60), 99, 1.0)
    d = c.update(snap(1.25, 0.5, prefix_hit_rate=0.10), 99, 1.25)
    assert d.reason == "increase"


def test_small_hit_rate_wobble_is_not_thrash() -> None:
    c = AIMDController(CFG)
    c.update(snap(1.0, 0.92, prefix_hit_rate=0.60), 10, 1.0)
    assert c.update(snap(1.25, 0.92, prefix_hit_rate=0.55), 10, 1.25).reason == "hold-kv-high"


def test_growing_waiting_queue_above_high_water_is_thrash() -> None:
    c = AIMDController(CFG)
    c.update(snap(1.0, 0.91, waiting=2), 10, 1.0)
    d = c.update(snap(1.25, 0.95, waiting=5), 10, 1.25)
    assert (d.window, d.reason) == (7, "thrash-waiting")


def test_cooldown_blocks_second_cut_and_growth() -> None:
    c = AIMDController(CFG)  # cooldown = 2 * 0.25 s = 0.5 s
    assert c.update(snap(1.0, preemptions_per_s=1.0), 10, 1.0).window == 7
    d = c.update(snap(1.25, preemptions_per_s=1.0), 10, 1.25)
    assert (d.window, d.reason) == (7, "hold-cooldown")
    d = c.update(snap(1.40, 0.3), 10, 1.40)
    assert (d.window, d.reason) == (7, "hold-cooldown")
    d = c.update(snap(1.5, preemptions_per_s=1.0), 10, 1.5)
    assert (d.window, d.reason) == (5, "thrash-preemption")  # min(7 - 1, ceil(7 * 0.7)) = 5


def test_cuts_clamp_at_min_and_growth_at_max() -> None:
    c = AIMDController(CFG)
    windows = [c.update(snap(t, preemptions_per_s=1.0), 99, t).window for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    assert windows == [7, 5, 4, 3, 2, 2]  # ceil(b * 0.7), at least one less, clamped at min (2)
    c2 = AIMDController(CFG)
    grown = [c2.update(snap(t, 0.1), 99, t).window for t in (1.0, 1.25, 1.5, 1.75)]
    assert grown == [11, 12, 12, 12]
    assert c2.update(snap(2.0, 0.1), 99, 2.0).reason == "hold-max"


def test_same_sample_twice_grows_once() -> None:
    c = AIMDController(CFG)
    s = snap(1.0, 0.3)
    assert c.update(s, 10, 1.0).window == 11
    d = c.update(s, 11, 1.1)
    assert (d.window, d.reason, d.changed) == (11, "hold-no-new-sample", False)


def test_fractional_increase_accumulates() -> None:
    c = AIMDController(CFG.model_copy(update={"increase": 0.5}))
    assert [c.update(snap(t, 0.3), 12, t).window for t in (1.0, 1.25, 1.5, 1.75)] == [10, 11, 11, 12]


def test_stale_then_fresh_recovers() -> None:
    c = AIMDController(CFG)
    assert c.update(snap(0.0, 0.3), 10, 5.0).saturated
    d = c.update(snap(5.0, 0.3), 10, 5.0)
    assert (d.window, d.saturated) == (11, False)


def test_cut_starts_from_agents_in_use_when_fewer_than_window() -> None:
    c = AIMDController(CFG)
    d = c.update(snap(1.0, 0.95, preemptions_per_s=3.0), 6, 1.0)
    assert d.window == 5  # min(6 - 1, ceil(min(10, 6) * 0.7))


def test_growth_waits_for_the_recent_kv_peak_to_fall_below_target() -> None:
    c = AIMDController(CFG)  # kv_peak_samples = 4
    assert c.update(snap(1.0, 0.85), 99, 1.0).reason == "hold-kv-high"
    reasons = [c.update(snap(t, 0.3), 99, t).reason for t in (1.25, 1.5, 1.75, 2.0)]
    assert reasons == ["hold-kv-high", "hold-kv-high", "hold-kv-high", "increase"]


def test_slow_start_grows_only_below_twice_the_acked_holders() -> None:
    """A reading cannot show agents whose first step has not run: W grows only while W < 2 x acked + 1."""
    c = AIMDController(AIMDConfig(initial=1, min=1, max=12, increase=1, interval_ms=250, cooldown_intervals=2))
    assert c.update(snap(1.0, 0.1), 1, 1.0, acked=0).reason == "hold-slow-start"
    assert c.update(snap(1.25, 0.1), 1, 1.25, acked=1).window == 2  # the first step ended: 1 < 3
    assert c.update(snap(1.5, 0.1), 2, 1.5, acked=1).window == 3
    d = c.update(snap(1.75, 0.1), 3, 1.75, acked=1)
    assert (d.window, d.reason) == (3, "hold-slow-start")  # two holders not seen by any reading yet
    assert c.update(snap(2.0, 0.1), 3, 2.0, acked=3).window == 4
    assert c.update(snap(2.25, 0.1), 4, 2.25).window == 5  # acked unknown: no slow-start bound


def test_slow_start_never_blocks_a_cut() -> None:
    c = AIMDController(CFG)
    d = c.update(snap(1.0, 0.5, preemptions_per_s=1.0), 10, 1.0, acked=0)
    assert (d.window, d.reason) == (7, "thrash-preemption")
