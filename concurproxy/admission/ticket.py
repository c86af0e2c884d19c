"""The step's admission ticket as the proxy holds it: an async context manager that
ends the core ticket exactly once, with the right outcome, however the step ends."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

from concurproxy.control.admission.tickets import Admitted, Outcome, Ticket

if TYPE_CHECKING:
    from concurproxy.admission.service import AdmissionService


def outcome_of(exc: BaseException | None) -> Outcome:
    """Outcome for a step that left its ``async with`` with ``exc`` (None: normally)."""
    if exc is None:
        return Outcome.success
    if isinstance(exc, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
        return Outcome.cancelled
    if isinstance(exc, TimeoutError):
        return Outcome.timeout
    return Outcome.error


_OUTCOMES: dict[str, Outcome] = {o.value: o for o in Outcome}  # a member hashes as its string (StrEnum)


def parse_outcome(value: str | Outcome) -> Outcome:
    """Accept the proxy's outcome strings; anything unknown ("rejected", …) is an error."""
    return _OUTCOMES.get(value, Outcome.error)


class StepTicket:
    """Hold with ``async with``. On exit the outcome is the one set with
    ``set_outcome`` if any, else derived from the exception (none → success,
    cancel → cancelled, ``TimeoutError`` → timeout, other → error). Usage
    recorded with ``record_usage`` refines the agent's KV footprint estimate;
    ``finish_agent`` frees the agent's slot when this step ends (last step).
    ``end`` may also be called directly; only the first end counts.
    """

    __slots__ = ("_ended", "_outcome", "_output", "_prompt", "_release", "_service", "queue_wait_s", "ticket")

    def __init__(self, service: AdmissionService, admitted: Admitted) -> None:
        self._service = service
        self.ticket: Ticket = admitted.ticket
        self.queue_wait_s = admitted.waited_s
        self._outcome: Outcome | None = None
        self._prompt = 0
        self._output = 0
        self._release = False
        self._ended = False

    @property
    def replica(self) -> str:
        return self.ticket.replica

    @property
    def ended(self) -> bool:
        return self._ended

    def set_outcome(self, outcome: str | Outcome) -> None:
        self._outcome = _OUTCOMES.get(outcome, Outcome.error)

    def record_usage(self, prompt_tokens: int, output_tokens: int) -> None:
        self._prompt = prompt_tokens if prompt_tokens > 0 else 0  # (not max(): slower, per step)
        self._output = output_tokens if output_tokens > 0 else 0

    def finish_agent(self) -> None:
        self._release = True

    def end(self, outcome: str | Outcome | None = None) -> bool:
        """End the ticket (first call only; later calls are counted no-ops in the core)."""
        final = parse_outcome(outcome) if outcome is not None else (self._outcome or Outcome.success)
        return self._end(final)

    def _end(self, final: Outcome) -> bool:
        first = not self._ended
        self._ended = True
        self._service.end_ticket(
            self.ticket, final, prompt_tokens=self._prompt, output_tokens=self._output, release=self._release
        )
        return first

    def close(self, exc: BaseException | None) -> None:
        """What ``__aexit__`` does, without a coroutine (for a holder that is itself a context manager)."""
        if not self._ended:
            self._ended = True
            self._service.end_ticket(
                self.ticket,
                self._outcome or outcome_of(exc),
                prompt_tokens=self._prompt,
                output_tokens=self._output,
                release=self._release,
            )

    async def __aenter__(self) -> StepTicket:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._ended:
            self._end(self._outcome or outcome_of(exc))
