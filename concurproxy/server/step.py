"""One step's context as it moves through the pipeline, and the one outcome it ends with.

`StepContext` is typed field by field and grouped by the stage that writes it:
identity (the request, fixed once read), routing/admission/dispatch (the
placement of the current attempt), the relay (the result) and budgets. Stages
write only their own group; what admission reads (``step``) is rebuilt by the
pipeline itself after routing (`pipeline.StepPipeline`), never behind its back.

The step's outcome is a `StepOutcome` (``control.types``: the one enum, which the
admission core's ``end`` takes too), set where the fact is known (the relay for an
answered step, the pipeline for a refused, failed or cancelled one) and handed as is
to the admission ticket and to the listeners: no string is parsed back.

Why one slotted dataclass and not several objects: one is built per step on the
hot path (a nested object per group costs an allocation and an attribute hop
each); the groups are documented here and enforced by review.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from concurproxy.control.budgets import Reservation
from concurproxy.control.types import StepInfo, StepOutcome
from concurproxy.identity import Identity
from concurproxy.routing.types import RouteDecision
from concurproxy.server.api import CHAT, ApiCodec
from concurproxy.server.api.usage import Usage
from concurproxy.sessions.resolver import Resolved
from concurproxy.upstream.replica import Replica


@dataclass(slots=True)
class StepContext:
    """Everything known about one step (one per request). Positional order of the first eight
    fields is kept from the first version (tests build contexts positionally)."""

    # --- identity: the request, fixed once read ----------------------------------------------
    request_id: str
    route: str  # the API path (a metrics label)
    identity: Identity
    step: StepInfo  # what budgets, admission and dispatch read; rebuilt by the pipeline after routing
    body: dict[str, Any]  # the parsed JSON body (edited only through the codec)
    model: str | None
    stream: bool
    started: float  # time.perf_counter() at arrival
    codec: ApiCodec = CHAT
    prompt_hashes: Sequence[int] | None = None  # from the router's prompt_tokens, when it hashes prefixes
    local_prompt_tokens: int = 0  # the proxy's own count, before calibration to the engine's tokenizer
    trace_headers: dict[str, str] = field(default_factory=dict)  # the client's valid trace context
    extra_headers: dict[str, str] = field(default_factory=dict)  # sent back to the client
    body_modified: bool = False  # the body was edited (clamp, usage request): re-serialise it
    strip_usage: bool = False  # the proxy asked the stream for usage the client did not want
    pinned_replica: str | None = None  # the replica that must serve it (it stores the parent response)
    session: Resolved | None = None  # the agent a step without identity was given (stages/sessions.py)
    captured: list[bytes] | None = None  # the answer's bytes as relayed, kept only for an inferred agent
    # --- placement of the current attempt: routing → admission → dispatch ------------------------
    replica: Replica | None = None
    route_decision: RouteDecision | None = None  # the router's choice, when a routing stage chose
    resident_prefix_tokens: int = 0  # routing's estimate of the prompt already cached on the replica
    indexed_prefix_tokens: int = 0  # what the router's index alone says is cached (before `ResidentTrust`)
    attempts: int = 0
    queue_wait_s: float = 0.0
    dispatch_wait_s: float = 0.0  # held at dispatch: prefill gate + KV reserve, all attempts
    on_first_token: Callable[[], None] | None = None  # set by the dispatch stage; the relay calls it once
    # --- result: the relay, or the pipeline for a refused / failed step ---------------------------
    status: int = 0
    outcome: StepOutcome = StepOutcome.success
    usage: Usage | None = None
    response_id: str | None = None  # the id the engine stored the answer under (Responses)
    ttft_s: float | None = None
    upstream_s: float | None = None  # from sending upstream to the last byte relayed
    streamed_chunks: int = 0  # SSE events relayed to the client
    delivered: bool = False  # the client has the stream's end event: leaving after it cancels nothing
    error_code: str | None = None  # the code of the error answered, if any
    # --- budgets -----------------------------------------------------------------------------------
    budget_reservation: Reservation | None = None
    budget_charged: bool = False  # a reservation was settled for this step
    budget_denied: str | None = None  # the budget rule that refused the step

    @property
    def route_reason(self) -> str:
        d = self.route_decision
        return d.reason if d is not None else ""


__all__ = ["StepContext", "StepOutcome"]
