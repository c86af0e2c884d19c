"""Loopback servers for the upstream client tests: a real aiohttp app and a raw scripted one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web


class Peers:
    """Distinct client connections seen by the aiohttp server (by peer address)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.inflight = 0
        self.max_inflight = 0

    def note(self, request: web.Request) -> None:
        assert request.transport is not None
        self.seen.add(request.transport.get_extra_info("peername")[:2])


@asynccontextmanager
async def aiohttp_server(app: web.Application, **runner_kw: object) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, **runner_kw)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script, host: str = "127.0.0.1") -> AsyncIterator[tuple[str, int]]:
    """``script(reader, writer, conn_index)`` runs per accepted connection; the writer is closed after."""
    count = 0
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        idx = count
        count += 1
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await script(reader, writer, idx)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(handle, host, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield ("127.0.0.1", port)
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request (head + Content-Length body); return its body."""
    return (await read_request_head(reader))[1]


async def read_request_head(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read one request; return its head (with the blank line) and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)
