"""What a prefill costs in decode iterations, from the engine's latency histograms (signals/cost.py)."""

from __future__ import annotations

import json

import pytest

from concurproxy.control.types import PressureSnapshot
from concurproxy.signals.cost import PrefillCost
from concurproxy.signals.engine_metrics import parse_engine_metrics
from concurproxy.signals.feed import engine_section, snapshot_from_feed
from concurproxy.signals.pressure import PressureTracker


def body(prefill_s: float, prefills: float, itl_s: float, itls: float, *, legacy_itl: bool = False) -> str:
    itl = "vllm:time_per_output_token_seconds" if legacy_itl else "vllm:inter_token_latency_seconds"
    return (
        "vllm:kv_cache_usage_perc 0.5\n"
        f'vllm:request_prefill_time_seconds_bucket{{le="0.3"}} {prefills}\n'
        f"vllm:request_prefill_time_seconds_sum {prefill_s}\n"
        f"vllm:request_prefill_time_seconds_count {prefills}\n"
        f'{itl}_bucket{{le="0.01"}} {itls}\n'
        f"{itl}_sum {itl_s}\n"
        f"{itl}_count {itls}\n"
    )


def test_the_ratio_is_the_mean_prefill_over_the_mean_inter_token_latency() -> None:
    cost = PrefillCost(half_life_s=30.0, min_prefills=8)
    assert cost.observe(0.0, (1.0, 4.0, 1.0, 100.0)) is None  # the first read is a base, not a delta
    # 10 prefills of 0.2 s, 200 tokens 0.01 s apart: a prefill is worth 20 iterations
    assert cost.observe(1e-9, (3.0, 14.0, 3.0, 300.0)) == pytest.approx(20.0)


def test_unknown_until_enough_prefills_and_when_the_engine_exports_no_histograms() -> None:
    cost = PrefillCost(min_prefills=8)
    cost.observe(0.0, (0.0, 0.0, 0.0, 0.0))
    assert cost.observe(0.0, (0.7, 7.0, 1.0, 100.0)) is None  # 7 prefills < 8
    assert cost.observe(0.0, (0.8, 8.0, 1.0, 100.0)) == pytest.approx(10.0)
    silent = PrefillCost()
    for t in range(5):
        assert silent.observe(float(t), (None, None, None, None)) is None


def test_old_reads_decay_so_the_ratio_follows_the_workload() -> None:
    cost = PrefillCost(half_life_s=1.0, min_prefills=1)
    cost.observe(0.0, (0.0, 0.0, 0.0, 0.0))
    assert cost.observe(0.0, (100.0, 100.0, 1.0, 100.0)) == pytest.approx(100.0)  # 1 s prefills: dear
    # then 100 half-lives of cheap prefills (0.05 s, iterations still 10 ms): the old ones weigh nothing
    assert cost.observe(100.0, (105.0, 200.0, 2.0, 200.0)) == pytest.approx(5.0, rel=1e-6)


def test_a_restarted_engine_counts_from_zero_not_negative() -> None:
    cost = PrefillCost(half_life_s=1e9, min_prefills=1)
    cost.observe(0.0, (0.0, 0.0, 0.0, 0.0))
    cost.observe(1.0, (10.0, 10.0, 1.0, 100.0))  # 1 s / 0.01 s = 100
    # restarted: every counter below its previous value, so the new values are the deltas
    assert cost.observe(2.0, (1.0, 2.0, 0.5, 50.0)) == pytest.approx((11.0 / 12.0) / (1.5 / 150.0))


def test_the_tracker_puts_it_on_the_snapshot_from_a_metrics_body() -> None:
    tracker = PressureTracker()
    tracker.observe(parse_engine_metrics(body(0.0, 0.0, 0.0, 0.0), 0.0))
    snap = tracker.observe(parse_engine_metrics(body(2.6, 10.0, 1.0, 200.0), 0.25))
    assert snap.prefill_iterations == pytest.approx(52.0)  # 0.26 s / 5 ms
    legacy = PressureTracker()
    legacy.observe(parse_engine_metrics(body(0.0, 0.0, 0.0, 0.0, legacy_itl=True), 0.0))
    snap = legacy.observe(parse_engine_metrics(body(2.6, 10.0, 1.0, 200.0, legacy_itl=True), 0.25))
    assert snap.prefill_iterations == pytest.approx(52.0)


def test_an_engine_exporting_both_names_of_the_inter_token_histogram_gives_the_same_ratio() -> None:
    """vLLM 0.10-0.11 export ``time_per_output_token`` beside its new name: both sums and counts double."""
    both = (
        body(0.0, 0.0, 0.0, 0.0)
        + "vllm:time_per_output_token_seconds_sum 0.0\nvllm:time_per_output_token_seconds_count 0\n"
    )
    later = (
        body(2.6, 10.0, 1.0, 200.0)
        + "vllm:time_per_output_token_seconds_sum 1.0\nvllm:time_per_output_token_seconds_count 200\n"
    )
    tracker = PressureTracker()
    tracker.observe(parse_engine_metrics(both, 0.0))
    assert tracker.observe(parse_engine_metrics(later, 0.25)).prefill_iterations == pytest.approx(52.0)


def test_the_node_agent_feed_carries_it_to_the_proxy() -> None:
    snap = PressureSnapshot(ts=10.0, kv_usage=0.4, kv_capacity_tokens=1536, prefill_iterations=13.8)
    doc = {"version": 1, "engine": engine_section(snap, 10.5, url="u", flavour="vllm", scrapes=3, failures=0)}
    back = snapshot_from_feed(json.loads(json.dumps(doc)), received_at=100.0)
    assert back.prefill_iterations == 13.8 and back.ts == pytest.approx(99.5)
    del doc["engine"]["prefill_iterations"]  # an older agent: unknown, not an error
    assert snapshot_from_feed(doc, received_at=100.0).prefill_iterations is None
