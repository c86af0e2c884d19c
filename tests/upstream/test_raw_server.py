"""Edge cases that need exact bytes on the wire: scripted raw TCP servers."""

from __future__ import annotations

import asyncio

import pytest

from concurproxy.upstream.http1 import UpstreamDisconnected, UpstreamPool, UpstreamProtocolError

from .servers import raw_server, read_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_stale_keepalive_get_is_retried_once_on_a_fresh_connection() -> None:
    """GET is idempotent: sent again on a new connection when a reused one closes unanswered."""
    conns: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        conns.append(idx)
        await read_request(reader)
        writer.write(OK)  # keep-alive answer...
        await writer.drain()
        await read_request(reader)  # ...then the next request on it finds the connection closing

    pool = UpstreamPool(max_per_host=4)
    async with raw_server(script) as target:
        try:
            for _ in range(2):
                async with await pool.request("GET", target, "/", None, b"") as resp:
                    assert await resp.read() == b"ok"
            assert conns == [0, 1]  # the second request went to conn 0, failed unanswered, then conn 1
        finally:
            await pool.close()


async def test_fresh_connection_closed_without_answer_is_an_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)

    pool = UpstreamPool(max_per_host=4)
    async with raw_server(script) as target:
        try:
            with pytest.raises(UpstreamDisconnected) as ei:
                await pool.request("POST", target, "/", None, b"x")
            assert ei.value.got_bytes is False
            assert pool.stats()[f"{target[0]}:{target[1]}"] == (0, 0, 0)
        finally:
            await pool.close()


@pytest.mark.parametrize(
    ("answer", "where"),
    [
        (b"HTTP/1.1 abc OK\r\n\r\n", "head"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000, "head"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", "body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX", "body"),
    ],
)
async def test_malformed_response_is_a_protocol_error(answer: bytes, where: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.Event().wait()  # keep the socket open: the error must come from parsing

    pool = UpstreamPool(max_per_host=2)
    async with raw_server(script) as target:
        try:
            with pytest.raises(UpstreamProtocolError):
                resp = await pool.request("POST", target, "/", None, b"", read_timeout_s=5)
                assert where == "body"
                async with resp:
                    await resp.read()
            assert pool.stats()[f"{target[0]}:{target[1]}"] == (0, 0, 0)
        finally:
            await pool.close()


async def test_body_until_close_and_interim_1xx() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ")
        await writer.drain()
        writer.write(b"second")
        await writer.drain()

    pool = UpstreamPool(max_per_host=2)
    async with raw_server(script) as target:
        try:
            async with await pool.request("POST", target, "/", None, b"") as resp:
                assert resp.status == 200 and resp.version == "1.0"
                assert await resp.read() == b"first second"
            assert pool.stats()[f"{target[0]}:{target[1]}"] == (0, 0, 0)
        finally:
            await pool.close()


async def test_truncated_content_length_body_is_disconnected() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    pool = UpstreamPool(max_per_host=2)
    async with raw_server(script) as target:
        try:
            resp = await pool.request("POST", target, "/", None, b"")
            with pytest.raises(UpstreamDisconnected) as ei:
                await resp.read()
            assert ei.value.got_bytes
            resp.release()
        finally:
            await pool.close()


async def test_204_and_head_have_no_body_and_keep_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")  # HEAD: length but no body
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.Event().wait()

    pool = UpstreamPool(max_per_host=1)
    async with raw_server(script) as target:
        try:
            async with await pool.request("DELETE", target, "/", None, b"") as resp:
                assert resp.status == 204 and await resp.read() == b""
            async with await pool.request("HEAD", target, "/", None, b"") as resp:
                assert resp.headers["content-length"] == "1000" and await resp.read() == b""
            async with await pool.request("GET", target, "/", None, b"") as resp:
                assert await resp.read() == b"ok"
            assert pool.stats()[f"{target[0]}:{target[1]}"] == (1, 1, 0)
        finally:
            await pool.close()


async def test_reused_connection_already_closing_is_retried() -> None:
    conns: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        conns.append(idx)
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.Event().wait()

    pool = UpstreamPool(max_per_host=4)
    async with raw_server(script) as target:
        try:
            async with await pool.request("POST", target, "/", None, b"x") as resp:
                assert await resp.read() == b"ok"
            hp = next(iter(pool._hosts.values()))
            stale = hp.idle[-1]
            assert stale.transport is not None
            stale.transport.close()  # closing, connection_lost not delivered yet; still on the idle stack
            async with await pool.request("POST", target, "/", None, b"x") as resp:
                assert await resp.read() == b"ok"
            assert conns == [0, 1]
            assert pool.stats()[f"{target[0]}:{target[1]}"] == (1, 1, 0)
        finally:
            await pool.close()
