"""One keep-alive HTTP/1.1 connection as an ``asyncio.Protocol`` (works on uvloop).

Life cycle: ``IDLE --send()--> HEAD --head parsed--> BODY --complete--> DONE --reset()--> IDLE``.
One request at a time (no pipelining). Everything runs on the loop thread; callbacks
(``data_received``, ``connection_lost``, timers) and the awaiting coroutine never run
concurrently, so no locks.

Body framing: ``Content-Length``, ``Transfer-Encoding: chunked`` (:class:`ChunkedDecoder`)
or until the server closes. Body bytes are queued in ``_chunks``; when more than
``high_water`` bytes wait for the consumer the transport stops reading
(``pause_reading``) and resumes as soon as the consumer takes them (bounded memory,
TCP backpressure reaches the upstream).

Head reassembly: a head that arrives in one read (the usual case) is searched once in place;
one split across reads goes through :class:`HeadReader`, which searches each byte once. The
head limits (size, field count) apply to the whole head however it arrives (``parse_head``),
and at most ``MAX_INTERIM`` 1xx responses are skipped before the final one.

Reuse: any byte the response did not account for (after the body, after a body-less 204/304/
HEAD response, or while idle) makes the connection unusable, as does a 204/304 whose head
announces a body: those bytes would otherwise be read as the next request's response, and the
next request may be another tenant's.

Timeouts are single loop timers (``call_later``), not ``wait_for`` wrappers: expiring
one fails the pending future with :class:`UpstreamTimeout` and aborts the connection
(its state is unknown, so it is never reused).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from concurproxy.upstream.http1.chunked import ChunkedDecoder
from concurproxy.upstream.http1.errors import (
    UpstreamAborted,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from concurproxy.upstream.http1.parser import HeadReader, ResponseHead, parse_head

IDLE, HEAD, BODY, DONE = range(4)
_LENGTH, _CHUNKED, _UNTIL_CLOSE = range(3)
MAX_INTERIM = 8  # 1xx responses skipped per request (100 Continue, 103 Early Hints): one or two in practice


class Http1Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, high_water: int) -> None:
        self.loop = loop
        self.high_water = high_water
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.state = IDLE
        self.idle_since = 0.0
        self.in_pool = False  # set by the pool while the connection sits on its idle stack
        self.on_idle_lost: Callable[[Http1Connection], None] | None = None  # installed by the pool
        self.keep_alive = True
        self.got_bytes = False
        self.head: ResponseHead | None = None
        self.eof = False  # body complete
        self.exc: UpstreamError | None = None  # terminal body error
        self._partial: HeadReader | None = None  # a head split across reads
        self._interim = 0
        self._head_fut: asyncio.Future[ResponseHead] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._mode = _LENGTH
        self._left = 0
        self._dechunk: ChunkedDecoder | None = None
        self._no_body = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False

    # --- asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass  # not TCP (tests on unix sockets) or a pseudo-socket without the option

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        st = self.state
        if st == HEAD:
            self._fail(
                UpstreamDisconnected(
                    "upstream closed the connection before the response head"
                    + (" (partial head received)" if self.got_bytes else ""),
                    got_bytes=self.got_bytes,
                    sent=True,  # HEAD state begins with transport.write(): the server may have read it
                )
            )
        elif st == BODY:
            if self._mode == _UNTIL_CLOSE:
                self._finish()
            else:
                self._fail(UpstreamDisconnected("upstream closed the connection mid-body", got_bytes=True, sent=True))
        elif self.in_pool and self.on_idle_lost is not None:
            self.on_idle_lost(self)

    def data_received(self, data: bytes) -> None:
        st = self.state
        if st == BODY:
            self._feed_body(data)
        elif st == HEAD:
            self.got_bytes = True
            self._on_head_bytes(data)
        else:  # bytes nobody asked for: the connection is out of sync
            self.keep_alive = False
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost does the bookkeeping

    def pause_writing(self) -> None:  # requests are small; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # --- request side -----------------------------------------------------------
    async def send(self, payload: bytes, head_timeout_s: float | None, no_body: bool) -> ResponseHead:
        """Write the request; return the parsed head. Any failure leaves the connection unusable.

        Raises :class:`UpstreamDisconnected` with ``sent=False`` (nothing written) when the
        connection was already closing, e.g. the server's FIN arrived while it was idle."""
        if self.closed or self.transport is None or self.transport.is_closing():
            # the server's FIN arrived but connection_lost has not run yet (uvloop would raise on write)
            self.closed = True
            self.keep_alive = False
            raise UpstreamDisconnected("connection already closed", got_bytes=False, sent=False)
        self.state = HEAD
        self._interim = 0
        self.got_bytes = False
        self.head = None
        self.eof = False
        self.exc = None
        self._no_body = no_body
        fut: asyncio.Future[ResponseHead] = self.loop.create_future()
        self._head_fut = fut
        self.transport.write(payload)
        if head_timeout_s is not None:
            self._timer = self.loop.call_later(head_timeout_s, self._on_timeout)
        try:
            return await fut
        finally:
            self._head_fut = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def next_data(self, timeout_s: float | None) -> bytes | None:
        """Everything buffered so far (joined), waiting for data if none; ``None`` at end of body."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._chunks = []
                self._buffered = 0
                if self._paused and not self.closed and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self.exc is not None:
                raise self.exc
            if self.eof:
                return None
            fut: asyncio.Future[None] = self.loop.create_future()
            self._waiter = fut
            if timeout_s is not None:
                self._timer = self.loop.call_later(timeout_s, self._on_timeout)
            try:
                await fut
            finally:
                self._waiter = None
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None

    def reusable(self) -> bool:
        return self.state == DONE and self.eof and self.keep_alive and not self.closed and self.exc is None

    def reset(self) -> None:
        """Back to IDLE after a complete response (the pool calls this before reuse)."""
        self.state = IDLE
        self.head = None
        self._dechunk = None
        self._chunks = []
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def abort(self, exc: UpstreamError | None = None) -> None:
        """Close now (the server sees the client go away); wake any pending read with ``exc``."""
        self.keep_alive = False
        if self.state in (HEAD, BODY):
            self._fail(exc or UpstreamAborted("response aborted by the caller"))
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    # --- internals --------------------------------------------------------------
    def _on_timeout(self) -> None:
        self._timer = None
        what = "response head" if self.state == HEAD else "body data"
        self.abort(UpstreamTimeout(f"no {what} from the upstream within the read timeout"))

    def _fail(self, exc: UpstreamError) -> None:
        if self.exc is None:
            self.exc = exc
        self.keep_alive = False
        fut = self._head_fut
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        self._wake()
        self.state = DONE

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _finish(self) -> None:
        self.eof = True
        self.state = DONE
        self._wake()

    def _on_head_bytes(self, data: bytes) -> None:
        try:
            while True:
                partial = self._partial
                if partial is None:
                    idx = data.find(b"\r\n\r\n")  # the usual case: the whole head in this read
                    if idx < 0:
                        self._partial = partial = HeadReader()
                        partial.feed(data)  # raises if this alone is over the limit
                        return
                    head = parse_head(data[:idx])
                    data = data[idx + 4 :]
                else:
                    got = partial.feed(data)
                    if got is None:
                        return
                    self._partial = None
                    head = parse_head(got[0])
                    data = got[1]
                if head.status >= 200 or head.status == 101:
                    break
                # 1xx interim response (100 Continue, 103 Early Hints): skip it, keep reading
                self._interim += 1
                if self._interim > MAX_INTERIM:
                    raise UpstreamProtocolError(f"more than {MAX_INTERIM} interim (1xx) responses")
        except UpstreamProtocolError as exc:
            self.abort(exc)
            return
        self.head = head
        self.keep_alive = head.keep_alive
        self.state = BODY
        fut = self._head_fut
        if fut is not None and not fut.done():
            fut.set_result(head)
        status = head.status
        if self._no_body or status == 204 or status == 304 or head.content_length == 0:
            # a 204/304 announcing a body (Content-Length > 0, chunked) may still be sending it
            if data or ((status == 204 or status == 304) and (head.chunked or head.content_length)):
                self.keep_alive = False
            self._finish()
        elif head.chunked:
            self._mode = _CHUNKED
            self._dechunk = ChunkedDecoder()
        elif head.content_length is not None:
            self._mode = _LENGTH
            self._left = head.content_length
        else:
            self._mode = _UNTIL_CLOSE
            self.keep_alive = False
        if data and self.state == BODY:
            self._feed_body(data)

    def _feed_body(self, data: bytes) -> None:
        mode = self._mode
        if mode == _LENGTH:
            n = len(data)
            if n < self._left:
                self._left -= n
                self._push(data)
                return
            if n > self._left:
                self.keep_alive = False  # bytes beyond the body: out of sync
                data = data[: self._left]
            self._left = 0
            self._push(data)
            self._finish()
        elif mode == _CHUNKED:
            dec = self._dechunk
            assert dec is not None
            try:
                pieces = dec.feed(data)
            except UpstreamProtocolError as exc:
                self.abort(exc)
                return
            for p in pieces:
                self._push(p)
            if dec.done:
                if dec.tail:
                    self.keep_alive = False
                self._finish()
        else:
            self._push(data)

    def _push(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()
        if self._buffered > self.high_water and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
