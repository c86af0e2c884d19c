"""Streaming: backpressure on a slow consumer, abort reaching the server, server-side idle closes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from concurproxy.upstream.http1 import UpstreamPool

from .servers import Peers, aiohttp_server

CHUNK = b"x" * 65536
N_CHUNKS = 512  # 32 MiB: far more than loopback socket buffers can hold


async def test_slow_consumer_pauses_upstream() -> None:
    written = 0
    done = asyncio.Event()

    async def flood(req: web.Request) -> web.StreamResponse:
        nonlocal written
        out = web.StreamResponse()
        await out.prepare(req)
        for _ in range(N_CHUNKS):
            await out.write(CHUNK)
            written += len(CHUNK)
        await out.write_eof()
        done.set()
        return out

    app = web.Application()
    app.router.add_post("/flood", flood)
    high = 128 * 1024
    pool = UpstreamPool(max_per_host=1, high_water=high)
    async with aiohttp_server(app, shutdown_timeout=0.1) as url:
        try:
            resp = await pool.request("POST", url, "/flood", None, b"")
            conn = resp._conn
            assert conn is not None
            for _ in range(500):  # until the client stopped reading
                if conn._paused:
                    break
                await asyncio.sleep(0.002)
            assert conn._paused
            for _ in range(20):  # give the server time to run ahead, if it could
                await asyncio.sleep(0.005)
            assert conn._buffered <= high + 256 * 1024  # bounded: one read past the mark at most
            assert written < N_CHUNKS * len(CHUNK) and not done.is_set()  # the server is blocked by TCP
            total = 0
            async for chunk in resp.iter_chunks():
                total += len(chunk)
                assert len(chunk) <= high + 256 * 1024
            assert total == N_CHUNKS * len(CHUNK)
            await asyncio.wait_for(done.wait(), 5)
            resp.release()
            assert pool.stats()[url.removeprefix("http://")] == (1, 1, 0)
        finally:
            await pool.close()


async def test_abort_mid_stream_server_sees_disconnect() -> None:
    gone = asyncio.Event()
    sent = 0

    async def endless(req: web.Request) -> web.StreamResponse:
        nonlocal sent
        out = web.StreamResponse()
        out.content_type = "text/event-stream"
        await out.prepare(req)
        try:
            while True:
                await out.write(b"data: tok\n\n")
                sent += 1
                await asyncio.sleep(0.001)
        except (ConnectionResetError, asyncio.CancelledError):
            gone.set()
            raise

    app = web.Application()
    app.router.add_post("/gen", endless)
    pool = UpstreamPool(max_per_host=2)
    async with aiohttp_server(app, shutdown_timeout=0.1) as url:
        try:
            resp = await pool.request("POST", url, "/gen", None, b"")
            n = 0
            async for _ in resp.iter_chunks():
                n += 1
                if n == 3:
                    break
            resp.close()
            await asyncio.wait_for(gone.wait(), 5)
            assert pool.stats()[url.removeprefix("http://")] == (0, 0, 0)
        finally:
            await pool.close()


async def test_server_closing_idle_connections_is_transparent() -> None:
    peers = Peers()
    transports: list[asyncio.Transport] = []

    async def echo(req: web.Request) -> web.Response:
        peers.note(req)
        assert req.transport is not None
        transports.append(req.transport)
        return web.Response(body=await req.read())

    app = web.Application()
    app.router.add_post("/echo", echo)
    pool = UpstreamPool(max_per_host=4)
    async with aiohttp_server(app, shutdown_timeout=0.1) as url:
        key = url.removeprefix("http://")
        try:
            async with await pool.request("POST", url, "/echo", None, b"1") as resp:
                assert await resp.read() == b"1"
            assert pool.stats()[key] == (1, 1, 0)
            for t in transports:
                t.close()  # the server drops its keep-alive connections
            for _ in range(500):
                if pool.stats()[key] == (0, 0, 0):
                    break
                await asyncio.sleep(0.002)
            assert pool.stats()[key] == (0, 0, 0)  # the pool noticed and forgot the dead connection
            async with await pool.request("POST", url, "/echo", None, b"2") as resp:
                assert await resp.read() == b"2"
            assert len(peers.seen) == 2
        finally:
            await pool.close()
