from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from concurproxy.control.types import PressureSnapshot
from concurproxy.signals.poller import PollTarget, PressurePoller

FIX = Path(__file__).parent / "fixtures"


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Canned:
    """What the fake engine answers next: a status and a body."""

    def __init__(self, body: str, status: int = 200, content_type: str = "text/plain") -> None:
        self.body, self.status, self.content_type = body, status, content_type
        self.hits = 0
        self.delay = 0.0
        self.release = asyncio.Event()  # set at teardown: a delayed handler returns at once


@asynccontextmanager
async def serve(canned: Canned) -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        canned.hits += 1
        if canned.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(canned.release.wait(), canned.delay)
        return web.Response(text=canned.body, status=canned.status, content_type=canned.content_type)

    app = web.Application()
    app.router.add_get("/metrics", handler)
    app.router.add_get("/pressure", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        canned.release.set()
        await runner.cleanup()


def vllm_body(running: int, preempt: int, queries: int, hits: int) -> str:
    return (
        f'vllm:num_requests_running{{engine="0"}} {running}\n'
        'vllm:num_requests_waiting{engine="0"} 0\n'
        'vllm:kv_cache_usage_perc{engine="0"} 0.5\n'
        f'vllm:num_preemptions_total{{engine="0"}} {preempt}\n'
        f'vllm:prefix_cache_queries_total{{engine="0"}} {queries}\n'
        f'vllm:prefix_cache_hits_total{{engine="0"}} {hits}\n'
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_target_kind_from_url() -> None:
    assert PollTarget.from_url("http://a:8000/metrics").kind == "engine-metrics"
    assert PollTarget.from_url("http://a:9400/pressure").kind == "node-agent"
    assert PollTarget.from_url("http://a:9400/pressure/").kind == "node-agent"


async def test_polls_metrics_and_computes_rates_on_injected_clock() -> None:
    canned = Canned(vllm_body(4, 0, 1000, 500))
    clock = FakeClock()
    seen: list[tuple[str, PressureSnapshot]] = []
    async with serve(canned) as base, aiohttp.ClientSession() as session:
        poller = PressurePoller(
            session,
            {"r0": base + "/metrics"},
            interval_s=0.25,
            clock=clock,
            rate_window_s=0.0,
            on_snapshot=lambda rid, s: seen.append((rid, s)),
        )
        first = (await poller.poll_once())["r0"]
        assert first.ok and first.ts == 100.0 and first.running == 4 and first.preemptions_per_s is None
        clock.t = 100.5
        canned.body = vllm_body(6, 3, 1400, 600)
        snap = (await poller.poll_once())["r0"]
    assert snap.ok and snap.running == 6 and snap.source == "engine-metrics"
    assert snap.preemptions_per_s == pytest.approx(6.0)
    assert snap.prefix_hit_rate == pytest.approx(0.25)
    assert [rid for rid, _ in seen] == ["r0", "r0"] and seen[-1][1] == snap
    clock.t = 102.0
    latest = poller.latest("r0")
    assert latest is not None and not latest.ok and "stale" in (latest.error or "")
    assert poller.latest("nope") is None
    stats = poller.stats("r0")
    assert stats is not None and (stats.polls, stats.failures) == (2, 0)


async def test_failing_url_counts_failures_and_is_not_ok() -> None:
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        poller = PressurePoller(
            session, {"dead": f"http://127.0.0.1:{free_port()}/metrics"}, clock=clock, timeout_s=2.0
        )
        s1 = await poller.poll_replica("dead")
        s2 = await poller.poll_replica("dead")
    assert not s1.ok and not s2.ok and "ClientConnectorError" in (s2.error or "")
    stats = poller.stats("dead")
    assert stats is not None and (stats.failures, stats.consecutive_failures) == (2, 2)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ("<html>oops</html>", 200, "no vllm: or sglang:"),
        ("busy", 503, "HTTP 503"),
        ("vllm:num_requests_running x\n", 200, "bad value"),
    ],
)
async def test_garbage_and_http_errors_are_failures(body: str, status: int, fragment: str) -> None:
    async with serve(Canned(body, status)) as base, aiohttp.ClientSession() as session:
        poller = PressurePoller(session, {"r": base + "/metrics"}, clock=FakeClock())
        snap = await poller.poll_replica("r")
    assert not snap.ok and fragment in (snap.error or "")


async def test_timeout_is_a_failure() -> None:
    canned = Canned(vllm_body(1, 0, 0, 0))
    canned.delay = 1.0
    async with serve(canned) as base, aiohttp.ClientSession() as session:
        poller = PressurePoller(session, {"slow": base + "/metrics"}, timeout_s=0.05, clock=FakeClock())
        snap = await poller.poll_replica("slow")
    assert not snap.ok and "Timeout" in (snap.error or "")


