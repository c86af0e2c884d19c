"""The pressure poller and the metrics parser read the real engine's /metrics.

Load: rounds of 8 concurrent streamed requests of 500 tokens (``ignore_eos``) sharing a 3-block
prompt prefix, sent straight to the engine (5 blocks each: more than the 12-block cache holds),
while the poller reads ``/metrics`` every 50 ms; one more read is taken as soon as every stream
has sent its first token. A round lasts ~1-3 s, but vLLM's API server can deliver tokens after
the engine core has already finished, so instead of trusting timing the test repeats the round
(at most 5 times) until a snapshot has seen the engine busy: KV usage above 0 and requests
running. Every snapshot must be a good reading. The parsed counters must show exactly the
generated tokens, prefix-cache queries and hits (whole 128-token blocks), and the capacity from
``vllm:cache_config_info``, and the prefill and inter-token latency histograms (what a prefill
costs in decode iterations, ``signals/cost.py``) count every request.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx
import orjson

from concurproxy.control.types import PressureSnapshot
from concurproxy.signals.cost import FIELDS as COST_FIELDS
from concurproxy.signals.cost import PrefillCost
from concurproxy.signals.engine_metrics import EngineSample, parse_engine_metrics
from concurproxy.signals.poller import PressurePoller
from scripts.vllm.engines import Engine

N_REQ, MAX_TOKENS = 8, 500
SHARED = " ".join(f"word{i}" for i in range(100))  # ~400 tokens: 3 full blocks of 128


async def _stream(c: httpx.AsyncClient, url: str, i: int, first: asyncio.Event) -> int:
    body = {"model": "tiny", "prompt": f"{SHARED} request {i}", "max_tokens": MAX_TOKENS, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    tokens = 0
    async with c.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            first.set()
            doc = orjson.loads(line[6:])
            if doc.get("usage"):
                tokens = int(doc["usage"]["completion_tokens"])
    return tokens


async def _metrics(url: str) -> EngineSample:
    async with httpx.AsyncClient() as c:
        return parse_engine_metrics((await c.get(url + "/metrics")).text, time.monotonic())


async def _round(c: httpx.AsyncClient, poller: PressurePoller, url: str) -> tuple[list[int], PressureSnapshot]:
    firsts = [asyncio.Event() for _ in range(N_REQ)]
    streams = [asyncio.create_task(_stream(c, url, i, firsts[i])) for i in range(N_REQ)]
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), timeout=120)
    snap = await poller.poll_replica("r0")
    return await asyncio.wait_for(asyncio.gather(*streams), timeout=180), snap


def _busy(s: PressureSnapshot) -> bool:
    return s.ok and (s.kv_usage or 0.0) > 0.0 and (s.running or 0) >= 1


async def test_poller_reads_real_metrics(engine: Engine) -> None:
    seen: list[PressureSnapshot] = []
    before = await _metrics(engine.url)
    rounds = 0
    async with aiohttp.ClientSession() as session, httpx.AsyncClient(timeout=120) as c:
        poller = PressurePoller(
            session, {"r0": engine.url + "/metrics"}, interval_s=0.05, stale_after_s=5.0,
            on_snapshot=lambda _rid, snap: seen.append(snap),
        )  # fmt: skip
        async with poller:
            while rounds < 5 and not any(_busy(s) for s in seen):
                done, _ = await _round(c, poller, engine.url)
                rounds += 1
                assert done == [MAX_TOKENS] * N_REQ
        latest = poller.latest("r0")
    busy = [s for s in seen if _busy(s)]
    assert busy, f"no poll saw the engine busy in {rounds} rounds"
    assert all(0.0 < s.kv_usage <= 1.0 for s in busy if s.kv_usage is not None)
    assert all(s.kv_capacity_tokens == engine.blocks * 128 for s in busy)
    assert all(s.source == "engine-metrics" and s.waiting is not None for s in busy)
    assert latest is not None and latest.ok
    assert all(s.ok for s in seen), [s.error for s in seen if not s.ok]
    assert any(s.prefix_hit_rate is not None for s in seen)

    after = await _metrics(engine.url)
    assert after.flavour == "vllm"
    assert after.num_gpu_blocks == engine.blocks and after.block_size == 128
    assert after.preemptions_total is not None
    generated = (after.generation_tokens_total or 0) - (before.generation_tokens_total or 0)
    assert generated == rounds * N_REQ * MAX_TOKENS
    queries = (after.prefix_queries_total or 0) - (before.prefix_queries_total or 0)
    hits = (after.prefix_hits_total or 0) - (before.prefix_hits_total or 0)
    assert queries >= rounds * N_REQ * 3 * 128
    assert hits >= 128 and hits % 128 == 0  # counted per full 128-token block
    # what a prefill costs in decode iterations (signals/cost.py): the engine's latency histograms parse
    assert (after.prefills_total or 0) - (before.prefills_total or 0) == rounds * N_REQ
    assert (after.itls_total or 0) - (before.itls_total or 0) >= rounds * N_REQ * (MAX_TOKENS - 2)
    cost = PrefillCost(min_prefills=1)
    cost.observe(0.0, tuple(getattr(before, f) for f in COST_FIELDS))
    ratio = cost.observe(0.0, tuple(getattr(after, f) for f in COST_FIELDS))
    assert ratio is not None and ratio > 0.0
    print(f"\nprefill / inter-token latency on tiny: {ratio:.1f}")
