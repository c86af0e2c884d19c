"""Every route the proxy does not admit: relayed to a healthy replica, answered as the engine answers.

Engines serve far more than generation (vLLM: ``/tokenize``, ``/detokenize``,
``/v1/embeddings``, ``/pooling``, ``/score``, ``/rerank``, ``/v1/audio/*``,
``/v2/*``, ``GET``/``DELETE /v1/responses/{id}``, ``/cancel``,
``/v1/messages/count_tokens``, ...). Any method and path that is neither an
admitted API (`pipeline.py`) nor the proxy's own (``/health``, ``/ready``,
``/metrics``, ``/admin/*``, ``/v1/agents/*``) comes here and gets:

* the front door: body limits (413, 408), the tenant from the key (401), the
  rate limit (429) — errors in the path's API shape;
* a replica: the one storing the response for ``/v1/responses/{id}[/…]``
  (`concurproxy.state.responses`; a response of another tenant is not found, one
  whose replica left the pool is a 404), else a healthy replica serving the
  body's ``model`` (any healthy replica when the body names none, or none serves
  it: the engine then answers), least in flight first;
* retries before the first byte only where safe (`forward.RetryRule`);
* the engine's status, headers and body as they come (a 404 is the engine's,
  not invented), streamed when long or chunked (any content type);
* request metrics under a bounded route label (``route_label``); no admission,
  budgets or routing state: these requests hold no KV cache between calls.
"""

from __future__ import annotations

import logging
import re
import time

import orjson
from aiohttp import web

from concurproxy.errors import ProxyError
from concurproxy.identity import DEFAULT_ROLE
from concurproxy.server.components import Components
from concurproxy.server.forward import RetryRule, UpstreamAttemptFailed
from concurproxy.server.ingress import admit_tenant, read_body, take_body
from concurproxy.server.propagation import propagated_headers
from concurproxy.server.relaying import IdleWatchdog
from concurproxy.telemetry.logging import REQUEST_ID_KEY
from concurproxy.upstream.http1 import UpstreamError, UpstreamResponse
from concurproxy.upstream.replica import Replica

log = logging.getLogger("concurproxy.passthrough")

WHOLE_MAX = 1024 * 1024  # a length-delimited answer up to this size is read whole (retryable until then)
RESPONSE_PATH = re.compile(r"/v1/responses/([^/]+)(?:/[^/]*)?\Z")
# Never copied upstream: hop-by-hop fields, framing the client owns, the body's coding (aiohttp has
# decoded the body already), the client's own credentials (the replica's key, if any, replaces them);
# trace context is re-validated (propagation.py).
_REQUEST_SKIP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "host", "content-length", "content-encoding", "expect", "authorization", "x-api-key",
        "proxy-authorization", "cookie", "accept-encoding", "traceparent", "tracestate", "x-request-id",
    }
)  # fmt: skip
_RESPONSE_SKIP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "trailer", "upgrade", "server", "date"}
)
_LABELS = frozenset(
    {
        "/tokenize", "/detokenize", "/v1/embeddings", "/pooling", "/score", "/v1/score", "/rerank", "/v1/rerank",
        "/v2/rerank", "/classify", "/v1/messages/count_tokens", "/v1/audio/transcriptions",
        "/v1/audio/translations", "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/version", "/ping",
    }
)  # fmt: skip


def route_label(path: str) -> str:
    """A bounded metrics label for a passed-through path (no ids, no arbitrary paths)."""
    if path in _LABELS:
        return path
    if RESPONSE_PATH.match(path):
        return "/v1/responses/{id}"
    return "other"


def _model_of(raw: bytes) -> str | None:
    if b'"model"' not in raw:  # most bodies that name no model are not parsed at all
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    model = body.get("model") if body.__class__ is dict else None
    return model if model.__class__ is str else None


