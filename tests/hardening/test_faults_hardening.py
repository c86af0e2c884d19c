"""Faults with real processes: replicas killed or frozen mid-stream, broken engine metrics.

Replicas are bundled workers (`concurproxy worker`) or stub upstreams; the
proxy runs in this process so its state can be read; every process is killed
in ``finally`` (`Procs`). Freezing uses SIGSTOP: a real hang, not a scripted one.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from concurproxy.config import load_policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.testing.stub_upstream import StubBehaviour, build_stub_app

from ._procs import Procs, free_port

CHAT = "/v1/chat/completions"
MODEL = "concurworker-tiny"


def body(max_tokens: int, stream: bool = False, model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, "stream": stream}


@asynccontextmanager
async def proxy_to(urls: list[str], **overrides: Any) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    doc = {"upstreams": [{"url": u, "name": f"w{i}"} for i, u in enumerate(urls)], **overrides}
    policy = load_policy(overrides=doc, env={})
    async with running_proxy(policy, build_components(policy)) as url, aiohttp.ClientSession() as s:
        yield url, s


async def settled_state(s: aiohttp.ClientSession, url: str, limit_s: float = 10.0) -> dict[str, Any]:
    """/admin/state once no step is running or waiting (bounded wait for unwinding streams)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        st = await (await s.get(url + "/admin/state")).json()
        reps = st["admission"].get("replicas", {}).values()
        busy = st["admission"].get("waiting_steps", 0) + sum(r["running_steps"] + r["waiting"] for r in reps)
        busy += sum(r["in_flight"] for r in st["replicas"])
        if busy == 0 or loop.time() > deadline:
            return st
        await asyncio.sleep(0.05)


def assert_no_leak(st: dict[str, Any]) -> None:
    assert st["admission"].get("waiting_steps", 0) == 0
    for rid, rep in st["admission"].get("replicas", {}).items():
        assert rep["running_steps"] == 0 and rep["waiting"] == 0, (rid, rep)
    assert all(r["in_flight"] == 0 for r in st["replicas"]), st["replicas"]


def events_of(text: str) -> list[str]:
    return [e.strip() for e in text.split("\n\n") if e.strip()]


async def test_replica_killed_mid_stream_gives_error_event_releases_slot_and_repins():
    with Procs() as procs:
        ports = [free_port(), free_port()]
        workers = [procs.worker(p) for p in ports]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        async with proxy_to(urls, health={"interval_s": 0.2, "timeout_s": 0.5}) as (url, s):
            hdr = {"X-Agent-Id": "victim", "X-Task-Id": "t1"}
            r = await s.post(url + CHAT, json=body(900, stream=True), headers=hdr)
            assert r.status == 200
            victim = r.headers["x-concurproxy-replica"]
            first = await r.content.readline()
            workers[int(victim[1:])].kill()
            events = events_of((first + await r.read()).decode())
            assert events[-1] == "data: [DONE]", events[-3:]
            errors = [orjson.loads(e[6:]) for e in events if e.startswith("data: {") and '"error"' in e]
            assert errors and errors[-1]["error"]["code"], events[-3:]
            assert_no_leak(await settled_state(s, url))
            r2 = await s.post(url + CHAT, json=body(3), headers=hdr)  # the agent's next step
            assert r2.status == 200, await r2.text()
            assert r2.headers["x-concurproxy-replica"] != victim


async def test_frozen_replica_first_byte_and_idle_timeouts_fire():
    with Procs() as procs:
        port = free_port()
        worker = procs.worker(port)
        overrides = {"timeouts": {"first_byte_s": 1.0, "idle_s": 1.0}, "retry": {"attempts": 1}}
        async with proxy_to([f"http://127.0.0.1:{port}"], admission={"controller": "none"}, **overrides) as (url, s):
            # idle: the stream starts, then the engine freezes
            r = await s.post(url + CHAT, json=body(900, stream=True))
            first = await r.content.readline()
            worker.send_signal(signal.SIGSTOP)
            try:
                async with asyncio.timeout(10):
                    events = events_of((first + await r.read()).decode())
                assert events[-1] == "data: [DONE]"
                assert any('"error"' in e for e in events), events[-3:]
                # first byte: the engine is frozen before answering
                async with asyncio.timeout(10):
                    r = await s.post(url + CHAT, json=body(3))
                    assert r.status == 504, await r.text()
                    assert r.headers["Retry-After"].isdigit()
                    assert (await r.json())["error"]["code"] == "upstream_timeout"
            finally:
                worker.send_signal(signal.SIGCONT)
            assert_no_leak(await settled_state(s, url))


