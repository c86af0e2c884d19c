"""benchmarks.plain_loop end to end on the smallest load: a real worker, a real proxy, the load generator in the
common client's mode (no done signal), for both identity modes; the row it prints is read from their counters."""

from __future__ import annotations

import pytest

from benchmarks.plain_loop import format_runs, run_one


@pytest.mark.parametrize("identity", ["headers", "none"])
def test_one_small_run_through_the_proxy_is_measured(identity: str) -> None:
    run = run_one("2x2", "aimd", identity, "tiny", 0)
    assert (run.steps, run.errors) == (4, 0)
    assert run.idle_waiting_s is not None and run.idle_waiting_s >= 0
    assert run.wall_s > 0 and 0.0 <= run.hit_rate <= 1.0
    assert "2x2" in format_runs([run])


def test_a_direct_run_has_no_proxy_counters() -> None:
    run = run_one("2x2", "direct", "headers", "tiny", 0)
    assert (run.steps, run.errors, run.idle_waiting_s) == (4, 0, None)
