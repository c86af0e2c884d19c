"""Adapter from ``AdmissionService`` to the proxy's ``AdmissionGate`` seam (server/hooks.py)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from concurproxy.admission.service import AdmissionService
from concurproxy.admission.ticket import StepTicket

if TYPE_CHECKING:
    from concurproxy.server.hooks import StepContext


class AdmissionGateAdapter:
    """``components.admission = AdmissionGateAdapter(service)``.

    ``acquire(ctx)`` waits for admission of ``ctx.step`` on ``ctx.replica``; on
    exit it records ``ctx.usage`` into the footprint estimate, frees the agent's
    slot when ``ctx.identity.done`` (``X-Agent-Done`` or a one-shot request
    without an agent id), and ends the ticket with the outcome the handler set.
    """

    def __init__(self, service: AdmissionService) -> None:
        self.service = service

    def acquire(self, ctx: StepContext) -> _GateContext:
        return _GateContext(self.service, ctx)


class _GateContext:
    __slots__ = ("_ctx", "_service", "_ticket")

    def __init__(self, service: AdmissionService, ctx: StepContext) -> None:
        self._service = service
        self._ctx = ctx
        self._ticket: StepTicket | None = None

    async def __aenter__(self) -> StepTicket:
        replica = self._ctx.replica.id if self._ctx.replica is not None else "default"
        self._ticket = await self._service.acquire(self._ctx.step, replica)
        return self._ticket

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        t = self._ticket
        if t is None or t.ended:
            return
        usage = self._ctx.usage
        if usage is not None:
            t.record_usage(usage.prompt_tokens, usage.completion_tokens)
        if self._ctx.identity.done:
            t.finish_agent()
        await t.__aexit__(exc_type, exc, tb)
