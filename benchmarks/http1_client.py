"""Micro benchmark: this client vs ``aiohttp.ClientSession`` against one local aiohttp server.

    python -m benchmarks.http1_client [--seconds 2] [--concurrency 1,64] [--stream] [--pin]

The server runs in a child process (uvloop), so the client's ``process_time`` is
the client's CPU alone. Each request POSTs a ~600 B chat-style JSON body and reads a
~700 B JSON answer (``--stream``: a 16-event chunked SSE answer via ``iter_chunks``).
Reports requests/s and client CPU microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

_REQ = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 500 + b'"}],"max_tokens":16}'
_RESP = (
    b'{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"'
    + b"y" * 560
    + b'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":16}}'
)
_EVENT = b'data: {"choices":[{"delta":{"content":"tok"}}]}\n\n'


def _serve(sock: socket.socket, cpu: int | None) -> None:
    import uvloop

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    from aiohttp import web

    async def json_h(req: web.Request) -> web.Response:
        await req.read()
        return web.Response(body=_RESP, content_type="application/json")

    async def sse_h(req: web.Request) -> web.StreamResponse:
        await req.read()
        out = web.StreamResponse()
        out.content_type = "text/event-stream"
        await out.prepare(req)
        for _ in range(16):
            await out.write(_EVENT)
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/json", json_h)
        app.router.add_post("/sse", sse_h)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await asyncio.Event().wait()

    uvloop.run(main())


@dataclass(frozen=True)
class Result:
    client: str
    concurrency: int
    requests: int
    wall_s: float
    cpu_s: float

    def line(self) -> str:
        return (
            f"{self.client:>8}  c={self.concurrency:<3} {self.requests / self.wall_s:9.0f} req/s  "
            f"{self.cpu_s / self.requests * 1e6:7.1f} us CPU/req  ({self.requests} reqs)"
        )


async def _drive(one: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> tuple[int, float, float]:
    for _ in range(50):
        await one()  # warm up: connections, caches
    stop = time.perf_counter() + seconds
    count = 0

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await one()
            count += 1

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count, time.perf_counter() - t0, time.process_time() - c0


async def _run(port: int, concurrency: int, seconds: float, stream: bool) -> list[Result]:
    import aiohttp

    from concurproxy.upstream.http1 import UpstreamPool

    path = "/sse" if stream else "/json"
    base = f"http://127.0.0.1:{port}"
    hdrs = {"Content-Type": "application/json", "X-Request-Id": "r1"}
    pool = UpstreamPool(max_per_host=max(concurrency, 1))

    async def ours() -> None:
        async with await pool.request("POST", base, path, hdrs, _REQ, read_timeout_s=10) as resp:
            if stream:
                async for _ in resp.iter_chunks():
                    pass
            else:
                await resp.read()

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(concurrency, 1)))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=10)

    async def theirs() -> None:
        async with session.post(base + path, data=_REQ, headers=hdrs, timeout=timeout) as resp:
            if stream:
                async for _ in resp.content.iter_any():
                    pass
            else:
                await resp.read()

    out = []
    try:
        for name, fn in (("http1", ours), ("aiohttp", theirs)):
            n, wall, cpu = await _drive(fn, concurrency, seconds)
            out.append(Result(name, concurrency, n, wall, cpu))
    finally:
        await session.close()
        await pool.close()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--concurrency", default="1,64")
    ap.add_argument("--stream", action="store_true", help="chunked SSE answers instead of JSON")
    ap.add_argument("--pin", action="store_true", help="client on CPU 0, server on CPU 1 (Linux)")
    args = ap.parse_args(argv)
    import uvloop

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    server = mp.get_context("fork").Process(target=_serve, args=(sock, 1 if args.pin else None), daemon=True)
    server.start()
    if args.pin:
        os.sched_setaffinity(0, {0})
    try:
        time.sleep(0.5)
        for c in (int(x) for x in args.concurrency.split(",")):
            for r in uvloop.run(_run(port, c, args.seconds, args.stream)):
                print(r.line(), flush=True)
    finally:
        server.terminate()
        server.join(5)
        sock.close()


if __name__ == "__main__":
    main()
