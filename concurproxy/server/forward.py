"""Send one attempt upstream and relay the answer: non-streamed, or SSE event by event.

Retry rule (the only place it is decided: `RetryRule`). An attempt may be
retried on another replica only while nothing has reached the client, and only
where a second send cannot do harm:

* an admitted step (a generation, POST): connect errors, a 502/503, a timeout
  before the response head, a non-streamed body cut off before its end, and a
  stream that fails (or ends) before its first event. Response headers go to
  the client together with the first event, not before, so a replica that dies
  during the prefill costs a retry, not the step. Once the client has bytes, an
  upstream failure ends the stream with an error event in the API's shape
  (`ApiCodec.stream_error`).
* a passed-through request (`passthrough.py`): an idempotent method (GET,
  HEAD, OPTIONS, PUT, DELETE) on the same failures; any other method only when
  the connection could not be opened (nothing was sent), as nginx's
  ``proxy_next_upstream`` does by default.

Each failed attempt is raised once as `UpstreamAttemptFailed` and caught once
by the caller's attempt loop, which asks ``Forwarder.may_retry``; that call
also marks the replica (passive health), counts the retry and logs it.

Timeouts: connect (``connect_s``), response headers / non-streamed answer
(``first_byte_s``), silence between two streamed chunks (``idle_s``, enforced by
a watchdog timer re-armed per chunk — cheaper than a timeout per read).
"""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web