class PassThrough:
    def __init__(self, components: Components) -> None:
        self.c = components
        self._turn = 0  # rotates ties between equally loaded replicas

    async def handle(self, request: web.Request) -> web.StreamResponse:
        c = self.c
        c.active_steps += 1  # a graceful shutdown lets it finish too
        try:
            return await self._handle(request)
        finally:
            c.active_steps -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        c = self.c
        started = time.perf_counter()
        if c.shutting_down:
            raise ProxyError(503, "shutting_down", "this proxy instance is shutting down; retry", retry_after_s=1)
        raw = take_body(request)
        if raw is None:
            raw = await read_body(request, c.policy.limits.body_read_timeout_s)
        tenant = admit_tenant(c, request)
        status, replica = 499, None  # 499 until an answer (the client may leave first)
        try:
            pinned = await self._pinned(request.path, tenant)
            replica, resp = await self._send(request, raw, pinned)
            status = resp.status
            return await self._answer(request, replica, resp)
        except ProxyError as err:
            status = err.status
            raise
        finally:
            if c.metrics is not None:
                took = time.perf_counter() - started
                label = route_label(request.path)
                c.metrics.observe_step(label, tenant, DEFAULT_ROLE, status, took, replica.id if replica else None)

    async def _pinned(self, path: str, tenant: str) -> str | None:
        m = RESPONSE_PATH.match(path)
        if m is None:
            return None
        entry = await self.c.response_ids.lookup(m[1])
        if entry is None:
            return None
        if entry.tenant != tenant or self.c.pool.get(entry.replica) is None:
            why = "was not found" if entry.tenant != tenant else f"was stored on replica {entry.replica!r}, which left"
            raise ProxyError(404, "response_not_found", f"response {m[1]!r} {why}")
        return entry.replica

    def _candidates(self, pinned: str | None, model: str | None, tried: list[str]) -> list[Replica]:
        pool = self.c.pool
        if pinned is not None:
            r = pool.get(pinned)
            found = [r] if r is not None and pool.usable(r) else []
        else:
            found = (pool.available(model) if model is not None else []) or pool.available(None)
        return [r for r in found if r.id not in tried]

    async def _send(self, request: web.Request, raw: bytes, pinned: str | None) -> tuple[Replica, UpstreamResponse]:
        """Open the upstream response on the first replica that gives one (retrying where safe)."""
        c = self.c
        forwarder = c.forwarder
        assert forwarder is not None, "the app was not started"
        method, request_id = request.method, request[REQUEST_ID_KEY]
        model = _model_of(raw) if raw else None
        retry_status = method in RetryRule.IDEMPOTENT  # a POST's 502/503 is the engine's answer: relayed
        tried: list[str] = []
        failed: UpstreamAttemptFailed | None = None
        while True:
            candidates = self._candidates(pinned, model, tried)
            if not candidates:
                if failed is not None:
                    raise failed.answer()
                raise ProxyError(503, "no_healthy_replica", "no healthy model server is available", retry_after_s=2)
            if failed is not None and c.metrics is not None:
                c.metrics.upstream_retry(tried[-1], failed.kind)  # counted against the replica that failed
            replica = self._pick(candidates)
            tried.append(replica.id)
            headers = self._headers(request, replica, request_id)
            replica.in_flight += 1
            try:
                resp = await forwarder.open(replica, method, request.raw_path, raw, headers, retry_status)
                return replica, resp
            except UpstreamAttemptFailed as exc:
                if not forwarder.may_retry(exc, replica, len(tried), request_id, method, step=False):
                    raise exc.answer() from None
                failed = exc
            finally:
                replica.in_flight -= 1

    def _pick(self, candidates: list[Replica]) -> Replica:
        if len(candidates) == 1:
            return candidates[0]
        self._turn += 1
        n = len(candidates)
        rotated = candidates[self._turn % n :] + candidates[: self._turn % n]
        return min(rotated, key=lambda r: r.in_flight)

    def _headers(self, request: web.Request, replica: Replica, request_id: str) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _REQUEST_SKIP}
        headers["X-Request-Id"] = request_id
        if "traceparent" in request.headers:
            headers.update(propagated_headers(request.headers)[0])
        if replica.api_key:
            headers["Authorization"] = f"Bearer {replica.api_key}"
        return headers

    async def _answer(self, request: web.Request, replica: Replica, resp: UpstreamResponse) -> web.StreamResponse:
        forwarder = self.c.forwarder
        assert forwarder is not None
        headers = {k: v for k, v in resp.headers.raw if k.lower() not in _RESPONSE_SKIP}
        headers["X-Request-Id"] = request[REQUEST_ID_KEY]
        headers["x-concurproxy-replica"] = replica.id
        length = resp.headers.get("content-length")
        if request.method == "HEAD" or (length is not None and length.isdigit() and int(length) <= WHOLE_MAX):
            data = await forwarder.read_whole(replica, resp)
            return web.Response(status=resp.status, body=data, headers=headers)
        out = web.StreamResponse(status=resp.status, headers=headers)
        watchdog = IdleWatchdog(resp, forwarder.timeouts.idle_s)
        try:
            await out.prepare(request)
            while (chunk := await resp.next_chunk()) is not None:
                watchdog.kick()
                await out.write(chunk)
        except ConnectionResetError:  # the client left: releasing the unfinished response closes it upstream
            return out
        except (UpstreamError, TimeoutError) as exc:
            # The client has the head and part of the body: the only honest signal left is to cut the
            # connection, so it cannot take the truncated body for a whole one.
            log.warning("passthrough %s %s: %s failed mid-body: %s", request.method, request.path, replica.id, exc)
            if request.transport is not None:
                request.transport.abort()
            return out
        finally:
            watchdog.cancel()
            resp.release()
        await out.write_eof()
        return out
