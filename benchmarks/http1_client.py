"""Micro benchmark: this client vs ``aiohttp.ClientSession`` against one local aiohttp server.

    python -m benchmarks.http1_client [--seconds 2] [--concurrency 1,64] [--stream] [--pin] [--parsers]

The server runs in a child process (uvloop), so the client's ``process_time`` is
the client's CPU alone. Each request POSTs a ~600 B chat-style JSON body and reads a
~700 B JSON answer (``--stream``: a 16-event chunked SSE answer via ``iter_chunks``).
Reports requests/s and client CPU microseconds per request.

``--parsers`` first times the response parsing alone, this client's parser against
``httptools`` (llhttp, if installed) doing the same job - status, ``Headers``, framing, body
pieces - on a vLLM-shaped JSON answer and a 16-event SSE stream fed one event per read;
the client runs that follow give the CPU per request the difference is a share of.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import time
import timeit
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from concurproxy.upstream.http1.chunked import ChunkedDecoder
from concurproxy.upstream.http1.parser import Headers, parse_head

_REQ = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 500 + b'"}],"max_tokens":16}'
_RESP = (
    b'{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"'
    + b"y" * 560
    + b'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":16}}'
)
_EVENT = b'data: {"choices":[{"delta":{"content":"tok"}}]}\n\n'


# what uvicorn (vLLM's server) sends: a JSON answer, and an SSE stream one chunk per event
_JSON_WIRE = (
    b"HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-length: %d\r\ncontent-type: application/json\r\n\r\n" % len(_RESP)
) + _RESP
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
)
_SSE_READS = [b"%x\r\n%s\r\n" % (len(_EVENT), _EVENT) for _ in range(16)] + [b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"]


def _ours_json() -> Callable[[], None]:
    def run() -> None:  # what Http1Connection does with a response that came in one read
        data = _JSON_WIRE
        idx = data.find(b"\r\n\r\n")
        head = parse_head(data[:idx])
        body = data[idx + 4 :]
        assert head.content_length == len(body)

    return run


def _ours_sse() -> Callable[[], None]:
    def run() -> None:
        head = parse_head(_SSE_HEAD[:-4])
        dec = ChunkedDecoder()
        for data in _SSE_READS:
            dec.feed(data)
        assert head.chunked and dec.done

    return run


class _LlhttpHandler:
    """The callbacks an httptools-based connection would need to fill the same ResponseHead fields."""

    __slots__ = ("body", "d", "done", "head", "n", "parser", "raw")

    def __init__(self) -> None:
        self.parser: Any = None
        self.reset()

    def reset(self) -> None:
        self.raw: list[tuple[str, str]] = []
        self.d: dict[str, str] = {}
        self.n = 0
        self.body: list[bytes] = []
        self.done = False
        self.head: tuple[int, str, bool, Any] | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.n += 1  # MAX_HEADER_FIELDS would still be ours to count
        n, v = name.decode("latin-1"), value.decode("latin-1")
        self.raw.append((n, v))
        low = n.lower()
        prev = self.d.get(low)
        self.d[low] = v if prev is None else f"{prev}, {v}"

    def on_headers_complete(self) -> None:
        p = self.parser  # llhttp answers these only until the message completes
        self.head = (
            p.get_status_code(),
            p.get_http_version(),
            p.should_keep_alive(),
            Headers.from_parsed(self.raw, self.d),
        )

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def _llhttp(wire: list[bytes], steady: bool = False) -> Callable[[], None] | None:
    """``steady``: feed ``wire`` once to enter the body, then time feeding ``wire[-1]`` alone."""
    try:
        import httptools
    except ImportError:
        return None
    handler = _LlhttpHandler()
    parser = handler.parser = httptools.HttpResponseParser(handler)  # one per connection, reused
    if steady:
        for data in wire:
            parser.feed_data(data)
        one = wire[-1]
        return lambda: parser.feed_data(one)

    def run() -> None:
        handler.reset()
        for data in wire:
            parser.feed_data(data)
        assert handler.done and handler.head is not None and handler.head[:3] == (200, "1.1", True)

    return run


def _ours_one_chunk() -> Callable[[], None]:
    dec = ChunkedDecoder()
    one = _SSE_READS[0]
    return lambda: dec.feed(one)  # type: ignore[return-value]


def _parser_table() -> None:
    """CPU time (``process_time``: waiting for a shared core does not count), best of 7 repeats;
    compare the ratios, measured in one run."""
    rows = [
        ("JSON answer: head + 700 B body", _ours_json(), _llhttp([_JSON_WIRE])),
        ("SSE answer: head + 17 chunk reads", _ours_sse(), _llhttp([_SSE_HEAD, *_SSE_READS])),
        ("one SSE chunk read (mid-stream)", _ours_one_chunk(), _llhttp([_SSE_HEAD, _SSE_READS[0]], steady=True)),
    ]
    print(f"{'parse':<36}{'ours us':>9}{'llhttp us':>11}{'ours/llhttp':>13}{'llhttp saves us':>17}")
    for name, ours, theirs in rows:
        t_ours = min(timeit.repeat(ours, number=5000, repeat=7, timer=time.process_time)) / 5000 * 1e6
        if theirs is None:
            print(f"{name:<36}{t_ours:9.2f}   (httptools not installed: pip install httptools to compare)")
            continue
        t_ll = min(timeit.repeat(theirs, number=5000, repeat=7, timer=time.process_time)) / 5000 * 1e6
        print(f"{name:<36}{t_ours:9.2f}{t_ll:11.2f}{t_ours / t_ll:13.2f}{t_ours - t_ll:17.2f}", flush=True)


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
    ap.add_argument("--parsers", action="store_true", help="first time this parser against httptools (llhttp)")
    args = ap.parse_args(argv)
    if args.parsers:
        _parser_table()
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
