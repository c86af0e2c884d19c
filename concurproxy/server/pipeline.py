"""The one step pipeline: every admitted API (chat, completions, Responses, Messages) goes through it.

One step = one call of `StepPipeline.handle` (the route handler, bound to the API's
codec). The stages, in order (``STAGES``):

1. **identity** — body (size, timeout), API validation (``codec.parse``, errors in
   the API's shape), tenant from the key, rate limit, agent identity (headers,
   body; a Responses ``previous_response_id`` chain inherits its first step's
   agent and is pinned to the replica that stores its parent), prompt estimate
   and prefix hashes (``codec.prompt_text``), priority class.
2. **budgets** — ``budgets.check``: reserve, refuse (429/413) or clamp the output
   limit through the codec.
3. **routing** — per attempt, ``router.pick`` among healthy replicas serving the
   model; the pipeline then writes routing's resident-prefix estimate into the
   step that admission reads (``ctx.step``), here and nowhere else.
4. **admission** — ``async with admission.acquire(ctx) as ticket`` around one attempt.
5. **dispatch** — the per-replica prefill gate / KV reserve (when enabled).
6. **relay** — one upstream call (`forward.Forwarder`), answer relayed whole or event
   by event; a failure before the first byte is retried per `forward.RetryRule`.
7. **settle** — ``budgets.settle``, the Responses id → replica map, then every
   listener (metrics, routing, calibration, shared state) and the trace, once.

Per-step cost is a tracked figure (README, performance): one coroutine per stage
that must await, none per chunk, the client's bytes forwarded as they came unless
the codec edited the body, and no tracing calls when tracing is off.
"""

from __future__ import annotations

import time
from typing import Final

import orjson
from aiohttp import web

from concurproxy.errors import ProxyError
from concurproxy.identity import extract_identity
from concurproxy.server.api import ApiCodec
from concurproxy.server.components import Components
from concurproxy.server.engine_priority import with_priority
from concurproxy.server.forward import UpstreamAttemptFailed, upstream_headers
from concurproxy.server.ingress import admit_tenant, read_body, take_body
from concurproxy.server.stages.identity import IdentityStage
from concurproxy.server.stages.sessions import AGENT_HEADER
from concurproxy.server.step import StepContext, StepOutcome
from concurproxy.state.responses import ResponseEntry
from concurproxy.telemetry.logging import REQUEST_ID_KEY
from concurproxy.telemetry.tracing import NoopPhase, NoopStep, Phase, StepTrace
from concurproxy.upstream.replica import Replica

STAGES: Final = ("identity", "budgets", "routing", "admission", "dispatch", "relay", "settle")

_NO_PHASE = NoopPhase()  # the upstream phase's stand-in when tracing is off


