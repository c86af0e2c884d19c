"""Pool slot accounting: waiting for a slot, cancelled waiters, hand-over on release, close, connect failure."""

from __future__ import annotations

import asyncio
import socket

import pytest

from concurproxy.upstream.http1 import UpstreamConnectError, UpstreamPool

from .servers import raw_server, read_request


async def _serve_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
    while True:
        body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()


async def _until(cond: object, what: str) -> None:
    for _ in range(1000):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never reached: {what}")


async def test_waiters_get_the_released_connection_and_cancelled_waiters_leave() -> None:
    pool = UpstreamPool(max_per_host=1)
    async with raw_server(_serve_forever) as target:
        key = f"{target[0]}:{target[1]}"
        try:
            first = await pool.request("POST", target, "/", None, b"1")
            assert await first.read() == b"1"  # body done, connection still leased
            cancelled = asyncio.create_task(pool.request("POST", target, "/", None, b"2"))
            waiting = asyncio.create_task(pool.request("POST", target, "/", None, b"3"))
            await _until(lambda: pool.stats()[key] == (1, 0, 2), "two waiters")
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            first.release()  # handed straight to the remaining waiter
            resp = await waiting
            assert await resp.read() == b"3"
            resp.release()
            assert pool.stats()[key] == (1, 1, 0)
        finally:
            await pool.close()


async def test_close_fails_waiters_and_aborts_leased() -> None:
    pool = UpstreamPool(max_per_host=1)
    async with raw_server(_serve_forever) as target:
        key = f"{target[0]}:{target[1]}"
        leased = await pool.request("POST", target, "/", None, b"1")
        waiter = asyncio.create_task(pool.request("POST", target, "/", None, b"2"))
        await _until(lambda: pool.stats()[key] == (1, 0, 1), "one waiter")
        await pool.close()
        with pytest.raises(UpstreamConnectError):
            await waiter
        leased.release()
        with pytest.raises(UpstreamConnectError):
            await pool.request("POST", target, "/", None, b"3")


async def test_connect_failure_passes_the_slot_on() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    pool = UpstreamPool(max_per_host=1)
    try:
        results = await asyncio.gather(
            *(pool.request("POST", ("127.0.0.1", port), "/", None, b"") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, UpstreamConnectError) for r in results)
        assert pool.stats()[f"127.0.0.1:{port}"] == (0, 0, 0)
    finally:
        await pool.close()


async def test_base_url_prefix_and_host_header() -> None:
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.Event().wait()

    pool = UpstreamPool()
    async with raw_server(script) as (host, port):
        try:
            async with await pool.request("GET", f"http://{host}:{port}/api/", "/v1/models") as resp:
                assert resp.status == 200 and await resp.read() == b""
            assert seen[0].startswith(b"GET /api/v1/models HTTP/1.1\r\n")
            assert f"Host: {host}:{port}\r\n".encode() in seen[0]
            with pytest.raises(ValueError):
                await pool.request("GET", "https://example.invalid", "/")
        finally:
            await pool.close()


async def test_dropped_response_frees_its_slot() -> None:
    pool = UpstreamPool(max_per_host=1)
    async with raw_server(_serve_forever) as target:
        key = f"{target[0]}:{target[1]}"
        try:
            resp = await pool.request("POST", target, "/", None, b"1")
            assert pool.stats()[key] == (1, 0, 0)
            del resp  # never released: the finaliser aborts the connection and frees the slot
            assert pool.stats()[key] == (0, 0, 0)
            async with await pool.request("POST", target, "/", None, b"2") as again:
                assert await again.read() == b"2"
        finally:
            await pool.close()
