"""The response handle returned by :meth:`UpstreamPool.request`.

It owns its connection until ``release()``/``close()``: a fully received body
returns the connection to the pool, anything else closes it (the upstream sees the
client leave, so an engine stops generating). ``async with`` releases on exit.
Not thread-safe; one consumer task reads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from concurproxy.upstream.http1.connection import Http1Connection
from concurproxy.upstream.http1.parser import Headers

ReleaseFn = Callable[[Http1Connection], None]


class UpstreamResponse:
    __slots__ = ("_conn", "_give_back", "_read_timeout", "headers", "reason", "status", "version")

    def __init__(self, conn: Http1Connection, give_back: ReleaseFn, read_timeout_s: float | None) -> None:
        head = conn.head
        assert head is not None
        self._conn: Http1Connection | None = conn
        self._give_back = give_back
        self._read_timeout = read_timeout_s
        self.status = head.status
        self.reason = head.reason
        self.version = head.version
        self.headers: Headers = head.headers

    @property
    def content_type(self) -> str | None:
        """Media type without parameters, lower-cased (``application/json``), like aiohttp's."""
        ct = self.headers.get("content-type")
        if ct is None:
            return None
        return ct.split(";", 1)[0].strip().lower()

    @property
    def body_complete(self) -> bool:
        return self._conn is not None and self._conn.eof

    async def read(self, timeout_s: float | None = -1.0) -> bytes:
        """The whole body. ``timeout_s`` bounds the silence between two arrivals
        (default: the request's ``read_timeout_s``; ``None``: no limit)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("response already released")
        t = self._read_timeout if timeout_s == -1.0 else timeout_s
        first = await conn.next_data(t)
        if first is None:
            return b""
        if conn.eof and not conn._chunks and conn.exc is None:  # what next_data would say: the end
            return first
        parts = [first]
        while (more := await conn.next_data(t)) is not None:
            parts.append(more)
        return first if len(parts) == 1 else b"".join(parts)

    async def iter_chunks(self, timeout_s: float | None = None) -> AsyncIterator[bytes]:
        """Body bytes (dechunked) as they arrive; each item is everything buffered at that moment.
        ``timeout_s`` bounds the silence between items (default: none - use ``abort()`` from a watchdog)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("response already released")
        while (data := await conn.next_data(timeout_s)) is not None:
            yield data

    def next_chunk(self, timeout_s: float | None = None) -> Awaitable[bytes | None]:
        """The next item :meth:`iter_chunks` would yield, or ``None`` at the end of the body: one
        coroutine per chunk, without the async generator around it (the relay's per-chunk path)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("response already released")
        return conn.next_data(timeout_s)

    def release(self) -> None:
        """Give the connection back: pooled if the body was fully received, else closed. Idempotent."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        self._give_back(conn)

    def close(self) -> None:
        """Abort: close the connection now (a pending read raises :class:`UpstreamAborted`)."""
        conn = self._conn
        if conn is None:
            return
        conn.abort()
        self.release()

    def abort(self) -> None:
        """Close the connection but keep the handle, so a pending read wakes with
        :class:`UpstreamAborted` (for idle watchdogs); ``release()`` later is still fine."""
        if self._conn is not None:
            self._conn.abort()

    def __del__(self) -> None:
        # A response dropped without release()/close() must not leak its pool slot
        # (aiohttp does the same). Runs on the loop thread in CPython's refcounting case.
        conn = self._conn
        if conn is not None:
            self._conn = None
            try:
                conn.abort()
                self._give_back(conn)
            except RuntimeError:  # the loop is already closed: nothing left to free
                pass

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason}>"