async def test_node_agent_feed_is_restamped_on_local_clock() -> None:
    feed = (
        '{"version": 1, "time": 1.7e9, "engine": {"ok": true, "error": null, "age_s": 0.2, "kv_usage": 0.9,'
        ' "running": 5, "waiting": 2, "preemptions_per_s": 1.5, "prefix_hit_rate": 0.4,'
        ' "kv_capacity_tokens": 4096}, "nvml": {"available": false, "error": "no driver", "gpus": []}}'
    )
    bad_feed = '{"version": 1, "engine": {"ok": false, "error": "engine down", "age_s": 0.0}}'
    canned = Canned(feed, content_type="application/json")
    async with serve(canned) as base, aiohttp.ClientSession() as session:
        poller = PressurePoller(session, {"n": base + "/pressure"}, clock=FakeClock(50.0))
        snap = await poller.poll_replica("n")
        assert snap == PressureSnapshot(
            ts=pytest.approx(49.8),
            ok=True,
            kv_usage=0.9,
            running=5,
            waiting=2,
            preemptions_per_s=1.5,
            prefix_hit_rate=0.4,
            kv_capacity_tokens=4096,
            source="node-agent",
        )
        canned.body = bad_feed
        down = await poller.poll_replica("n")
        assert (down.ok, down.error) == (False, "engine down")
        canned.body = '{"version": 99}'
        wrong = await poller.poll_replica("n")
        assert not wrong.ok and "unsupported feed version" in (wrong.error or "")
        canned.body = "not json"
        assert not (await poller.poll_replica("n")).ok


async def test_background_loop_polls_all_replicas_and_survives_a_bad_hook() -> None:
    a, b = Canned(vllm_body(1, 0, 0, 0)), Canned(vllm_body(2, 0, 0, 0))
    got: asyncio.Queue[str] = asyncio.Queue()

    async def hook(rid: str, snap: PressureSnapshot) -> None:
        await got.put(rid)
        if rid == "b":
            raise RuntimeError("consumer bug")

    async with serve(a) as ua, serve(b) as ub, aiohttp.ClientSession() as session:
        poller = PressurePoller(
            session, {"a": ua + "/metrics", "b": ub + "/metrics"}, interval_s=0.01, on_snapshot=hook
        )
        async with poller:
            seen = {await asyncio.wait_for(got.get(), 5) for _ in range(6)}
        assert seen == {"a", "b"}
        assert poller.hook_errors >= 1
        assert {rid: s.running for rid, s in poller.snapshots().items()} == {"a": 1, "b": 2}
        hits = a.hits
        await asyncio.sleep(0.05)  # stopped: no more polls (not a correctness wait; checks nothing runs)
        assert a.hits == hits


async def test_add_and_remove_targets() -> None:
    async with aiohttp.ClientSession() as session:
        poller = PressurePoller(session, {}, clock=FakeClock())
        poller.add_target("x", PollTarget("http://127.0.0.1:1/pressure", "node-agent"))
        assert poller.replica_ids == ["x"]
        poller.remove_target("x")
        assert poller.replica_ids == [] and await poller.poll_once() == {}


async def test_a_slow_replica_does_not_delay_the_others_and_new_targets_start_polling() -> None:
    fast, slow, late = (
        Canned(vllm_body(1, 0, 0, 0)),
        Canned(vllm_body(2, 0, 0, 0)),
        Canned(vllm_body(3, 0, 0, 0)),
    )
    slow.delay = 30.0
    polled: asyncio.Queue[str] = asyncio.Queue()
    async with serve(fast) as uf, serve(slow) as us, serve(late) as ul, aiohttp.ClientSession() as session:
        poller = PressurePoller(
            session,
            {"fast": uf + "/metrics", "slow": us + "/metrics"},
            interval_s=0.01,
            timeout_s=60.0,
            on_snapshot=lambda rid, s: polled.put_nowait(rid),
        )
        async with poller:
            for _ in range(5):
                assert await asyncio.wait_for(polled.get(), 5) == "fast"  # "slow" never answers meanwhile
            poller.add_target("late", ul + "/metrics")
            while await asyncio.wait_for(polled.get(), 5) != "late":
                pass
            poller.remove_target("fast")
        snaps = poller.snapshots()
    assert set(snaps) == {"slow", "late"} and snaps["late"].running == 3
    assert not snaps["slow"].ok and snaps["slow"].error == "no data yet"
