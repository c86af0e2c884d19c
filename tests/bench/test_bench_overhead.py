"""The overhead benchmark's pieces that run without load: CPU accounting, the report table, the paced stub."""

from __future__ import annotations

import os
import sys
import time

import aiohttp
import pytest

from benchmarks.overhead import BODY, cpu_seconds, free_port, process, report
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub


def test_cpu_seconds_counts_this_process_work() -> None:
    before = cpu_seconds(os.getpid())
    t0 = time.process_time()
    while time.process_time() - t0 < 0.05:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.03  # clock ticks are 10 ms


def _point(**extra: float) -> dict[str, float]:
    base = {"rps": 1000.0, "p50_ms": 1.0, "p99_ms": 2.0, "ttft_p50_ms": 3.0, "ttft_mean_ms": 3.5, "ttft_p99_ms": 4.0}
    return {**base, **extra}


def test_report_labels_both_streaming_points_and_the_cpu_ratio() -> None:
    r: dict[str, object] = {"load_client": "wrk", "duration_s": 4}
    for name in ("direct", "proxy", "bare"):
        for key in ("c1", "c32", "stream_c32", "paced_c32"):
            r[f"{name}_{key}"] = _point()
    r["direct_c128"] = _point()
    r["proxy_c128"] = _point(rps=6000.0, cpu_us_per_request=160.0)
    r["bare_c128"] = _point(rps=7000.0, cpu_us_per_request=128.0)
    text = report(r)
    assert "c32, saturated" in text and "c32, engine-like" in text
    assert "proxy/bare throughput ratio at concurrency 128: 0.86; CPU per request proxy/bare 1.25" in text


async def test_paced_stub_waits_the_prefill_before_the_first_chunk() -> None:
    async with running_stub(StubBehaviour(hang_s=0.05, chunk_delay_s=0.01, record=False)) as url:
        async with aiohttp.ClientSession() as s:
            t0 = time.perf_counter()
            async with s.post(f"{url}/v1/chat/completions", json={**BODY, "stream": True, "max_tokens": 3}) as r:
                await r.content.readany()
                first = time.perf_counter() - t0
                rest = await r.read()
            total = time.perf_counter() - t0
    assert first >= 0.05
    assert total >= first + 0.02 and b"[DONE]" in rest


def test_a_server_that_never_becomes_healthy_fails_the_start_instead_of_hanging() -> None:
    """Still running at the deadline: killed, then its stderr is read (reading first waited forever)."""
    url = f"http://127.0.0.1:{free_port()}/health"  # nothing listens there
    cmd = [sys.executable, "-c", "import sys, time; sys.stderr.write('starting'); sys.stderr.flush(); time.sleep(60)"]
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start: starting"), process(cmd, url, start_timeout_s=0.5):
        pass
    assert time.monotonic() - t0 < 30