from concurproxy.config.models import Policy
from concurproxy.config.server import TimeoutsConfig
from concurproxy.errors import ProxyError
from concurproxy.server.relaying import ClientGone, IdleWatchdog, read_quietly, write_eof_quietly, write_quietly
from concurproxy.server.sse import DEFAULT_MAX_EVENT_BYTES, EventTooLarge
from concurproxy.server.step import StepContext, StepOutcome
from concurproxy.upstream.http1 import (
    UpstreamConnectError,
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
    """Nothing reached the client; whether the step may go elsewhere is `RetryRule`'s call."""

    def __init__(self, kind: str, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.kind = kind  # connect | timeout | status
        self.sent = sent  # the request may have reached the server (False: the connection never opened)

    def answer(self) -> ProxyError:
        """The error the client gets when no retry is left."""
        if self.kind == "timeout":
            return ProxyError(504, "upstream_timeout", "the model server did not answer in time", retry_after_s=5)
        return ProxyError(502, "upstream_unavailable", f"the model servers failed: {self}", retry_after_s=1)


class RetryRule:
    """How many attempts, and which failures a further attempt may follow (see the module doc)."""

    __slots__ = ("attempts",)

    IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def allows(self, failed: UpstreamAttemptFailed, attempt: int, method: str = "POST", step: bool = True) -> bool:
        if attempt >= self.attempts:
            return False
        return step or method in self.IDEMPOTENT or not failed.sent


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

    def __init__(
        self,
        http: UpstreamPool,
        pool: ReplicaPool,
        timeouts: TimeoutsConfig,
        attempts: int = 2,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.http = http
        self.pool = pool
        self.retry = RetryRule(attempts)
        self.max_event_bytes = max_event_bytes
        self.set_timeouts(timeouts)

    @classmethod
    def from_policy(cls, http: UpstreamPool, pool: ReplicaPool, policy: Policy) -> Forwarder:
        return cls(http, pool, policy.timeouts, policy.retry.attempts, policy.limits.max_sse_event_bytes)

    def configure(self, policy: Policy) -> None:
        """A reloaded policy: timeouts, attempts and the event bound apply to the next attempt."""
        self.set_timeouts(policy.timeouts)
        self.retry.attempts = policy.retry.attempts
        self.max_event_bytes = policy.limits.max_sse_event_bytes

    def set_timeouts(self, timeouts: TimeoutsConfig) -> None:
        self.timeouts = timeouts
        self.http.connect_timeout_s = timeouts.connect_s

    def may_retry(
        self,
        failed: UpstreamAttemptFailed,
        replica: Replica,
        attempt: int,
        request_id: str,
        method: str = "POST",
        step: bool = True,
    ) -> bool:
        """After a failed attempt on ``replica``: mark it (passive health) and say whether another
        attempt may follow (logged; the caller counts the retry when it makes one)."""
        self.pool.mark_failure(replica, str(failed), unreachable=failed.kind == "connect" and not failed.sent)
        again = self.retry.allows(failed, attempt, method, step)
        log.info("%s: attempt on %s failed (%s)%s", request_id, replica.id, failed.kind, ", retrying" if again else "")
        return again

    async def open(
        self,
        replica: Replica,
        method: str,
        target: str,
        payload: bytes,
        headers: dict[str, str],
        retry_status: bool = True,
        step: bool = False,
    ) -> UpstreamResponse:
        """Send the request; return the response once its head arrived. A 502/503 is a failed attempt
        when ``retry_status`` (else it is the answer, relayed as the engine sent it). A ``step`` may be
        sent twice (`RetryRule`), so the connection pool repeats it once on a fresh connection when a
        reused one closes unanswered (the keep-alive race: not the replica's failure)."""
        try:
            resp = await self.http.request(
                method,
                replica.base_url,
                target,
                headers,
                payload,
                read_timeout_s=self.timeouts.first_byte_s,
                replayable=step,
            )
        except UpstreamTimeout as exc:
            raise UpstreamAttemptFailed(
                "timeout", f"{replica.id}: no response within {self.timeouts.first_byte_s:g}s"
            ) from exc
        except UpstreamRequestError as exc:  # nothing was sent and no replica is to blame: the request itself
            raise ProxyError(400, "invalid_request", f"the request cannot be forwarded: {exc}") from None
        except UpstreamConnectError as exc:  # no connection: nothing was sent
            why = f"{replica.id}: {type(exc).__name__}: {exc}"
            raise UpstreamAttemptFailed("connect", why, sent=False) from exc
        except UpstreamError as exc:  # reset or closed before any byte, garbage answer: it may have been read
            raise UpstreamAttemptFailed("connect", f"{replica.id}: {type(exc).__name__}: {exc}") from exc
        if retry_status and resp.status in RETRYABLE_STATUS:
            body = await read_quietly(resp)
            resp.release()
            raise UpstreamAttemptFailed("status", f"{replica.id}: HTTP {resp.status}: {body[:200]!r}")
        if resp.status < 500:
            self.pool.mark_answered(replica)
        return resp

    async def read_whole(self, replica: Replica, resp: UpstreamResponse) -> bytes:
        """A non-streamed body; a failure before its end is retryable (the client has nothing yet)."""
        try:
            return await resp.read()
        except UpstreamTimeout as exc:
            why = f"{replica.id}: the answer did not arrive within {self.timeouts.first_byte_s:g}s"
            raise UpstreamAttemptFailed("timeout", why) from exc
        except UpstreamError as exc:
            raise UpstreamAttemptFailed(
                "connect", f"{replica.id}: failed mid-answer: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            resp.release()

    async def relay_json(self, ctx: StepContext, replica: Replica, resp: UpstreamResponse) -> web.Response:
        data = await self.read_whole(replica, resp)
        ctx.status = resp.status
        if ctx.captured is not None:
            ctx.captured.append(data)
        if resp.status == 200:
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            if obj.__class__ is dict:
                ctx.usage = ctx.codec.usage_of(obj)
                ctx.response_id = ctx.codec.response_id_of(obj)
        else:
            ctx.outcome = StepOutcome.error
        return web.Response(
            status=resp.status,
            body=data,
            content_type=resp.content_type or "application/json",
            headers=ctx.extra_headers,
        )

    async def relay_stream(
        self, request: web.Request, ctx: StepContext, replica: Replica, resp: UpstreamResponse
    ) -> web.StreamResponse:
        """Relay SSE events as they arrive. The caller releases ``resp`` (mid-body: closes it, so the engine stops)."""
        if resp.status != 200:
            return await self.relay_json(ctx, replica, resp)
        codec = ctx.codec
        relay = codec.relay(ctx.strip_usage, self.max_event_bytes)
        watchdog = IdleWatchdog(resp, self.timeouts.idle_s)
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
                    try:  # inline, not a helper coroutine: one coroutine less per chunk
                        await out.write(data)
                    except ConnectionResetError as exc:  # includes aiohttp.ClientConnectionResetError
                        raise ClientGone from exc
                    if ctx.captured is not None:  # only for an agent inferred from its conversation
                        ctx.captured.append(data)
                    if relay.done_seen and not ctx.delivered:
                        # The client has the whole answer. A client that closes on [DONE] (not the SDKs:
                        # they read to the end) cancels the handler while it waits for the engine's
                        # end of body; the step is still a success, with its usage, not a cancellation.
                        ctx.delivered = True
                        ctx.usage, ctx.response_id, ctx.streamed_chunks = (
                            relay.usage,
                            relay.response_id,
                            relay.chunks_seen,
                        )
            tail = relay.flush()
            if tail:
                out = out or await self._start_stream(request, ctx)
                await write_quietly(out, tail)
        except ClientGone:
            if not ctx.delivered:
                ctx.outcome = StepOutcome.cancelled  # the caller closes the upstream response: the engine stops
            ctx.usage = relay.usage
            ctx.streamed_chunks = relay.chunks_seen
            assert out is not None  # only a write raises ClientGone
            return out
        except (UpstreamError, TimeoutError) as exc:
            timed_out = watchdog.fired or isinstance(exc, TimeoutError)
            if out is None:  # the client has nothing yet: let the caller retry elsewhere
                raise self._before_first_event(replica, "timeout" if timed_out else "connect", exc) from exc
            ctx.outcome = StepOutcome.timeout if timed_out else StepOutcome.error
            err = (
                ProxyError(504, "upstream_timeout", f"no data from the model server for {self.timeouts.idle_s:g}s")
                if timed_out
                else ProxyError(502, "upstream_error", "the model server failed mid-stream")
            )
            await write_quietly(out, codec.stream_error(err, relay.chunks_seen))
        except EventTooLarge as exc:  # the upstream's fault, not retried: it would send the same again
            log.warning("step %s: %s from %s", ctx.request_id, exc, replica.id)
            err = ProxyError(502, "upstream_event_too_large", f"the model server sent an event over {exc.limit} bytes")
            if out is None and not exc.complete:
                raise err from None
            out = out or await self._start_stream(request, ctx)
            ctx.outcome = StepOutcome.error
            await write_quietly(out, exc.complete + codec.stream_error(err, relay.chunks_seen))
        except Exception:
            if out is None:
                raise  # headers not sent: the front answers a JSON 500
            # Last-resort guard: headers are gone, so the only correct ending is an error event.
            log.exception("step %s: relay failed", ctx.request_id)
            ctx.outcome = StepOutcome.error
            err = ProxyError(500, "internal_error", "the proxy failed mid-stream")
            await write_quietly(out, codec.stream_error(err, relay.chunks_seen))
        finally:
            watchdog.cancel()
        if out is None:  # a clean end without a single event: the replica went away before answering
            raise self._before_first_event(replica, "connect", None)
        ctx.usage = relay.usage
        ctx.response_id = relay.response_id
        ctx.streamed_chunks = relay.chunks_seen
        if not relay.done_seen and ctx.outcome is StepOutcome.success:
            ctx.outcome = StepOutcome.error  # upstream closed without the API's end event
            err = ProxyError(502, "upstream_error", "the model server ended the stream early")
            await write_quietly(out, codec.stream_error(err, relay.chunks_seen))
        await write_eof_quietly(out)
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
    def _before_first_event(replica: Replica, kind: str, exc: BaseException | None) -> UpstreamAttemptFailed:
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "closed without an event"
        return UpstreamAttemptFailed(kind, f"{replica.id}: stream failed before its first event ({why})")
