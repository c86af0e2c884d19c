"""HTTP handlers of the OpenAI-compatible front: completions, models, health.

One step = one call of `CompletionHandler.handle`; see `hooks.py` for the
order of the stages. Everything that can fail turns into a `ProxyError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from concurproxy.control.types import StepInfo
from concurproxy.errors import ProxyError, bad_request
from concurproxy.identity import extract_identity
from concurproxy.server.components import COMPONENTS, Components
from concurproxy.server.engine_priority import with_priority
from concurproxy.server.forward import UpstreamAttemptFailed, choose_candidates, upstream_headers
from concurproxy.server.hooks import StepContext
from concurproxy.server.propagation import propagated_headers
from concurproxy.telemetry.logging import REQUEST_ID_KEY
from concurproxy.telemetry.tracing import NoopPhase, NoopStep, Phase, StepTrace
from concurproxy.tokens import count_tokens, prompt_text
from concurproxy.upstream.replica import Replica

log = logging.getLogger("concurproxy.server")

_NO_PHASE = NoopPhase()  # the upstream phase's stand-in when tracing is off

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def parse_body(raw: bytes, route: str, max_messages: int = 4096) -> dict[str, Any]:
    if not raw:
        raise bad_request("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string", param="model")
    if route == CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' is required and must be a non-empty list", param="messages")
        if len(messages) > max_messages:
            raise bad_request(f"'messages' has {len(messages)} entries; the limit is {max_messages}", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise bad_request(f"messages[{i}] must be an object with a string 'role'", param=f"messages[{i}]")
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not prompt):
            raise bad_request("'prompt' is required: a string or a non-empty list", param="prompt")
    for field in ("max_tokens", "max_completion_tokens"):  # each one given, as openapi.yaml says
        value = body.get(field)
        if value is not None and not _token_count(value):
            raise bad_request(f"'{field}' must be a positive integer", param=field)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", param="stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request("'stream_options' must be an object", param="stream_options")
    if opts is not None and not isinstance(opts.get("include_usage", False), bool):
        raise bad_request("'stream_options.include_usage' must be a boolean", param="stream_options.include_usage")
    return body


INT64_MAX = 2**63 - 1


def _token_count(value: object) -> bool:
    """A JSON integer in [1, 2^63-1]: ``2.0`` is the integer 2 to JSON Schema (and to the engines' pydantic
    models), so the proxy may not refuse what openapi.yaml allows; a bool is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (not isinstance(value, float) or value.is_integer()) and 1 <= value <= INT64_MAX


