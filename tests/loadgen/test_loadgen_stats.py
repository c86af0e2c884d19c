from __future__ import annotations

import statistics

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.results import Meta, Results, StepResult, TaskResult, results_from_dict
from loadgen.stats import goodput_over_time, goodput_per_min, percentile, summarize_steps


@pytest.mark.parametrize(
    ("xs", "q", "want"),
    [
        ([], 50, None),
        ([3.0], 99, 3.0),
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4, 5], 0, 1),
        ([1, 2, 3, 4, 5], 100, 5),
        ([10, 20], 90, 19.0),
        (list(range(101)), 99, 99.0),
    ],
)
def test_percentile_table(xs: list[float], q: float, want: float | None) -> None:
    assert percentile(xs, q) == want


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=50))
def test_percentile_matches_inclusive_quantiles(xs: list[float]) -> None:
    qs = statistics.quantiles(xs, n=100, method="inclusive")
    for q in (10, 50, 90, 99):
        assert percentile(xs, q) == pytest.approx(qs[q - 1], rel=1e-9, abs=1e-6)


def test_percentile_rejects_bad_q() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def _task(status: str, start: float, end: float | None, deadline: float | None = None) -> TaskResult:
    return TaskResult("t", "ten", status, start, end, 3, deadline)


def test_goodput_counts_completed_in_deadline() -> None:
    tasks = [
        _task("ok", 0, 10, 20),  # in deadline
        _task("ok", 0, 30, 20),  # late
        _task("ok", 5, 50),  # no deadline: counts
        _task("failed", 0, 5),
        _task("cancelled", 0, None),
    ]
    assert [t.in_deadline for t in tasks] == [True, False, True, False, False]
    assert goodput_per_min(tasks, 120) == pytest.approx(1.0)
    assert goodput_per_min(tasks, 0) == 0.0
    series = goodput_over_time(tasks, 60, bin_s=30)
    assert series == [(0.0, 2.0), (30.0, 2.0)]  # one task per 30 s bin = 2/min


def _step(role: str, status: int, total: float, ttft: float | None = None, qw: float | None = None) -> StepResult:
    return StepResult("t", "a", role, "ten", 0, 1, 1.0, 1.0 + total, status, ttft, qw, None, 10, 5, 5)


def test_step_summary() -> None:
    steps = [
        _step("x", 200, 0.1, 0.01, 2.0),
        _step("x", 200, 0.3, 0.03),
        _step("x", 429, 0.0),
        _step("x", 0, 1.0),
    ]
    s = summarize_steps(steps, elapsed_s=2.0)
    assert (s["requests"], s["ok"], s["errors"], s["http_429"]) == (4, 2, 2, 1)
    assert s["latency_ms"]["p50"] == pytest.approx(200.0)
    assert s["ttft_ms"]["p99"] == pytest.approx(29.8)
    assert s["queue_wait_ms"]["p50"] == 2.0
    assert (s["prompt_tokens"], s["completion_tokens"], s["steps_per_s"]) == (20, 10, 1.0)


def test_results_json_round_trip() -> None:
    r = Results(
        Meta("sc", "http://x", 1, "2026-01-01T00:00:00+00:00", 60.0),
        [_step("planner", 200, 0.5, 0.1)],
        [_task("ok", 0, 3, 10)],
    )
    doc = orjson.loads(r.to_json())
    assert doc["summary"]["tasks"]["goodput_per_min"] == 1.0
    assert doc["summary"]["by_role"]["planner"]["ok"] == 1
    back = results_from_dict(doc)
    assert back.steps == r.steps and back.tasks == r.tasks and back.meta == r.meta
