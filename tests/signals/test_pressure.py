from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.control.types import PressureSnapshot
from concurproxy.signals.engine_metrics import EngineSample
from concurproxy.signals.pressure import PressureTracker


def vsample(ts: float, pre: float = 0.0, q: float = 0.0, h: float = 0.0, kv: float = 0.5) -> EngineSample:
    return EngineSample(
        ts=ts,
        flavour="vllm",
        kv_usage=kv,
        running=3,
        waiting=1,
        preemptions_total=pre,
        prefix_queries_total=q,
        prefix_hits_total=h,
        num_gpu_blocks=100,
        block_size=16,
    )


def test_first_sample_has_gauges_but_no_rates() -> None:
    t = PressureTracker()
    s = t.observe(vsample(10.0, pre=5, q=100, h=50))
    assert s == PressureSnapshot(
        ts=10.0,
        ok=True,
        kv_usage=0.5,
        running=3,
        waiting=1,
        preemptions_per_s=None,
        prefix_hit_rate=None,
        kv_capacity_tokens=1600,
        source="engine-metrics",
    )


def test_rates_from_counter_deltas() -> None:
    t = PressureTracker(rate_window_s=0.0)
    t.observe(vsample(0.0, pre=5, q=1000, h=900))
    s = t.observe(vsample(0.5, pre=7, q=1400, h=1000))
    assert s.preemptions_per_s == pytest.approx(4.0)  # 2 / 0.5 s
    assert s.prefix_hit_rate == pytest.approx(0.25)  # 100 / 400


def test_no_queries_means_unknown_hit_rate() -> None:
    t = PressureTracker(rate_window_s=0.0)
    t.observe(vsample(0.0, q=1000, h=900))
    s = t.observe(vsample(0.25, q=1000, h=900))
    assert s.prefix_hit_rate is None and s.preemptions_per_s == 0.0


def test_rate_window_spans_at_least_the_window() -> None:
    t = PressureTracker(rate_window_s=1.0)
    for i in range(9):  # every 250 ms, 1 preemption per read → 4/s; hit rate alternates 0 and 1
        s = t.observe(vsample(i * 0.25, pre=i, q=100 * i, h=100 * (i // 2)))
    assert s.preemptions_per_s == pytest.approx(4.0)
    assert s.prefix_hit_rate == pytest.approx(0.5)  # (4-2)*100 hits / 400 queries over 1 s


def test_counter_reset_counts_the_new_value_as_the_delta() -> None:
    t = PressureTracker(rate_window_s=0.0)
    t.observe(vsample(0.0, pre=100, q=10_000, h=9_000))
    s = t.observe(vsample(1.0, pre=3, q=200, h=50))  # engine restarted
    assert s.preemptions_per_s == pytest.approx(3.0)
    assert s.prefix_hit_rate == pytest.approx(0.25)
    assert t.resets == 3
    s = t.observe(vsample(2.0, pre=5, q=400, h=250))
    assert (s.preemptions_per_s, s.prefix_hit_rate) == (pytest.approx(2.0), pytest.approx(1.0))


def test_sglang_hit_rate_gauge_used_directly_and_clamped() -> None:
    t = PressureTracker()
    s = t.observe(
        EngineSample(ts=0.0, flavour="sglang", kv_usage=1.3, prefix_hit_rate_gauge=0.4, max_total_tokens=5000)
    )
    assert (s.prefix_hit_rate, s.kv_usage, s.kv_capacity_tokens, s.preemptions_per_s) == (
        0.4,
        1.0,
        5000,
        None,
    )


def test_stale_data_is_not_ok() -> None:
    t = PressureTracker(stale_after_s=1.0)
    t.observe(vsample(10.0))
    assert t.snapshot_at(10.9).ok
    stale = t.snapshot_at(11.5)
    assert not stale.ok and stale.error is not None and "stale" in stale.error
    assert stale.kv_usage == 0.5  # last values kept for visibility


def test_no_data_is_not_ok() -> None:
    s = PressureTracker().snapshot_at(3.0)
    assert (s.ok, s.error, s.ts) == (False, "no data yet", 3.0)


def test_failure_then_recovery() -> None:
    t = PressureTracker()
    t.observe(vsample(0.0))
    f = t.observe_failure(0.25, "connection refused")
    assert (f.ok, f.error, f.ts) == (False, "connection refused", 0.25)
    assert not t.snapshot_at(0.3).ok
    t.observe_failure(0.5, "connection refused")
    assert (t.failures, t.consecutive_failures) == (2, 2)
    assert t.observe(vsample(0.75)).ok and t.snapshot_at(0.8).ok
    assert t.consecutive_failures == 0


def test_failure_without_any_data() -> None:
    f = PressureTracker().observe_failure(1.0, "timeout")
    assert (f.ok, f.error, f.kv_usage) == (False, "timeout", None)


def test_clock_going_backwards_restarts_the_window() -> None:
    t = PressureTracker(rate_window_s=0.0)
    t.observe(vsample(5.0, pre=1))
    s = t.observe(vsample(4.0, pre=2))
    assert s.preemptions_per_s is None


def test_observe_snapshot_from_feed() -> None:
    t = PressureTracker(stale_after_s=1.0, source="node-agent")
    t.observe_snapshot(PressureSnapshot(ts=2.0, kv_usage=0.3, source="node-agent"))
    assert t.snapshot_at(2.5).ok and not t.snapshot_at(3.5).ok
    bad = t.observe_snapshot(PressureSnapshot(ts=4.0, ok=False, error="engine down", source="node-agent"))
    assert (bad.ok, bad.error) == (False, "engine down")


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        PressureTracker(stale_after_s=0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.01, 2.0), st.integers(0, 50), st.integers(0, 1000), st.floats(0, 1)),
        min_size=1,
        max_size=30,
    )
)
def test_rates_are_never_negative_and_hit_rate_in_unit_range(
    steps: list[tuple[float, int, int, float]],
) -> None:
    t = PressureTracker(rate_window_s=0.5)
    ts, pre, q, h = 0.0, 0.0, 0.0, 0.0
    for dt, dpre, dq, frac in steps:
        ts += dt
        if dpre == 0 and dq == 0:  # occasionally restart the engine
            pre, q, h = 0.0, 0.0, 0.0
        pre, q, h = pre + dpre, q + dq, h + dq * frac
        s = t.observe(vsample(ts, pre=pre, q=q, h=h))
        assert s.preemptions_per_s is None or s.preemptions_per_s >= 0
        assert s.prefix_hit_rate is None or 0.0 <= s.prefix_hit_rate <= 1.0
        assert t.snapshot_at(ts + 2.0).ok is False  # stale after 1 s by default
