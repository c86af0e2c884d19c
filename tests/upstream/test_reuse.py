"""When a connection may be reused and a request re-sent (issue 21 items 4, 5 and 6's HTTP/1.0 rule).

A request the server may have read is never sent twice unless its method is idempotent (a
second POST is a second generation on the GPU); a connection whose byte stream is not exactly
one response per request never returns to the pool (the next request may be another tenant's).
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


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_replayable_post_is_sent_once_more_on_a_fresh_connection(how: str) -> None:
    """An inference step (``replayable``) on a reused connection that the server closes unanswered
    (uvicorn's keep-alive timer firing as the request arrives) goes once more on a fresh connection:
    with one replica the proxy has nowhere else to send it. A fresh connection that closes the same
    way is an error: the repeat happens once."""
    received: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        while True:
            body = await read_request(reader)
            received.append((idx, body))
            if (body == b"second" and idx == 0) or body == b"third":
                if how == "rst":
                    _reset(writer)
                return
            writer.write(FRESH if idx else OK)
            await writer.drain()

    pool = UpstreamPool(max_per_host=4)
    async with raw_server(script) as target:
        try:
            async with await pool.request("POST", target, "/", None, b"first", replayable=True) as resp:
                assert await resp.read() == b"ok"
            async with await pool.request("POST", target, "/", None, b"second", replayable=True) as resp:
                assert await resp.read() == b"fresh"
            assert received == [(0, b"first"), (0, b"second"), (1, b"second")]
            with pytest.raises(UpstreamDisconnected) as ei:  # reused conn 1, then a fresh conn 2: both close
                await pool.request("POST", target, "/", None, b"third", replayable=True)
            assert ei.value.sent is True and ei.value.got_bytes is False
            assert received[3:] == [(1, b"third"), (2, b"third")]
            assert pool.stats()[_key(target)] == (0, 0, 0)
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


@pytest.mark.parametrize(
    "first",
    [
        b"HTTP/1.1 204 No Content\r\nContent-Length: 47\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 47\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["204-length", "204-chunked", "304-length", "304-chunked"],
)
async def test_bodyless_response_announcing_a_body_is_not_reused(first: bytes) -> None:
    """The server announced a body it must not send; if it sends it late, the pooled connection's
    next request (maybe another tenant's) reads it as its own response."""
    leaked = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"  # 47 bytes: the 'body'

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        if idx == 0:
            writer.write(first)
            await writer.drain()
            await read_request(reader)  # only a reused connection gets here...
            writer.write(leaked)  # ...and the late body arrives as if it answered the new request
            await writer.drain()
            await asyncio.Event().wait()
        writer.write(FRESH)
        await writer.drain()
        await asyncio.Event().wait()

    pool = UpstreamPool(max_per_host=1)
    async with raw_server(script) as target:
        try:
            async with await pool.request("GET", target, "/", None, b"") as resp:
                assert resp.status in (204, 304) and await resp.read() == b""
            async with await pool.request("GET", target, "/", None, b"") as resp:
                assert await resp.read() == b"fresh"
        finally:
            await pool.close()


@pytest.mark.parametrize(
    ("answer", "method"),
    [
        (OK + b"HTTP/1.1 200 OK\r\n", "GET"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nstray", "GET"),
        (b"HTTP/1.1 204 No Content\r\n\r\nstray", "GET"),
        (b"HTTP/1.1 304 Not Modified\r\n\r\nstray", "GET"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray", "HEAD"),
    ],
    ids=["length", "chunked", "204", "304", "HEAD"],
)
@pytest.mark.parametrize("later", [False, True], ids=["same-write", "while-idle"])
async def test_stray_bytes_after_a_response_close_the_connection(answer: bytes, method: str, later: bool) -> None:
    stray_sent = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        if idx == 0:
            cut = answer.rindex(b"stray") if b"stray" in answer else len(OK)
            if later:
                writer.write(answer[:cut])
                await writer.drain()
                await asyncio.sleep(0.02)  # the client has the response and pooled the connection
                writer.write(answer[cut:])
            else:
                writer.write(answer)
            await writer.drain()
            stray_sent.set()
            await asyncio.Event().wait()
        writer.write(FRESH)
        await writer.drain()
        await asyncio.Event().wait()

    pool = UpstreamPool(max_per_host=1)
    async with raw_server(script) as target:
        try:
            async with await pool.request(method, target, "/", None, b"") as resp:
                await resp.read()
            await stray_sent.wait()
            for _ in range(200):  # the stray bytes reach the idle connection, which is dropped
                if pool.stats()[_key(target)] == (0, 0, 0):
                    break
                await asyncio.sleep(0.001)
            async with await pool.request("GET", target, "/", None, b"") as resp:
                assert await resp.read() == b"fresh"
        finally:
            await pool.close()


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ],
    ids=["keep-alive+length", "keep-alive+chunked", "no-keep-alive"],
)
async def test_http10_response_is_reused_only_if_keep_alive_and_length_delimited(answer: bytes, reused: bool) -> None:
    conns: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        while True:
            await read_request(reader)
            conns.append(idx)
            writer.write(answer)
            await writer.drain()

    pool = UpstreamPool(max_per_host=1)
    async with raw_server(script) as target:
        try:
            for _ in range(2):
                async with await pool.request("GET", target, "/", None, b"") as resp:
                    assert resp.version == "1.0" and await resp.read() == b"ok"
            assert conns == ([0, 0] if reused else [0, 1])
        finally:
            await pool.close()
