"""Send one step upstream and relay the answer: non-streamed, or SSE chunk by chunk.

Retry rule: a step may move to another replica only while nothing has been
sent to the client: connect errors, a 502/503, a timeout before the response
headers, a non-streamed body cut off before its end, and a stream that fails (or
ends) before its first event — response headers go to the client together with
the first event, not before, so a replica that dies during the prefill costs a
retry, not the step. Once the client has bytes, an upstream failure ends the
stream with an OpenAI-shaped error event followed by ``[DONE]``.

Timeouts: connect (``connect_s``), response headers / non-streamed answer
(``first_byte_s``), silence between two streamed chunks (``idle_s``, enforced by
a watchdog timer re-armed per chunk — cheaper than a timeout per read).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import orjson
from aiohttp import web

from concurproxy.config.server import TimeoutsConfig
from concurproxy.errors import ProxyError
from concurproxy.server.hooks import StepContext
from concurproxy.server.sse import SSERelay, Usage
from concurproxy.upstream.http1 import (
    UpstreamError,
    UpstreamPool,
    UpstreamRequestError,
    UpstreamResponse,
    UpstreamTimeout,
)
from concurproxy.upstream.pool import ReplicaPool
from concurproxy.upstream.replica import Replica

log = logging.getLogger("concurproxy.forward")

RETRYABLE_STATUS = frozenset({502, 503})


class UpstreamAttemptFailed(Exception):
    """Nothing reached the client; the step may be retried elsewhere."""

    def __init__(self, kind: str, message: str, *, passive_failure: bool) -> None:
        super().__init__(message)
        self.kind = kind  # connect | timeout | status
        self.passive_failure = passive_failure  # counts against the replica's health


def upstream_headers(replica: Replica, trace_headers: dict[str, str], request_id: str) -> dict[str, str]:
    """``trace_headers``: the client's trace context, already validated (``server/propagation.py``)."""
    headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
    if trace_headers:
        headers.update(trace_headers)
    if replica.api_key:
        headers["Authorization"] = f"Bearer {replica.api_key}"
    return headers


