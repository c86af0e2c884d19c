"""Engines without a KV signal (issue 19): a replica whose /metrics never answers is led by its step latency
(the ``gradient`` fallback) and never waits on a signal that cannot come; overloaded, the latency-based
limit cuts its concurrency."""

from __future__ import annotations

import asyncio
import time

from concurproxy.testing.poll import wait_until
from concurproxy.testing.stub_upstream import StubBehaviour

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def test_32_concurrent_steps_to_an_engine_without_metrics_all_answer_without_waiting(proxy_factory):
    stub = StubBehaviour(metrics_status=404, hang_s=0.05)  # one engine step: 50 ms
    async with proxy_factory(behaviours=[stub]) as h:

        async def one(i: int) -> tuple[int, float]:
            r = await h.post("/v1/chat/completions", CHAT, headers={"X-Agent-Id": f"a{i}"})
            await r.read()
            return r.status, float(r.headers["x-concurproxy-queue-wait-ms"])

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(32)))
        elapsed = time.perf_counter() - t0
        assert [s for s, _ in results] == [200] * 32
        assert max(w for _, w in results) <= 50.0 + 200.0  # one engine step plus a small bound (none queued)
        assert elapsed < 10  # (before: every step waited for a KV reading and timed out)
        st = (await (await h.session.get(h.url + "/admin/state")).json())["admission"]["replicas"]["r0"]
        assert (st["pressure_source"], st["controller"], st["saturated"]) == ("latency", "gradient", False)
        metrics = await (await h.session.get(h.url + "/metrics")).text()
        assert 'concurproxy_pressure_source{replica="r0",source="latency"} 1.0' in metrics


async def test_an_overloaded_engine_without_metrics_gets_its_concurrency_cut(proxy_factory):
    """An engine that runs 8 steps at once (20 ms each) and queues the rest: 64 closed-loop agents push its
    latency to 8x its unloaded level. The latency-based limit must cut the window (counted, with its reason)
    well below the 64 agents pushing it, not admit everyone."""
    stub = StubBehaviour(metrics_status=404, hang_s=0.02, max_running=8)
    async with proxy_factory(behaviours=[stub], admission={"gradient": {"window_s": 0.5, "probe_interval_s": 5}}) as h:
        stop = asyncio.Event()

        async def agent(i: int) -> None:
            while not stop.is_set():
                r = await h.post("/v1/chat/completions", CHAT, headers={"X-Agent-Id": f"a{i}"})
                await r.read()

        tasks = [asyncio.create_task(agent(i)) for i in range(64)]

        async def cut() -> bool:
            text = await (await h.session.get(h.url + "/metrics")).text()
            st = (await (await h.session.get(h.url + "/admin/state")).json())["admission"]["replicas"]["r0"]
            return 'reason="decrease-latency"' in text and st["window"] <= 32 and not st["counters"].get("probe")

        try:
            await wait_until(
                cut, "the window cut by latency to half the agents or fewer", tries=3000
            )  # <= 30 s (measured: 2-5 s)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
