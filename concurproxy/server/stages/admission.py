"""Admission stage: hold an agent-level admission ticket across one step.

Adapter between the request path and `concurproxy.admission.AdmissionService`
(the async shell of the pure admission core). The ticket is entered before the
upstream call and left after the last byte: a step that fails, times out or
whose client disconnects ends its ticket exactly once with that outcome. The
agent's reported usage refines its KV footprint; ``X-Agent-Done`` (or a
request without identity) frees its slot when the step ends.
"""

from __future__ import annotations

from types import TracebackType

from concurproxy.admission.service import AdmissionService
from concurproxy.admission.ticket import StepTicket
from concurproxy.server.hooks import StepContext


class _HeldTicket:
    __slots__ = ("_ctx", "_service", "_ticket")

    def __init__(self, service: AdmissionService, ctx: StepContext) -> None:
        self._service = service
        self._ctx = ctx
        self._ticket: StepTicket | None = None

    async def __aenter__(self) -> StepTicket:
        ctx = self._ctx
        assert ctx.replica is not None
        ticket = await self._service.acquire(ctx.step, ctx.replica.id)
        if ctx.identity.done:
            ticket.finish_agent()
        self._ticket = ticket
        return ticket

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ticket = self._ticket
        if ticket is None:
            return
        usage = self._ctx.usage
        if usage is not None:
            ticket.record_usage(usage.prompt_tokens, usage.completion_tokens)
        ticket.close(exc)


class AdmissionStage:
    def __init__(self, service: AdmissionService) -> None:
        self.service = service

    def acquire(self, ctx: StepContext) -> _HeldTicket:
        return _HeldTicket(self.service, ctx)

    def window_room(self, replica_id: str) -> tuple[int, int] | None:
        """(free slots, window) of a replica, for the router's window-room scorer."""
        w = self.service.core.window(replica_id)
        return max(0, w.window - w.active), w.window