@asynccontextmanager
async def stub_with_metrics(mode: str) -> AsyncIterator[str]:
    """A stub upstream whose /metrics answers garbage or never answers."""

    @web.middleware
    async def broken_metrics(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/metrics":
            return await handler(request)
        if mode == "timeout":
            await asyncio.sleep(60)
        return web.Response(body=b"vllm:kv_cache_usage_perc{{{ not prometheus \x00\xff\nNaN NaN NaN\n")

    app = build_stub_app(StubBehaviour())
    app.middlewares.append(broken_metrics)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("mode", ["garbage", "timeout"])
async def test_engine_metrics_broken_from_the_start_are_no_signal_so_latency_leads(mode):
    """Never a usable reading: the replica is led by its step latency (issue 19), not left waiting."""
    async with stub_with_metrics(mode) as up:
        async with proxy_to([up], admission={"max_queue_wait_s": 0.3}) as (url, s):
            r = await s.post(url + CHAT, json=body(3, model="stub-model"), headers={"X-Agent-Id": "a"})
            assert r.status == 200, await r.text()
            st = await s.get(url + "/admin/state")
            rep = (await st.json())["admission"]["replicas"]["w0"]
            assert (rep["saturated"], rep["pressure_source"]) == (False, "latency"), rep
            assert_no_leak(await settled_state(s, url))


@pytest.mark.parametrize("mode", ["garbage", "timeout"])
async def test_broken_engine_metrics_are_stale_so_new_agents_are_throttled(mode):
    """Without a fallback controller, a replica without a usable reading counts as saturated."""
    async with stub_with_metrics(mode) as up:
        async with proxy_to([up], admission={"max_queue_wait_s": 0.3, "fallback_controller": None}) as (url, s):
            r = await s.post(url + CHAT, json=body(3, model="stub-model"), headers={"X-Agent-Id": "a"})
            assert r.status == 503, await r.text()
            assert r.headers["Retry-After"].isdigit() and (await r.json())["error"]["code"]
            st = await s.get(url + "/admin/state")
            rep = (await st.json())["admission"]["replicas"]["w0"]
            assert rep["saturated"] is True, rep
            assert (await s.get(url + "/health")).status == 200  # the proxy itself is fine
            assert_no_leak(await settled_state(s, url))


async def test_clients_vanishing_at_any_point_leak_nothing(proxy_factory):
    """Clients that hang up mid-upload, before the answer, or mid-stream: no slot, queue entry or in-flight left."""
    req = orjson.dumps(
        {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "stream": True}
    )
    behaviours = [StubBehaviour(chunk_delay_s=0.01, record=False), StubBehaviour(chunk_delay_s=0.01, record=False)]
    async with proxy_factory(behaviours=behaviours, limits={"body_read_timeout_s": 0.5}) as h:
        host, port = h.url.removeprefix("http://").rsplit(":", 1)
        for i in range(30):
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Agent-Id: v{i % 7}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(req)}\r\n\r\n"
            ).encode()
            reader, writer = await asyncio.open_connection(host, int(port))
            cut = i % 3
            if cut == 0:  # hangs up mid-upload
                writer.write(head + req[: len(req) // 2])
            else:
                writer.write(head + req)
                if cut == 2:  # reads the first bytes of the stream, then leaves
                    await asyncio.wait_for(reader.read(200), 5)
            await writer.drain()
            writer.close()
        assert_no_leak(await settled_state(h.session, h.url))
        r = await h.post(
            "/v1/chat/completions", {"model": "stub-model", "messages": [{"role": "user", "content": "x"}]}
        )
        assert r.status == 200


async def test_slow_loris_upload_gets_408_promptly(proxy_factory):
    async with proxy_factory(limits={"body_read_timeout_s": 0.5}) as h:
        host, port = h.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        try:
            got = await asyncio.wait_for(reader.read(), 3)  # 0.5 s timeout + generous slack
        except TimeoutError:
            got = b""
        finally:
            writer.close()
        assert got.startswith(b"HTTP/1.1 408"), got[:100]
