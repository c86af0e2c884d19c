"""Keep-alive connection pool per (host, port) and the ``request()`` entry point.

Per host: at most ``max_per_host`` connections (idle + leased + being opened).
Idle connections form a LIFO stack (the most recently used is the warmest and the
least likely to have been closed by the server's keep-alive timer); connections idle
longer than ``idle_timeout_s`` are closed lazily, when the stack is touched. The default
(4 s) is below common engines' keep-alive (uvicorn, hence vLLM: 5 s), so the client
normally gives up an idle connection before the server closes it under a request.
When all slots are taken, requests queue FIFO; a released connection (or a freed slot)
is handed to the oldest waiter directly.

Stale keep-alive (the rule nginx's ``proxy_next_upstream`` applies by default, and Go's
``net/http``): a reused connection found closing before the request was written (the
server's FIN arrived while it sat idle) is dropped and the request goes on another one -
nothing was sent. If it fails after the request was written but before any response
byte, the server may have read it and begun a generation: the request is sent once more
on a fresh connection only if its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT,
DELETE) or the caller says the request is ``replayable``; any other POST is not, and the caller
gets ``UpstreamDisconnected(sent=True)``. The proxy passes ``replayable`` for an inference step,
which its retry rule would send to another replica anyway: with one replica, the keep-alive race
(the server's timer closing a connection our idle limit still trusted: on a loaded host the
proxy reads a response's end, and starts its idle clock, late) would otherwise fail the step.

Concurrency: single event loop; no locks. ``UpstreamPool`` must be used from the loop
that created its first connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

from concurproxy.upstream.http1.connection import Http1Connection
from concurproxy.upstream.http1.errors import UpstreamConnectError, UpstreamDisconnected
from concurproxy.upstream.http1.parser import build_request, host_header
from concurproxy.upstream.http1.response import UpstreamResponse

Target = str | tuple[str, int]
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2


class _HostPool:
    __slots__ = ("conns", "host", "host_header", "idle", "owner", "port", "prefix", "total", "waiters")

    def __init__(self, owner: UpstreamPool, host: str, port: int, prefix: str) -> None:
        self.owner = owner
        self.host = host
        self.port = port
        self.prefix = prefix
        self.host_header = host_header(host, port)
        self.idle: list[Http1Connection] = []
        self.conns: set[Http1Connection] = set()
        self.total = 0  # open + opening connections (slots taken)
        self.waiters: deque[asyncio.Future[Http1Connection | None]] = deque()

    def take_idle(self) -> Http1Connection | None:
        """Most recently used idle connection that is still fresh, or None (sync fast path)."""
        idle = self.idle
        if not idle:
            return None
        owner = self.owner
        now = owner.loop.time()
        limit = owner.idle_timeout_s
        while idle:
            conn = idle.pop()
            conn.in_pool = False
            if now - conn.idle_since <= limit and not conn.closed:
                return conn
            self._drop(conn, wake=False)
        return None

    async def acquire(self, fresh: bool) -> tuple[Http1Connection, bool]:
        """A connection and whether it was reused; ``fresh`` skips the idle stack."""
        owner = self.owner
        if owner.closed:
            raise UpstreamConnectError("pool is closed")
        if not fresh:
            conn = self.take_idle()
            if conn is not None:
                return conn, True
        if self.total < owner.max_per_host:
            self.total += 1
            return await self._open(), False
        fut: asyncio.Future[Http1Connection | None] = owner.loop.create_future()
        self.waiters.append(fut)
        try:
            got = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                handed = fut.result()
                if handed is None:
                    self._slot_freed()
                else:
                    self.put(handed)
            raise
        if got is not None:
            return got, True
        return await self._open(), False  # a slot was reserved for us

    async def _open(self) -> Http1Connection:
        owner = self.owner
        conn = Http1Connection(owner.loop, owner.high_water)
        try:
            async with asyncio.timeout(owner.connect_timeout_s):
                await owner.loop.create_connection(lambda: conn, self.host, self.port)
        except TimeoutError as exc:
            self._slot_freed()
            raise UpstreamConnectError(
                f"connect to {self.host}:{self.port} timed out after {owner.connect_timeout_s:g}s"
            ) from exc
        except OSError as exc:
            self._slot_freed()
            raise UpstreamConnectError(f"connect to {self.host}:{self.port} failed: {exc}") from exc
        except BaseException:
            self._slot_freed()
            raise
        conn.on_idle_lost = self._on_idle_lost
        self.conns.add(conn)
        return conn

    def put(self, conn: Http1Connection) -> None:
        """Take a connection back from a response (or a failed request)."""
        if not conn.reusable() or self.owner.closed:
            conn.abort()
            self._drop(conn, wake=True)
            return
        conn.reset()
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return
        conn.idle_since = self.owner.loop.time()
        conn.in_pool = True
        self.idle.append(conn)
        # lazy idle sweep: the oldest idle connections sit at the bottom of the stack
        limit = conn.idle_since - self.owner.idle_timeout_s
        while self.idle[0].idle_since < limit:
            old = self.idle.pop(0)
            old.in_pool = False
            old.abort()
            self._drop(old, wake=False)

    def _drop(self, conn: Http1Connection, wake: bool) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            if not conn.closed:
                conn.abort()
            if wake:
                self._slot_freed()
            else:
                self.total -= 1

    def _slot_freed(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)  # the slot passes to the waiter, total unchanged
                return
        self.total -= 1

    def _on_idle_lost(self, conn: Http1Connection) -> None:
        if conn.in_pool:
            conn.in_pool = False
            self.idle.remove(conn)
            self._drop(conn, wake=True)

    def close(self) -> None:
        for conn in list(self.conns):
            conn.in_pool = False
            conn.abort()
        self.conns.clear()
        self.idle.clear()
        self.total = 0
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_exception(UpstreamConnectError("pool closed"))


class UpstreamPool:
    """HTTP/1.1 client with keep-alive pools per (host, port); ``http://`` only."""

    def __init__(
        self,
        max_per_host: int = 100,
        connect_timeout_s: float = 5.0,
        idle_timeout_s: float = 4.0,
        high_water: int = 256 * 1024,
    ) -> None:
        if max_per_host < 1:
            raise ValueError("max_per_host must be >= 1")
        self.max_per_host = max_per_host
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.high_water = high_water
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hosts: dict[Target, _HostPool] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _host_pool(self, target: Target) -> _HostPool:
        hp = self._hosts.get(target)
        if hp is None:
            if isinstance(target, tuple):
                host, port, prefix = target[0].strip("[]"), int(target[1]), ""
            else:
                u = urlsplit(target)
                if u.scheme != "http" or not u.hostname:
                    raise ValueError(f"only http:// URLs are supported, got {target!r}")
                host, port, prefix = u.hostname, u.port or 80, u.path.rstrip("/")
            hp = _HostPool(self, host, port, prefix)
            self._hosts[target] = hp
        return hp

    async def request(
        self,
        method: str,
        target: Target,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        read_timeout_s: float | None = None,
        replayable: bool = False,
    ) -> UpstreamResponse:
        """Send one request; return once the status line and headers arrived.

        ``target`` is a base URL (``http://host:port[/prefix]``) or ``(host, port)``;
        ``read_timeout_s`` bounds the wait for the head and, by default, each wait in ``read()``;
        ``replayable``: the caller accepts this request being sent twice (module docstring).
        Raises UpstreamConnectError, UpstreamTimeout, UpstreamDisconnected, UpstreamProtocolError,
        UpstreamRequestError. A reused connection that the server closed is retried as the module
        docstring says (never a POST the server may have read).
        """
        hp = self._host_pool(target)
        payload = build_request(method, hp.prefix + path if hp.prefix else path, hp.host_header, headers, body)
        no_body = method == "HEAD"
        fresh = False
        while True:
            conn = None if fresh or self.closed else hp.take_idle()
            if conn is not None:
                reused = True
            else:
                conn, reused = await hp.acquire(fresh)
            try:
                await conn.send(payload, read_timeout_s, no_body)
            except UpstreamDisconnected as exc:
                hp.put(conn)
                if reused and not exc.got_bytes:
                    if not exc.sent:
                        continue  # closed while idle, nothing written: the next one (idle ones are finite)
                    if not fresh and (replayable or method in IDEMPOTENT_METHODS):
                        fresh = True  # the server may have read it: repeat only if idempotent or replayable, once
                        continue
                raise
            except BaseException:
                conn.abort()
                hp.put(conn)
                raise
            return UpstreamResponse(conn, hp.put, read_timeout_s)

    def stats(self) -> dict[str, tuple[int, int, int]]:
        """(open, idle, waiting) per host:port - for tests and debugging."""
        return {f"{hp.host}:{hp.port}": (hp.total, len(hp.idle), len(hp.waiters)) for hp in self._hosts.values()}

    async def close(self) -> None:
        """Abort every connection (idle and leased) and fail queued waiters."""
        self.closed = True
        for hp in self._hosts.values():
            hp.close()
        await asyncio.sleep(0)  # let transports run connection_lost before the loop goes away
