"""The seams of the request path: where budgets, admission and routing plug in.

Each stage is a small protocol with a pass-through default, so the proxy core
runs (and is tested) without them, and each feature replaces its default
without touching the handlers. The order of one step:

    identity → budgets.check → router.pick → admission.acquire (held across the step)
             → forward (retry before first byte) → StepListener.on_step_end
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from concurproxy.control.types import StepInfo
from concurproxy.identity import Identity
from concurproxy.server.sse import Usage
from concurproxy.upstream.replica import Replica


@dataclass(slots=True)
class StepContext:
    """Everything known about one step as it moves through the path (mutable, one per request)."""

    request_id: str
    route: str
    identity: Identity
    step: StepInfo
    body: dict[str, Any]
    model: str | None
    stream: bool
    started: float
    prompt_hashes: Sequence[int] | None = None  # block keys from StepTokens, when the routing policy uses them
    replica: Replica | None = None
    route_reason: str = ""
    route_decision: Any = None  # the router's RouteDecision, when a routing stage chose
    queue_wait_s: float = 0.0
    dispatch_wait_s: float = 0.0  # held at dispatch: prefill gate + KV reserve, all attempts (stages/dispatch.py)
    on_first_token: Callable[[], None] | None = None  # set by the dispatch stage; the relay calls it once
    attempts: int = 0
    status: int = 0
    outcome: str = "success"  # success | error | cancelled | timeout | rejected
    usage: Usage | None = None
    ttft_s: float | None = None
    upstream_s: float | None = None  # from sending upstream to the last byte relayed
    local_prompt_tokens: int = 0  # the proxy's own count, before calibration to the engine's tokenizer
    extra_headers: dict[str, str] = field(default_factory=dict)
    streamed_chunks: int = 0  # SSE events relayed to the client
    body_modified: bool = False  # set by a stage that edited ``body`` (e.g. a max_tokens clamp)
    budget_reservation: Any = None
    budget_charged: bool = False  # a reservation was settled for this step
    error_code: str | None = None  # the code of the error answered, if any
    budget_denied: str | None = None  # the budget rule that refused the step
    trace_headers: dict[str, str] = field(default_factory=dict)  # the client's valid trace context, sent upstream


class Ticket(Protocol):
    """An admission slot held for the duration of one step."""

    queue_wait_s: float

    def set_outcome(self, outcome: str) -> None: ...


class AdmissionGate(Protocol):
    def acquire(self, ctx: StepContext) -> AbstractAsyncContextManager[Ticket]:
        """Wait for admission on ``ctx.replica``; raise ProxyError (429/503) when refused."""
        ...


class Router(Protocol):
    def pick(self, ctx: StepContext, candidates: Sequence[Replica], now: float) -> Replica:
        """Choose among ``candidates`` (non-empty, healthy, serving the model)."""
        ...

    def forget_replica(self, replica_id: str) -> None:
        """The replica left the pool: drop what is known about its cache."""
        ...

    def release(self, agent_id: str) -> None:
        """The agent finished: drop its pin and per-agent routing state."""
        ...


class BudgetGate(Protocol):
    def check(self, ctx: StepContext, now: float) -> None:
        """Reserve budget or raise ProxyError (429/413); may clamp ``max_tokens`` in ctx.body."""
        ...


class StepListener(Protocol):
    def on_step_end(self, ctx: StepContext, now: float) -> None:
        """Called exactly once per step after it ended (any outcome): settle budgets, charge fairness, record."""
        ...


# --- pass-through defaults -------------------------------------------------------


@dataclass(slots=True)
class _FreeTicket:
    queue_wait_s: float = 0.0

    def set_outcome(self, outcome: str) -> None:
        pass


class _FreeTicketContext:
    __slots__ = ()
    _ticket = _FreeTicket()

    async def __aenter__(self) -> Ticket:
        return self._ticket

    async def __aexit__(self, *exc: object) -> None:
        return None


class NoAdmission:
    """Admit everything (controller ``none``)."""

    _ctx = _FreeTicketContext()

    def acquire(self, ctx: StepContext) -> AbstractAsyncContextManager[Ticket]:
        return self._ctx
