"""The pressure poller and the metrics parser read the real engine's /metrics.

Load: 8 concurrent long requests (``ignore_eos``) sent straight to the engine while the poller
runs; the snapshots must show the engine busy (KV usage above 0, requests running) and the
capacity read from ``vllm:cache_config_info``; the parsed counters must show prefix-cache
queries and hits (the requests share a 2-block prefix) and generated tokens.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx

from concurproxy.control.types import PressureSnapshot
from concurproxy.signals.engine_metrics import parse_engine_metrics
from concurproxy.signals.poller import PressurePoller
from scripts.vllm.engines import Engine

SHARED = " ".join(f"word{i}" for i in range(100))  # > 2 blocks of 128 tokens


async def _load(url: str, n: int, max_tokens: int) -> list[int]:
    async with httpx.AsyncClient(timeout=120) as c:

        async def one(i: int) -> int:
            body = {"model": "tiny", "prompt": f"{SHARED} request {i}", "max_tokens": max_tokens,
                    "ignore_eos": True}  # fmt: skip
            r = await c.post(url + "/v1/completions", json=body)
            r.raise_for_status()
            return int(r.json()["usage"]["completion_tokens"])

        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_poller_reads_real_metrics(engine: Engine) -> None:
    seen: list[PressureSnapshot] = []
    async with httpx.AsyncClient() as c:
        before = parse_engine_metrics((await c.get(engine.url + "/metrics")).text, time.monotonic())
    async with aiohttp.ClientSession() as session:
        poller = PressurePoller(
            session, {"r0": engine.url + "/metrics"}, interval_s=0.05, stale_after_s=5.0,
            on_snapshot=lambda _rid, snap: seen.append(snap),
        )  # fmt: skip
        async with poller:
            done = await asyncio.wait_for(_load(engine.url, 8, 200), timeout=180)
        latest = poller.latest("r0")
    assert done == [200] * 8
    assert latest is not None and latest.ok, latest
    assert latest.kv_capacity_tokens == engine.blocks * 128
    ok = [s for s in seen if s.ok]
    assert ok and all(s.source == "engine-metrics" for s in ok)
    assert max(s.kv_usage or 0.0 for s in ok) > 0.0
    assert max(s.running or 0 for s in ok) >= 1
    assert all(s.waiting is not None for s in ok)
    assert any(s.prefix_hit_rate is not None for s in ok)

    async with httpx.AsyncClient() as c:
        after = parse_engine_metrics((await c.get(engine.url + "/metrics")).text, time.monotonic())
    assert after.flavour == "vllm"
    assert after.num_gpu_blocks == engine.blocks and after.block_size == 128
    assert after.preemptions_total is not None
    assert (after.generation_tokens_total or 0) - (before.generation_tokens_total or 0) == 8 * 200
    queries = (after.prefix_queries_total or 0) - (before.prefix_queries_total or 0)
    hits = (after.prefix_hits_total or 0) - (before.prefix_hits_total or 0)
    assert queries > 8 * 256
    assert hits >= 128 and hits % 128 == 0  # counted per full 128-token block
