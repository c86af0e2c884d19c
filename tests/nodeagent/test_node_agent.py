from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from concurproxy.nodeagent.agent import NodeAgent, NodeAgentConfig, run_node_agent
from concurproxy.nodeagent.gpu import FakeGpuProbe, GpuProbe, GpuReading, GpuStat
from concurproxy.signals.poller import PressurePoller

FIX = Path(__file__).parents[1] / "signals" / "fixtures"
H100 = GpuReading(available=True, gpus=(GpuStat(0, "NVIDIA H100", "GPU-0", 70 * 2**30, 80 * 2**30, 93, 51),))


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def engine_app(bodies: list[str]) -> web.Application:
    """A fake engine whose /metrics answers bodies[-1] (tests append to move it on)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=bodies[-1])

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def agent_beside(engine_url: str, probe: GpuProbe, clock: Clock) -> AsyncIterator[tuple[NodeAgent, str]]:
    agent = NodeAgent(NodeAgentConfig(engine_url=engine_url), probe, clock=clock, wall=lambda: 1.7e9)
    async with serve_app(agent.build_app(background=False)) as url:
        yield agent, url


async def test_pressure_feed_with_engine_and_fake_gpu() -> None:
    clock = Clock()
    bodies = [(FIX / "vllm_v1.txt").read_text()]
    async with (
        serve_app(engine_app(bodies)) as eng,
        agent_beside(eng, FakeGpuProbe(H100), clock) as (agent, url),
        aiohttp.ClientSession() as s,
    ):
        await agent.scrape_once(s)
        await agent.read_gpus_once()
        clock.t += 0.25
        async with s.get(url + "/pressure") as r:
            assert r.status == 200 and r.content_type == "application/json"
            doc = await r.json()
    eng_doc = doc["engine"]
    assert doc["version"] == 1 and doc["time"] == 1.7e9
    assert (eng_doc["ok"], eng_doc["flavour"], eng_doc["age_s"]) == (True, "vllm", 0.25)
    assert (eng_doc["kv_usage"], eng_doc["running"], eng_doc["waiting"]) == (0.8125, 7, 3)
    assert eng_doc["kv_capacity_tokens"] == 12038 * 16
    assert eng_doc["counters"]["preemptions_total"] == 4.0
    assert doc["nvml"]["available"] is True and doc["nvml"]["age_s"] == 0.25
    assert doc["nvml"]["gpus"][0]["memory_used_bytes"] == 70 * 2**30
    assert doc["nvml"]["gpus"][0]["utilization_pct"] == 93


async def test_rates_between_scrapes_and_prometheus_exposition() -> None:
    clock = Clock()
    v1 = (FIX / "vllm_v1.txt").read_text()
    bodies = [v1]
    async with (
        serve_app(engine_app(bodies)) as eng,
        agent_beside(eng, FakeGpuProbe(H100), clock) as (agent, url),
        aiohttp.ClientSession() as s,
    ):
        await agent.scrape_once(s)
        clock.t += 0.5
        bodies.append(
            v1.replace("} 4.0", "} 6.0").replace("} 90000.0", "} 90300.0").replace("} 120000.0", "} 120400.0")
        )
        await agent.scrape_once(s)
        await agent.read_gpus_once()
        async with s.get(url + "/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    samples = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for fam in text_string_to_metric_families(text)
        for x in fam.samples
    }
    assert samples[("concurproxy_node_engine_up", ())] == 1.0
    assert samples[("concurproxy_node_engine_preemptions_per_second", ())] == pytest.approx(4.0)
    assert samples[("concurproxy_node_engine_prefix_hit_ratio", ())] == pytest.approx(0.75)
    assert samples[("concurproxy_node_engine_scrapes_total", ())] == 2
    assert samples[("concurproxy_node_nvml_available", ())] == 1.0
    key = (("gpu", "0"), ("name", "NVIDIA H100"))
    assert samples[("concurproxy_node_gpu_memory_total_bytes", key)] == 80 * 2**30
    assert samples[("concurproxy_node_gpu_utilization_ratio", key)] == pytest.approx(0.93)


async def test_engine_down_no_driver_keeps_serving() -> None:
    clock = Clock()
    dead = f"http://127.0.0.1:{free_port()}"
    probe = FakeGpuProbe(GpuReading(available=False, error="NVML unavailable: NVML Shared Library Not Found"))
    async with agent_beside(dead, probe, clock) as (agent, url), aiohttp.ClientSession() as s:
        await agent.scrape_once(s)
        await agent.read_gpus_once()
        async with s.get(url + "/pressure") as r:
            doc = await r.json()
        async with s.get(url + "/health") as r:
            assert r.status == 200
            health = await r.json()
        async with s.get(url + "/metrics") as r:
            assert "concurproxy_node_engine_up 0.0" in await r.text()
    assert doc["engine"]["ok"] is False and "ClientConnectorError" in doc["engine"]["error"]
    assert doc["engine"]["failures"] == 1
    assert doc["nvml"] == {
        "available": False,
        "error": "NVML unavailable: NVML Shared Library Not Found",
        "age_s": 0.0,
        "gpus": [],
    }
    assert health["status"] == "ok" and health["engine_ok"] is False


async def test_garbage_engine_and_stale_data() -> None:
    clock = Clock()
    bodies = ["this is not prometheus"]
    async with (
        serve_app(engine_app(bodies)) as eng,
        agent_beside(eng, FakeGpuProbe(), clock) as (agent, url),
        aiohttp.ClientSession() as s,
    ):
        await agent.scrape_once(s)
        assert "no vllm: or sglang:" in (agent.state.tracker.snapshot_at(clock.t).error or "")
        bodies.append((FIX / "sglang.txt").read_text())
        await agent.scrape_once(s)
        assert agent.state.tracker.snapshot_at(clock.t).ok
        clock.t += 5.0
        async with s.get(url + "/pressure") as r:
            doc = await r.json()
    assert doc["engine"]["ok"] is False and doc["engine"]["error"].startswith("stale")
    assert doc["engine"]["flavour"] == "sglang" and doc["engine"]["age_s"] == 5.0


class RaisingProbe:
    def read(self) -> GpuReading:
        raise AttributeError("nvmlDeviceGetSomethingNew")

    def close(self) -> None:
        pass


async def test_a_probe_that_breaks_its_contract_does_not_kill_the_agent() -> None:
    agent = NodeAgent(NodeAgentConfig(engine_url="http://127.0.0.1:1"), RaisingProbe())
    r = await agent.read_gpus_once()
    assert not r.available and "AttributeError" in (r.error or "")


async def test_round_trip_run_node_agent_to_poller() -> None:
    """Background loops on: the proxy's poller reads the agent's /pressure feed."""
    bodies = [(FIX / "vllm_v1.txt").read_text()]
    probe = FakeGpuProbe(H100)
    async with serve_app(engine_app(bodies)) as eng:
        cfg = NodeAgentConfig(engine_url=eng, scrape_interval_s=0.02, gpu_interval_s=0.02)
        async with run_node_agent(eng, port=0, probe=probe, config=cfg) as url, aiohttp.ClientSession() as s:
            poller = PressurePoller(s, {"gpu-node-1": url + "/pressure"}, interval_s=0.05, timeout_s=2.0)
            for _ in range(200):  # wait (bounded) for the agent's first scrape
                snap = await poller.poll_replica("gpu-node-1")
                if snap.ok:
                    break
                await asyncio.sleep(0.01)
    assert snap.ok and snap.source == "node-agent"
    assert (snap.kv_usage, snap.running, snap.waiting, snap.kv_capacity_tokens) == (0.8125, 7, 3, 12038 * 16)
    assert probe.reads >= 1 and probe.closed