class StepPipeline:
    def __init__(self, components: Components) -> None:
        self.c = components
        self.identity = IdentityStage(components)

    async def handle(self, request: web.Request, codec: ApiCodec) -> web.StreamResponse:
        """One step of ``codec``'s API (one coroutine per step: the stages below are inline or sync)."""
        c = self.c
        c.active_steps += 1
        try:
            started = time.perf_counter()
            if c.shutting_down:
                raise ProxyError(503, "shutting_down", "this proxy instance is shutting down; retry", retry_after_s=1)
            # 1. identity
            limits = c.policy.limits
            raw = take_body(request)
            if raw is None:
                raw = await read_body(request, limits.body_read_timeout_s)
            body = codec.parse(raw, limits.max_messages)
            tenant = admit_tenant(c, request)
            request_id = request[REQUEST_ID_KEY]  # set by app.front (the client's id when safe)
            ident = extract_identity(request.headers, body, tenant, request_id)
            pinned: str | None = None
            chained: str | None = None  # the chain's agent, when the step named none (reported like an inferred one)
            parent = codec.parent_id(body)
            if parent is not None:  # a Responses chain: its replica, and its agent unless named
                named = not ident.one_shot
                ident, pinned = await self.identity.continue_chain(parent, ident)
                chained = None if named or ident.one_shot else ident.agent_id
            session = None
            if ident.one_shot and c.sessions is not None:  # no agent named: the client's session id, or inferred
                ident, session = await c.sessions.resolve(codec, body, request.headers, ident, request_id)
            model = body["model"]
            if c.pool.knows_model(model) is False:
                raise ProxyError(
                    404, "model_not_found", f"the model {model!r} does not exist on any replica", param="model"
                )
            ctx = self.identity.context(request, codec, body, ident, request_id, started)
            ctx.pinned_replica = pinned
            if chained is not None:
                ctx.extra_headers[AGENT_HEADER] = chained
            if session is not None and not session.one_shot:
                ctx.session = session
                ctx.extra_headers[AGENT_HEADER] = session.agent_id
                if session.inferred:
                    ctx.captured = []
            if ctx.stream and codec.request_stream_usage(body):
                ctx.strip_usage = ctx.body_modified = True
            # None when tracing is off: the step then makes no tracing calls at all
            trace = c.tracing.start_step(request.headers, ctx.route, ctx.step) if c.tracing.enabled else None
            error: BaseException | None = None
            try:
                # 2. budgets
                c.budgets.check(ctx, c.clock())
                # 3-6. routing → admission → dispatch → relay, per attempt. The client's bytes go
                # upstream untouched unless the codec edited the body.
                payload = orjson.dumps(ctx.body) if ctx.body_modified else raw
                return await self._dispatch(request, ctx, payload, trace)
            except ProxyError as err:
                ctx.status = err.status
                ctx.error_code = err.code
                ctx.outcome = StepOutcome.of_status(err.status)
                err.headers.update(ctx.extra_headers)
                raise
            except BaseException as exc:
                if not ctx.delivered:  # the client left after the end event: a success (forward.py)
                    ctx.outcome = StepOutcome.cancelled
                    error = exc
                raise
            finally:
                # 7. settle
                self._settle(ctx, trace, error)
        finally:
            c.active_steps -= 1

    async def _dispatch(
        self, request: web.Request, ctx: StepContext, payload: bytes, trace: StepTrace | NoopStep | None
    ) -> web.StreamResponse:
        c = self.c
        forwarder = c.forwarder
        assert forwarder is not None, "the app was not started"
        tried: list[str] = []
        failed: UpstreamAttemptFailed | None = None
        while True:
            candidates = self._candidates(ctx, tried)
            if not candidates:
                raise self._no_replica(ctx, failed)
            if failed is not None and c.metrics is not None:
                c.metrics.upstream_retry(tried[-1], failed.kind)  # counted against the replica that failed
            # 3. routing
            if trace is None:
                replica = c.router.pick(ctx, candidates, c.clock())
            else:
                with trace.phase("routing") as phase:
                    replica = c.router.pick(ctx, candidates, c.clock())
                    phase.set("concurproxy.route_reason", ctx.route_reason)
            if ctx.resident_prefix_tokens != ctx.step.resident_prefix_tokens:  # what admission reads
                ctx.step = ctx.step.with_resident_prefix(ctx.resident_prefix_tokens)
            ctx.replica = replica
            ctx.attempts += 1
            tried.append(replica.id)
            # 4. admission, around one attempt
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
                        # 5. dispatch, 6. relay
                        if c.dispatch is None:
                            result = await self._attempt(request, ctx, replica, payload, trace)
                        else:
                            async with c.dispatch.hold(ctx, replica.id):
                                result = await self._attempt(request, ctx, replica, payload, trace)
                    except (UpstreamAttemptFailed, ProxyError):
                        ticket.set_outcome(StepOutcome.error)
                        raise
                    except BaseException:
                        ticket.set_outcome(StepOutcome.success if ctx.delivered else StepOutcome.cancelled)
                        raise
                    finally:
                        replica.in_flight -= 1
                    ticket.set_outcome(ctx.outcome)
                    return result
            except UpstreamAttemptFailed as exc:  # nothing reached the client: the forwarder's rule decides
                if not forwarder.may_retry(exc, replica, ctx.attempts, ctx.request_id):
                    raise exc.answer() from None
                failed = exc
            finally:
                if waiting is not None:  # refused or cancelled while waiting
                    waiting.__exit__(None, None, None)

    def _candidates(self, ctx: StepContext, tried: list[str]) -> list[Replica]:
        pool = self.c.pool
        if ctx.pinned_replica is not None:
            r = pool.get(ctx.pinned_replica)
            return [r] if r is not None and r.id not in tried and pool.usable(r) else []
        available = pool.available(ctx.model)  # a new list each call
        return [r for r in available if r.id not in tried] if tried else available

    @staticmethod
    def _no_replica(ctx: StepContext, failed: UpstreamAttemptFailed | None) -> ProxyError:
        if failed is not None:
            return failed.answer()
        if ctx.pinned_replica is not None:
            return ProxyError(
                503,
                "replica_unavailable",
                f"the replica {ctx.pinned_replica!r} that stores the previous response is not available now",
                retry_after_s=2,
            )
        return ProxyError(
            503, "no_healthy_replica", "no healthy model server is available for this model", retry_after_s=2
        )

    async def _attempt(
        self,
        request: web.Request,
        ctx: StepContext,
        replica: Replica,
        payload: bytes,
        trace: StepTrace | NoopStep | None,
    ) -> web.StreamResponse:
        """One upstream call on ``replica``; raises `UpstreamAttemptFailed` before the client got a byte."""
        forwarder = self.c.forwarder
        assert forwarder is not None
        if replica.priority_scheduling:  # the engine queues by the step's class (engine_priority.py)
            payload = with_priority(payload, ctx.body, ctx.step.priority)
        up_headers = upstream_headers(replica, ctx.trace_headers, ctx.request_id)
        sent_at = time.perf_counter()
        with (
            trace.phase("upstream", **{"concurproxy.replica": replica.id}) if trace is not None else _NO_PHASE as phase
        ):
            phase.inject(up_headers)  # the W3C trace continues into the engine
            resp = await forwarder.open(replica, "POST", ctx.route, payload, up_headers, step=True)
            try:
                if ctx.stream:
                    return await forwarder.relay_stream(request, ctx, replica, resp)
                return await forwarder.relay_json(ctx, replica, resp)
            finally:
                resp.release()  # what `async with resp` does, without its two coroutines
                ctx.upstream_s = time.perf_counter() - sent_at

    def _settle(self, ctx: StepContext, trace: StepTrace | NoopStep | None, error: BaseException | None) -> None:
        """Budgets first (listeners read what they settled), then the stored-response map, then listeners."""
        c = self.c
        now = c.clock()
        c.budgets.settle(ctx, now)
        if ctx.captured is not None and ctx.session is not None and c.sessions is not None:
            if ctx.outcome is StepOutcome.success and ctx.status == 200:  # delivered: the client resends it
                c.sessions.remember(ctx.codec, ctx.session, ctx.captured, ctx.stream)
        if ctx.response_id is not None and ctx.replica is not None and ctx.status == 200:
            ident = ctx.identity
            entry = ResponseEntry(ctx.replica.id, ident.tenant, ident.agent_id, ident.task_id)
            c.response_ids.remember(ctx.response_id, entry)
        for listener in c.listeners:
            listener.on_step_end(ctx, now)
        if trace is not None:
            trace.set("concurproxy.outcome", str(ctx.outcome))
            trace.set("concurproxy.replica", ctx.replica.id if ctx.replica else "")
            trace.set("concurproxy.queue_wait_s", ctx.queue_wait_s)
            trace.set("concurproxy.dispatch_wait_s", ctx.dispatch_wait_s)
            trace.end(ctx.status or None, error)
