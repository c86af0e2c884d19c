"""The README's first command runs end to end (short): worker + proxy + load, two controllers."""

import subprocess
import sys

import pytest


def test_demo_command_prints_the_comparison():
    out = subprocess.run(
        [sys.executable, "-m", "concurproxy", "demo", "--duration", "3", "--agents", "4"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "tasks", "done"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:3]}
    assert set(rows) == {"none", "aimd"}
    assert all(int(r[1]) > 0 and int(r[2]) == 0 for r in rows.values())  # tasks done, none failed
    assert "aimd vs none" in out.stdout


def test_kv_balance_per_replica_from_scraped_worker_metrics():
    from concurproxy.demo import DemoRow, format_table, kv_means
    from loadgen.results import Series

    urls = {"worker-0": "http://w0/metrics", "worker-1": "http://w1/metrics", "worker-2": "http://w2/metrics"}
    series = [
        Series("http://w0/metrics", "vllm:kv_cache_usage_perc", {}, [[0, 0.2], [1, 0.4]]),  # mean 0.3
        Series("http://w1/metrics", "vllm:kv_cache_usage_perc", {}, [[0, 0.3]]),
        Series("http://w2/metrics", "vllm:gpu_cache_usage_perc", {}, [[0, 0.9]]),  # legacy name counts too
        Series("http://w0/metrics", "vllm:num_requests_waiting", {}, [[0, 7.0]]),  # not KV
    ]
    means = kv_means(series, urls)
    assert means == pytest.approx({"worker-0": 0.3, "worker-1": 0.3, "worker-2": 0.9})
    row = DemoRow("aimd/prefix-affinity", 1, 0, 1.0, 1, 1.0, 1.0, 0, 0, 1, 0.5, kv_means=means)
    assert round(row.kv_skew_points or 0, 1) == 40.0  # 90 % against a fleet mean of 50 %
    out = format_table([row])
    assert "kv skew pt" in out.splitlines()[0]
    assert "busiest replica +40.0 pt above the fleet mean (target <= 20): OVER" in out
    row.kv_means = {"worker-0": 0.3, "worker-1": 0.4}
    assert "+5.0 pt above the fleet mean (target <= 20): ok" in format_table([row])