class CompletionHandler:
    def __init__(self, components: Components) -> None:
        self.c = components

    async def handle(self, request: web.Request, route: str) -> web.StreamResponse:
        """One step (the route handler, bound to ``route`` with a partial: one coroutine per step)."""
        self.c.active_steps += 1
        try:
            started = time.perf_counter()
            c = self.c
            request_id = request[REQUEST_ID_KEY]  # set by app.front (the client's id when safe)
            if c.shutting_down:
                raise ProxyError(503, "shutting_down", "this proxy instance is shutting down; retry", retry_after_s=1)
            limits = c.policy.limits
            try:
                content = request.content
                if content.is_eof():  # the whole body is already buffered (the usual case): no timer
                    # and no coroutines: take the buffer, with request.read()'s size limit
                    raw = content.read_nowait()
                    max_size = request._client_max_size
                    if max_size and len(raw) > max_size:
                        raise web.HTTPRequestEntityTooLarge(max_size, len(raw))
                else:
                    async with asyncio.timeout(limits.body_read_timeout_s):
                        raw = await request.read()
            except TimeoutError:
                raise ProxyError(408, "body_timeout", "the request body did not arrive in time") from None
            except (RequestPayloadError, zlib.error):  # a body that does not decode (Content-Encoding, chunking)
                encoding = request.headers.get("Content-Encoding", "identity")
                raise bad_request(
                    f"the request body could not be decoded (Content-Encoding: {encoding})", code="invalid_encoding"
                ) from None
            body = parse_body(raw, route, limits.max_messages)
            tenant = c.tenants.resolve(request.headers)
            if c.rate_limiter is not None:
                key = tenant if tenant != "anonymous" else f"ip:{request.remote}"
                wait = c.rate_limiter.allow(key, c.clock())
                if wait:
                    raise ProxyError(429, "rate_limited", "too many requests for this API key", retry_after_s=wait)
            ident = extract_identity(request.headers, body, tenant, request_id)
            stream = bool(body.get("stream"))
            strip_usage = False
            if stream:
                opts = body.get("stream_options") or {}
                if not opts.get("include_usage"):
                    body["stream_options"] = {**opts, "include_usage": True}
                    strip_usage = True
            model = body["model"]
            if c.pool.knows_model(model) is False:
                raise ProxyError(
                    404, "model_not_found", f"the model {model!r} does not exist on any replica", param="model"
                )
            max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 0
            agent_id = f"{tenant}/{ident.agent_id}"  # agents are scoped under their tenant
            # One tokenization per step: the router's prefix hasher counts tokens as it hashes.
            text = prompt_text(body)
            n_tokens, hashes = c.router.prompt_tokens(None if ident.one_shot else agent_id, text)
            local = n_tokens if n_tokens is not None else count_tokens(text)
            priority, clamped = c.step_priority(tenant, ident.role, ident.priority)
            step = StepInfo(
                tenant=tenant,
                role=ident.role,
                agent_id=agent_id,
                task_id=f"{tenant}/{ident.task_id}",
                priority=priority,
                est_prompt_tokens=c.calibration.estimate(model, local),
                max_tokens=int(max_tokens),
                last_step=ident.done,
            )
            ctx = StepContext(
                request_id=request_id,
                route=route,
                identity=ident,
                step=step,
                body=body,
                model=model,
                stream=stream,
                started=started,
                prompt_hashes=hashes,
                local_prompt_tokens=local,
            )
            ctx.extra_headers["X-Request-Id"] = request_id
            if "traceparent" in request.headers or "tracestate" in request.headers:
                ctx.trace_headers, dropped = propagated_headers(request.headers)
                if dropped and c.metrics is not None:
                    c.metrics.propagation_dropped(dropped)
            if clamped and ident.priority is not None:  # claimed above the tenant's max_priority: say what applies
                ctx.extra_headers["x-concurproxy-priority"] = f"{priority.name}; requested={ident.priority.name}"
            # None when tracing is off: the step then makes no tracing calls at all
            trace = c.tracing.start_step(request.headers, route, ctx.step) if c.tracing.enabled else None
            error: BaseException | None = None
            try:
                c.budgets.check(ctx, c.clock())
                # Forward the client's bytes untouched unless a stage edited the body.
                unchanged = not strip_usage and not ctx.body_modified
                return await self._dispatch(request, ctx, raw if unchanged else None, strip_usage, trace)
            except ProxyError as err:
                ctx.status = err.status
                ctx.error_code = err.code
                ctx.outcome = "rejected" if err.status in (401, 413, 429) else "error"
                err.headers.update(ctx.extra_headers)
                raise
            except BaseException as exc:
                ctx.outcome = "cancelled"
                error = exc
                raise
            finally:
                now = c.clock()
                for listener in c.listeners:
                    listener.on_step_end(ctx, now)
                if trace is not None:
                    trace.set("concurproxy.outcome", ctx.outcome)
                    trace.set("concurproxy.replica", ctx.replica.id if ctx.replica else "")
                    trace.set("concurproxy.queue_wait_s", ctx.queue_wait_s)
                    trace.set("concurproxy.dispatch_wait_s", ctx.dispatch_wait_s)
                    trace.end(ctx.status or None, error)
        finally:
            self.c.active_steps -= 1

    async def _dispatch(
        self,
        request: web.Request,
        ctx: StepContext,
        raw: bytes | None,
        strip_usage: bool,
        trace: StepTrace | NoopStep | None,
    ) -> web.StreamResponse:
        c = self.c
        assert c.forwarder is not None, "the app was not started"
        payload = raw if raw is not None else orjson.dumps(ctx.body)
        tried: list[str] = []
        last_error: UpstreamAttemptFailed | None = None
        for _ in range(c.policy.retry.attempts):
            candidates = choose_candidates(c.pool, ctx.model, tried)
            if not candidates:
                break
            if last_error is not None and c.metrics is not None:
                c.metrics.upstream_retry(tried[-1], last_error.kind)  # counted against the replica that failed
            if trace is None:
                replica = c.router.pick(ctx, candidates, c.clock())
            else:
                with trace.phase("routing") as phase:
                    replica = c.router.pick(ctx, candidates, c.clock())
                    phase.set("concurproxy.route_reason", ctx.route_reason)
            ctx.replica = replica
            ctx.attempts += 1
            tried.append(replica.id)
            waiting: Phase | NoopPhase | None = trace.phase("admission_wait") if trace is not None else None
            try:
                async with c.admission.acquire(ctx) as ticket:
                    if waiting is not None:
                        waiting.__exit__(None, None, None)
                        waiting = None
                    ctx.queue_wait_s = ticket.queue_wait_s
                    headers = ctx.extra_headers
                    headers["x-concurproxy-replica"] = replica.id
                    wait = ticket.queue_wait_s  # usually 0: skip the float formatting then
                    headers["x-concurproxy-queue-wait-ms"] = f"{wait * 1000:.1f}" if wait else "0.0"
                    replica.in_flight += 1
                    try:
                        if c.dispatch is None:
                            result = await self._attempt(request, ctx, replica, payload, strip_usage, trace)
                        else:
                            async with c.dispatch.hold(ctx, replica.id):
                                result = await self._attempt(request, ctx, replica, payload, strip_usage, trace)
                    except BaseException:
                        ticket.set_outcome("cancelled")
                        raise
                    finally:
                        replica.in_flight -= 1
                    if isinstance(result, UpstreamAttemptFailed):
                        last_error = result
                        ticket.set_outcome("error")
                        continue
                    ticket.set_outcome(ctx.outcome)
                    return result
            finally:
                if waiting is not None:  # refused or cancelled while waiting
                    waiting.__exit__(None, None, None)
        if last_error is None:
            raise ProxyError(
                503, "no_healthy_replica", "no healthy model server is available for this model", retry_after_s=2
            )
        if last_error.kind == "timeout":
            raise ProxyError(504, "upstream_timeout", "the model server did not answer in time", retry_after_s=5)
        raise ProxyError(502, "upstream_unavailable", f"the model servers failed: {last_error}", retry_after_s=1)

    async def _attempt(
        self,
        request: web.Request,
        ctx: StepContext,
        replica: Replica,
        payload: bytes,
        strip_usage: bool,
        trace: StepTrace | NoopStep | None,
    ) -> web.StreamResponse | UpstreamAttemptFailed:
        """One try on one replica; a failure before the first byte comes back as a value (retryable)."""
        c = self.c
        assert c.forwarder is not None
        if replica.priority_scheduling:  # the engine queues by the step's class (engine_priority.py)
            payload = with_priority(payload, ctx.body, ctx.step.priority)
        up_headers = upstream_headers(replica, ctx.trace_headers, ctx.request_id)
        sent_at = time.perf_counter()
        with (
            trace.phase("upstream", **{"concurproxy.replica": replica.id}) if trace is not None else _NO_PHASE as phase
        ):
            phase.inject(up_headers)  # the W3C trace continues into the engine
            try:
                resp = await c.forwarder.open(ctx, replica, payload, up_headers)
                try:
                    if ctx.stream:
                        return await c.forwarder.relay_stream(request, ctx, resp, strip_usage)
                    return await c.forwarder.relay_json(ctx, resp)
                finally:
                    resp.release()  # what `async with resp` does, without its two coroutines
                    ctx.upstream_s = time.perf_counter() - sent_at
            except UpstreamAttemptFailed as exc:  # before the first byte reached the client
                if exc.passive_failure:
                    c.pool.mark_failure(replica, str(exc))
                retrying = ctx.attempts < c.policy.retry.attempts
                log.info(
                    "step %s: attempt on %s failed (%s)%s",
                    ctx.request_id,
                    replica.id,
                    exc.kind,
                    ", retrying" if retrying else "",
                )
                return exc


async def models(request: web.Request) -> web.Response:
    c = request.app[COMPONENTS]
    now = int(time.time())
    data = [{"id": m, "object": "model", "created": now, "owned_by": "concurproxy"} for m in c.pool.models()]
    return web.json_response({"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode())


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    c = request.app[COMPONENTS]
    replicas = [{"id": r.id, "healthy": r.healthy, "draining": r.draining, "error": r.last_error} for r in c.pool]
    if c.pool.any_available() and not c.shutting_down:
        return web.json_response({"status": "ready", "replicas": replicas})
    return web.json_response({"status": "not ready", "replicas": replicas}, status=503, headers={"Retry-After": "2"})


__all__ = ["CompletionHandler", "aiohttp", "health", "models", "ready"]
