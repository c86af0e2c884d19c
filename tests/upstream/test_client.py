"""UpstreamPool against real aiohttp servers on 127.0.0.1 (asyncio loop; uvloop in test_uvloop.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from concurproxy.upstream.http1 import (
    UpstreamAborted,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamTimeout,
)

from .servers import Peers, aiohttp_server

SSE = [f'data: {{"i": {i}}}\n\n'.encode() for i in range(5)] + [b"data: [DONE]\n\n"]


def make_app(peers: Peers, release: asyncio.Event) -> web.Application:
    async def echo(req: web.Request) -> web.Response:
        peers.note(req)
        body = await req.read()
        return web.Response(
            body=b"echo:" + body,
            content_type="application/json",
            headers={"X-Seen-Type": req.headers.get("Content-Type", "")},
        )

    async def sse(req: web.Request) -> web.StreamResponse:
        peers.note(req)
        out = web.StreamResponse()
        out.content_type = "text/event-stream"
        await out.prepare(req)
        for ev in SSE:
            await out.write(ev)
        await out.write_eof()
        return out

    async def close(req: web.Request) -> web.Response:
        peers.note(req)
        return web.Response(body=b"bye", headers={"Connection": "close"})

    async def big(req: web.Request) -> web.Response:
        n = int(req.query["n"])
        return web.Response(body=bytes(range(256)) * (n // 256))

    async def hang(req: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"late")

    async def hang_body(req: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        out.content_length = 10
        await out.prepare(req)
        await out.write(b"12345")
        await release.wait()
        return out

    async def slow(req: web.Request) -> web.Response:
        peers.inflight += 1
        peers.max_inflight = max(peers.max_inflight, peers.inflight)
        peers.note(req)
        await asyncio.sleep(0)
        peers.inflight -= 1
        return web.Response(body=req.query["i"].encode())

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    app.router.add_post("/sse", sse)
    app.router.add_post("/close", close)
    app.router.add_get("/big", big)
    app.router.add_post("/hang", hang)
    app.router.add_post("/hang_body", hang_body)
    app.router.add_post("/slow", slow)
    return app


@pytest.fixture
async def env() -> AsyncIterator[tuple[str, Peers, UpstreamPool, asyncio.Event]]:
    peers, release = Peers(), asyncio.Event()
    pool = UpstreamPool(max_per_host=8, connect_timeout_s=2, idle_timeout_s=30)
    async with aiohttp_server(make_app(peers, release), shutdown_timeout=0.1) as url:
        try:
            yield url, peers, pool, release
        finally:
            release.set()
            await pool.close()


async def test_content_length_json_and_reuse(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, peers, pool, _ = env
    for i in range(20):
        async with await pool.request(
            "POST", url, "/echo", {"Content-Type": "application/json"}, b'{"i":%d}' % i, read_timeout_s=5
        ) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            assert resp.headers["x-seen-type"] == "application/json"
            assert resp.headers.get("CONTENT-LENGTH") == str(len(b'echo:{"i":%d}' % i))
            assert await resp.read() == b'echo:{"i":%d}' % i
    assert len(peers.seen) == 1  # one keep-alive connection served all 20
    assert pool.stats()[url.removeprefix("http://")] == (1, 1, 0)


async def test_chunked_sse_iter_chunks(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, _, pool, _ = env
    for _ in range(2):
        async with await pool.request("POST", url, "/sse", None, b"{}") as resp:
            assert resp.headers["transfer-encoding"] == "chunked"
            assert resp.content_type == "text/event-stream"
            got = [c async for c in resp.iter_chunks()]
            assert b"".join(got) == b"".join(SSE)
            assert resp.body_complete
    assert pool.stats()[url.removeprefix("http://")] == (1, 1, 0)


async def test_next_chunk_reads_what_iter_chunks_yields(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, _, pool, _ = env
    async with await pool.request("POST", url, "/sse", None, b"{}") as resp:
        got = []
        while (chunk := await resp.next_chunk()) is not None:
            got.append(chunk)
        assert b"".join(got) == b"".join(SSE) and resp.body_complete
        assert await resp.next_chunk() is None  # stays at the end
    with pytest.raises(RuntimeError):
        resp.next_chunk()  # released


async def test_connection_close_is_not_pooled(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, peers, pool, _ = env
    for _ in range(3):
        async with await pool.request("POST", url, "/close", None, b"") as resp:
            assert await resp.read() == b"bye"
        assert pool.stats()[url.removeprefix("http://")] == (0, 0, 0)
    assert len(peers.seen) == 3


async def test_large_bodies(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, _, pool, _ = env
    n = 4 * 1024 * 1024
    expect = bytes(range(256)) * (n // 256)
    async with await pool.request("GET", url, f"/big?n={n}") as resp:
        assert await resp.read() == expect
    async with await pool.request("GET", url, f"/big?n={n}") as resp:
        assert b"".join([c async for c in resp.iter_chunks()]) == expect
    body = b"z" * (3 * 1024 * 1024)
    async with await pool.request("POST", url, "/echo", None, body) as resp:
        assert await resp.read() == b"echo:" + body
    assert pool.stats()[url.removeprefix("http://")] == (1, 1, 0)


async def test_head_timeout_frees_the_slot(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, _, pool, _ = env
    with pytest.raises(UpstreamTimeout):
        await pool.request("POST", url, "/hang", None, b"", read_timeout_s=0.05)
    assert pool.stats()[url.removeprefix("http://")] == (0, 0, 0)
    async with await pool.request("POST", url, "/echo", None, b"ok", read_timeout_s=5) as resp:
        assert await resp.read() == b"echo:ok"


async def test_body_read_timeout(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, _, pool, _ = env
    async with await pool.request("POST", url, "/hang_body", None, b"", read_timeout_s=5) as resp:
        with pytest.raises(UpstreamTimeout):
            await resp.read(timeout_s=0.05)
    assert pool.stats()[url.removeprefix("http://")] == (0, 0, 0)


async def test_watchdog_abort_wakes_pending_read(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, _, pool, _ = env
    resp = await pool.request("POST", url, "/hang_body", None, b"")
    asyncio.get_running_loop().call_soon(resp.abort)
    with pytest.raises(UpstreamAborted):
        async for _ in resp.iter_chunks():
            pass
    resp.release()
    assert pool.stats()[url.removeprefix("http://")] == (0, 0, 0)


async def test_connect_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    pool = UpstreamPool(max_per_host=2)
    try:
        with pytest.raises(UpstreamConnectError):
            await pool.request("POST", ("127.0.0.1", port), "/", None, b"")
        assert pool.stats()[f"127.0.0.1:{port}"] == (0, 0, 0)
    finally:
        await pool.close()


async def test_concurrency_200_with_pool_limit(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, peers, _, _ = env
    pool = UpstreamPool(max_per_host=10)

    async def one(i: int) -> bytes:
        async with await pool.request("POST", url, f"/slow?i={i}", None, b"") as resp:
            return await resp.read()

    try:
        got = await asyncio.gather(*(one(i) for i in range(200)))
        assert got == [str(i).encode() for i in range(200)]
        assert len(peers.seen) <= 10 and peers.max_inflight <= 10
        total, idle, waiting = pool.stats()[url.removeprefix("http://")]
        assert total == idle <= 10 and waiting == 0
    finally:
        await pool.close()


async def test_cancelled_request_frees_slot(env: tuple[str, Peers, UpstreamPool, asyncio.Event]) -> None:
    url, _, pool, _ = env
    task = asyncio.create_task(pool.request("POST", url, "/hang", None, b""))
    for _ in range(200):  # until the request sits waiting for the head
        await asyncio.sleep(0.005)
        if pool.stats():
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.stats()[url.removeprefix("http://")] == (0, 0, 0)


async def test_idle_timeout_closes_old_connections(
    env: tuple[str, Peers, UpstreamPool, asyncio.Event],
) -> None:
    url, peers, pool, _ = env
    async with await pool.request("POST", url, "/echo", None, b"a") as resp:
        await resp.read()
    hp = next(iter(pool._hosts.values()))
    hp.idle[0].idle_since -= 31  # as if it had idled past idle_timeout_s=30
    async with await pool.request("POST", url, "/echo", None, b"b") as resp:
        await resp.read()
    assert len(peers.seen) == 2
    assert pool.stats()[url.removeprefix("http://")] == (1, 1, 0)
