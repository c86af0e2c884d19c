"""Identity stage: who the step is and what it asks for, as budgets, routing and admission read it.

From the validated body (through the step's codec) and the client's identity
(`concurproxy.identity`): the tenant-scoped agent and task, the priority class
(the claim capped by the tenant's ``max_priority``, else the role's), the
prompt estimate in the engine's units (one tokenization per step: the router's
prefix hasher counts as it hashes; `calibration.py` scales to the engine), the
output limit, and the client's trace context (validated, ``propagation.py``).

A Responses step that continues a stored response (``previous_response_id``)
is one more step of that chain's agent: without identity headers it takes the
agent and task of the chain's first step, and it must run on the replica that
stores its parent (`concurproxy.state.responses`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from concurproxy.control.types import StepInfo
from concurproxy.errors import ProxyError
from concurproxy.identity import Identity
from concurproxy.server.api import ApiCodec
from concurproxy.server.components import Components
from concurproxy.server.propagation import propagated_headers
from concurproxy.server.step import StepContext


class IdentityStage:
    def __init__(self, components: Components) -> None:
        self.c = components

    def context(
        self,
        request: web.Request,
        codec: ApiCodec,
        body: dict[str, Any],
        ident: Identity,
        request_id: str,
        started: float,
    ) -> StepContext:
        c = self.c
        tenant = ident.tenant
        agent_id = f"{tenant}/{ident.agent_id}"  # agents are scoped under their tenant
        model: str = body["model"]  # checked by codec.parse
        # One tokenization per step: the model's own tokenizer and template when configured, else the estimator;
        # it counts as it hashes the prefix blocks (concurproxy/tokenizer/step.py).
        chat, route = codec.chat_body(body)
        local, hashes = c.tokens.step_tokens(None if ident.one_shot else agent_id, model, chat, route)
        priority, clamped = c.step_priority(tenant, ident.role, ident.priority)
        step = StepInfo(
            tenant=tenant,
            role=ident.role,
            agent_id=agent_id,
            task_id=f"{tenant}/{ident.task_id}",
            priority=priority,
            est_prompt_tokens=c.calibration.estimate(model, local),
            max_tokens=codec.max_output(body),
            last_step=ident.done,
        )
        stream = body.get("stream") is True
        ctx = StepContext(request_id, codec.route, ident, step, body, model, stream, started, codec, hashes, local)
        ctx.extra_headers["X-Request-Id"] = request_id
        if "traceparent" in request.headers or "tracestate" in request.headers:
            ctx.trace_headers, dropped = propagated_headers(request.headers)
            if dropped and c.metrics is not None:
                c.metrics.propagation_dropped(dropped)
        if clamped and ident.priority is not None:  # claimed above the tenant's max_priority: say what applies
            ctx.extra_headers["x-concurproxy-priority"] = f"{priority.name}; requested={ident.priority.name}"
        return ctx

    async def continue_chain(self, parent_id: str, ident: Identity) -> tuple[Identity, str | None]:
        """The replica storing ``parent_id`` and the identity of its chain.

        Unknown ids (made elsewhere, or forgotten) are the engine's to answer: no pin. A response of
        another tenant is answered as unknown (its existence is not revealed); one whose replica left
        the pool cannot be continued anywhere: 404 in the Responses shape."""
        entry = await self.c.response_ids.lookup(parent_id)
        if entry is None:
            return ident, None
        if entry.tenant != ident.tenant:
            raise _parent_not_found(parent_id, "was not found")
        if self.c.pool.get(entry.replica) is None:
            raise _parent_not_found(parent_id, f"was stored on replica {entry.replica!r}, which left the pool")
        if ident.one_shot:  # no identity sent: the chain is one agent, its first step's
            ident = Identity(ident.tenant, entry.agent_id, entry.task_id, ident.role, ident.priority, False, False)
        return ident, entry.replica


def _parent_not_found(parent_id: str, why: str) -> ProxyError:
    return ProxyError(
        404, "previous_response_not_found", f"previous response {parent_id!r} {why}", param="previous_response_id"
    )