class Forwarder:
    """Uses the project's own HTTP/1.1 client (`concurproxy.upstream.http1`): ~3x less CPU per
    request than aiohttp's client on this path, which is most of the proxy's per-step cost."""

    def __init__(self, http: UpstreamPool, pool: ReplicaPool, timeouts: TimeoutsConfig) -> None:
        self.http = http
        self.pool = pool
        self.set_timeouts(timeouts)

    def set_timeouts(self, timeouts: TimeoutsConfig) -> None:
        self.timeouts = timeouts
        self.http.connect_timeout_s = timeouts.connect_s

    async def open(
        self, ctx: StepContext, replica: Replica, payload: bytes, headers: dict[str, str]
    ) -> UpstreamResponse:
        """Send the request; return the response once its headers arrived (status 2xx/4xx)."""
        try:
            resp = await self.http.request(
                "POST", replica.base_url, ctx.route, headers, payload, read_timeout_s=self.timeouts.first_byte_s
            )
        except UpstreamTimeout as exc:
            raise UpstreamAttemptFailed(
                "timeout", f"{replica.id}: no response within {self.timeouts.first_byte_s:g}s", passive_failure=True
            ) from exc
        except UpstreamRequestError as exc:  # nothing was sent and no replica is to blame: the request itself
            raise ProxyError(400, "invalid_request", f"the request cannot be forwarded: {exc}") from None
        except UpstreamError as exc:  # connect refused/reset, closed before any byte, garbage answer
            raise UpstreamAttemptFailed(
                "connect", f"{replica.id}: {type(exc).__name__}: {exc}", passive_failure=True
            ) from exc
        if resp.status in RETRYABLE_STATUS:
            body = await _read_quietly(resp)
            resp.release()
            raise UpstreamAttemptFailed(
                "status", f"{replica.id}: HTTP {resp.status}: {body[:200]!r}", passive_failure=True
            )
        return resp

    async def relay_json(self, ctx: StepContext, resp: UpstreamResponse) -> web.Response:
        rid = ctx.replica.id if ctx.replica is not None else "upstream"
        try:
            data = await resp.read()
        except UpstreamTimeout as exc:  # nothing reached the client yet: retryable
            why = f"{rid}: the answer did not arrive within {self.timeouts.first_byte_s:g}s"
            raise UpstreamAttemptFailed("timeout", why, passive_failure=True) from exc
        except UpstreamError as exc:
            raise UpstreamAttemptFailed(
                "connect", f"{rid}: failed mid-answer: {type(exc).__name__}: {exc}", passive_failure=True
            ) from exc
        finally:
            resp.release()
        ctx.status = resp.status
        if resp.status == 200:
            try:
                obj = orjson.loads(data)
                ctx.usage = Usage.from_obj(obj.get("usage")) if isinstance(obj, dict) else None
            except orjson.JSONDecodeError:
                ctx.usage = None
        else:
            ctx.outcome = "error"
        return web.Response(
            status=resp.status,
            body=data,
            content_type=resp.content_type or "application/json",
            headers=ctx.extra_headers,
        )

    async def relay_stream(
        self,
        request: web.Request,
        ctx: StepContext,
        resp: UpstreamResponse,
        strip_usage: bool,
    ) -> web.StreamResponse:
        """Relay SSE events as they arrive. The caller holds ``resp``'s context (closing it aborts upstream)."""
        if resp.status != 200:
            return await self.relay_json(ctx, resp)
        relay = SSERelay(strip_usage=strip_usage)
        watchdog = _IdleWatchdog(resp, self.timeouts.idle_s)
        out: web.StreamResponse | None = None  # prepared with the first event (until then a retry is possible)
        try:
            while (chunk := await resp.next_chunk()) is not None:
                watchdog.kick()
                data = relay.feed(chunk)
                if data:
                    if out is None:
                        out = await self._start_stream(request, ctx)
                        ctx.ttft_s = time.perf_counter() - ctx.started
                        if ctx.on_first_token is not None:
                            ctx.on_first_token()
                    try:  # _write_to_client, inlined: one coroutine less per chunk
                        await out.write(data)
                    except ConnectionResetError as exc:  # includes aiohttp.ClientConnectionResetError
                        raise ClientGone from exc
            tail = relay.flush()
            if tail:
                out = out or await self._start_stream(request, ctx)
                await _write_to_client(out, tail)
        except ClientGone:
            ctx.outcome = "cancelled"  # the caller closes the upstream response: the engine stops
            ctx.usage = relay.usage
            ctx.streamed_chunks = relay.chunks_seen
            assert out is not None  # only a write raises ClientGone
            return out
        except (UpstreamError, TimeoutError) as exc:
            timed_out = watchdog.fired or isinstance(exc, TimeoutError)
            if out is None:  # the client has nothing yet: let the caller retry elsewhere
                raise self._before_first_event(ctx, "timeout" if timed_out else "connect", exc) from exc
            ctx.outcome = "timeout" if timed_out else "error"
            err = (
                ProxyError(504, "upstream_timeout", f"no data from the model server for {self.timeouts.idle_s:g}s")
                if timed_out
                else ProxyError(502, "upstream_error", "the model server failed mid-stream")
            )
            await _write_quietly(out, err.sse_event() + b"data: [DONE]\n\n")
        except Exception:
            if out is None:
                raise  # headers not sent: the error middleware answers a plain 500
            # Last-resort guard: headers are gone, so the only correct ending is an error event.
            log.exception("step %s: relay failed", ctx.request_id)
            ctx.outcome = "error"
            await _write_quietly(
                out, ProxyError(500, "internal_error", "the proxy failed mid-stream").sse_event() + b"data: [DONE]\n\n"
            )
        finally:
            watchdog.cancel()
        if out is None:  # a clean end without a single event: the replica went away before answering
            raise self._before_first_event(ctx, "connect", None)
        ctx.usage = relay.usage
        ctx.streamed_chunks = relay.chunks_seen
        if not relay.done_seen and ctx.outcome == "success":
            ctx.outcome = "error"  # upstream closed without [DONE]
            await _write_quietly(
                out,
                ProxyError(502, "upstream_error", "the model server ended the stream early").sse_event()
                + b"data: [DONE]\n\n",
            )
        await _write_eof_quietly(out)
        return out

    async def _start_stream(self, request: web.Request, ctx: StepContext) -> web.StreamResponse:
        ctx.status = 200
        out = web.StreamResponse(status=200, headers=ctx.extra_headers)
        out.content_type = "text/event-stream"
        out.headers["Cache-Control"] = "no-cache"
        out.headers["X-Accel-Buffering"] = "no"
        await out.prepare(request)
        return out

    @staticmethod
    def _before_first_event(ctx: StepContext, kind: str, exc: BaseException | None) -> UpstreamAttemptFailed:
        rid = ctx.replica.id if ctx.replica is not None else "upstream"
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "closed without an event"
        return UpstreamAttemptFailed(kind, f"{rid}: stream failed before its first event ({why})", passive_failure=True)


class _IdleWatchdog:
    """Closes the upstream response when no chunk arrived for ``idle_s`` (one timer, re-armed per chunk)."""

    __slots__ = ("_deadline", "_handle", "_idle", "_loop", "_resp", "fired")

    def __init__(self, resp: UpstreamResponse, idle_s: float) -> None:
        self._resp = resp
        self._idle = idle_s
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + idle_s
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._deadline, self._check)
        self.fired = False

    def kick(self) -> None:
        # Moving a deadline is a float store; the timer re-arms itself lazily.
        self._deadline = self._loop.time() + self._idle

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._deadline:
            self.fired = True
            self._handle = None
            self._resp.close()
        else:
            self._handle = self._loop.call_at(self._deadline, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ClientGone(Exception):
    """The client disconnected while we were writing to it."""


async def _write_to_client(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except ConnectionResetError as exc:  # includes aiohttp.ClientConnectionResetError
        raise ClientGone from exc


async def _read_quietly(resp: UpstreamResponse) -> bytes:
    try:
        return await resp.read()
    except (UpstreamError, TimeoutError):
        return b""


async def _write_quietly(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except ConnectionResetError:
        pass


async def _write_eof_quietly(out: web.StreamResponse) -> None:
    try:
        await out.write_eof()
    except ConnectionResetError:
        pass


def choose_candidates(pool: ReplicaPool, model: str | None, tried: Sequence[str]) -> list[Replica]:
    available = pool.available(model)  # a new list each call
    return [r for r in available if r.id not in tried] if tried else available


NowFn = Callable[[], float]
