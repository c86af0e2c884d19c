"""When a request may be re-sent on another connection (issue 21 item 4).

A request the server may have read is never sent twice unless its method is idempotent (a
second POST is a second generation on the GPU).
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from concurproxy.upstream.http1 import UpstreamDisconnected, UpstreamPool

from .servers import raw_server, read_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
FRESH = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashing or restarting server does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _key(target: tuple[str, int]) -> str:
    return f"{target[0]}:{target[1]}"


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_post_the_server_may_have_read_is_not_sent_again(how: str) -> None:
    """A reused connection closes after the server read the POST, before any response byte:
    the old pool re-sent it on a fresh connection (the server received it twice)."""
    received: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        while True:
            body = await read_request(reader)
            received.append((idx, body))
            if body == b"second" and idx == 0:
                if how == "rst":
                    _reset(writer)
                return  # raw_server closes the writer: FIN
            writer.write(OK)
            await writer.drain()

    pool = UpstreamPool(max_per_host=4)
    async with raw_server(script) as target:
        try:
            async with await pool.request("POST", target, "/", None, b"first") as resp:
                assert await resp.read() == b"ok"
            with pytest.raises(UpstreamDisconnected) as ei:
                await pool.request("POST", target, "/", None, b"second")
            assert ei.value.sent is True and ei.value.got_bytes is False
            await asyncio.sleep(0.05)  # a re-sent request would have arrived by now
            assert received == [(0, b"first"), (0, b"second")]  # once
            assert pool.stats()[_key(target)] == (0, 0, 0)
        finally:
            await pool.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_idempotent_request_is_sent_once_more_on_a_fresh_connection(method: str) -> None:
    received: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        received.append(idx)
        if idx == 0:
            writer.write(OK)
            await writer.drain()
            await read_request(reader)
            received.append(idx)
            _reset(writer)
            return
        writer.write(FRESH)
        await writer.drain()
        await asyncio.Event().wait()

    pool = UpstreamPool(max_per_host=4)
    async with raw_server(script) as target:
        try:
            async with await pool.request(method, target, "/", None, b"") as resp:
                assert await resp.read() == b"ok"
            async with await pool.request(method, target, "/", None, b"") as resp:
                assert await resp.read() == b"fresh"
            assert received == [0, 0, 1]
        finally:
            await pool.close()


async def test_server_closing_the_idle_connection_before_the_write_resends_a_post() -> None:
    """Nothing was written (the FIN came while the connection sat idle): any method may go again."""
    received: list[int] = []
    closed = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        received.append(idx)
        if idx == 0:
            writer.write(OK)
            await writer.drain()
            closed.set()
            return  # FIN while the client holds the connection idle
        writer.write(FRESH)
        await writer.drain()
        await asyncio.Event().wait()

    pool = UpstreamPool(max_per_host=4)
    async with raw_server(script) as target:
        try:
            async with await pool.request("POST", target, "/", None, b"a") as resp:
                assert await resp.read() == b"ok"
            await closed.wait()
            hp = next(iter(pool._hosts.values()))
            for _ in range(200):  # until the FIN reached the client's transport (it is closing)
                if not hp.idle or hp.idle[-1].transport is None or hp.idle[-1].transport.is_closing():
                    break
                await asyncio.sleep(0.001)
            async with await pool.request("POST", target, "/", None, b"b") as resp:
                assert await resp.read() == b"fresh"
            assert received == [0, 1]
        finally:
            await pool.close()


def test_idle_timeout_default_is_below_uvicorns_keep_alive() -> None:
    assert UpstreamPool().idle_timeout_s < 5.0  # uvicorn (vLLM) closes idle connections after 5 s
