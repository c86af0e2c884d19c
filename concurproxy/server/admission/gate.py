"""The admission seam of the request path: one protocol, one ticket.

    async with gate.acquire(ctx) as ticket:    # waits for admission on ctx.replica, or raises 429/503
        ...                                    # one attempt: dispatch, relay
        ticket.set_outcome(ctx.outcome)

Implementations, chosen once at assembly from the policy's `DecisionCore` (``build_gate``):

* `WindowGate` (``windows.py``): the admission core's windows of agents per replica, made awaitable;
* `SharedWindowGate` (``leases.py``): the same, plus a lease step on Redis so the instances of a
  fleet share each replica's window;
* `OpenGate` (``open.py``): ``admission.controller: none``, every step admitted at once.

The protocol holds everything a caller does with admission — the admin state, an agent's release,
a replica leaving, a reload, the router's window-room scorer, the pressure hook and the
housekeeping loop — so no caller asks which implementation it holds.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from concurproxy.config.models import Policy
from concurproxy.control.admission.tickets import Ticket
from concurproxy.control.types import PressureSnapshot, StepInfo, StepOutcome

if TYPE_CHECKING:
    from concurproxy.server.step import StepContext


class AdmissionGate(Protocol):
    def acquire(self, ctx: StepContext) -> AdmissionTicket:
        """The ticket of ``ctx``'s attempt on ``ctx.replica``: enter it to wait for admission (ProxyError
        429/503 when refused); leaving it ends the step's slot with its outcome and usage."""
        ...

    def on_pressure(self, replica: str, snapshot: PressureSnapshot | None) -> None:
        """A replica's latest pressure (the poller's hook): the window controller updates, waiters move."""
        ...

    async def run(self) -> None:
        """Housekeeping (idle expiry, queue timeouts, grants) until cancelled; returns at once if none."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON-ready live state for ``GET /admin/state`` (``controller`` first)."""
        ...

    def forget_replica(self, replica: str) -> None:
        """The replica left the pool: its steps waiting here get a 503 at once."""
        ...

    def reconfigure(self, policy: Policy) -> None:
        """A reload: the roles' window shares and the tenants' weights of ``policy``."""
        ...

    def release_agent(self, agent_id: str) -> bool:
        """The agent finished (``DELETE /v1/agents/{id}``): free its slot. True if it held one."""
        ...

    def window_room(self, replica: str) -> tuple[int, int] | None:
        """(free slots, window) of a replica for the router's window-room scorer; None: no window."""
        ...


class _Gate(Protocol):
    """What a ticket asks of the gate that issued it (package-private)."""

    def _enter(self, ticket: AdmissionTicket) -> bool: ...
    async def _wait(self, ticket: AdmissionTicket) -> None: ...
    def _end(self, ticket: Ticket, outcome: StepOutcome, prompt: int, output: int, release: bool) -> bool: ...


class AdmissionTicket:
    """One attempt's admission slot, held with ``async with`` (the only ticket the request path holds).

    Entering waits for admission: ``_enter`` decides at once (the usual case: a step of an admitted
    agent), else ``_wait`` awaits the grant (and, for the shared gate, the lease). ``core`` is then
    the admission core's ticket (None under the open gate) and ``queue_wait_s`` the seconds waited.
    Leaving ends the core ticket exactly once: with the outcome set by ``set_outcome`` if any, else
    ``StepOutcome.of_exception`` of how the block was left; with the step's usage (``ctx.usage``, or
    ``record_usage``), which refines the agent's KV footprint; and releasing the agent's slot when the
    step is its last (``StepInfo.last_step``: ``X-Agent-Done``, or no identity) or ``finish_agent``
    was called. A wait that fails after the slot was taken (a cancelled lease claim) ends it too.
    ``end`` ends it directly: the first end counts, a later one is a counted no-op in the core.
    """

    __slots__ = (
        "_ended",
        "_gate",
        "_outcome",
        "_output",
        "_prompt",
        "_release",
        "core",
        "ctx",
        "queue_wait_s",
        "replica",
        "step",
        "waiter",
    )

    def __init__(self, gate: _Gate, step: StepInfo, replica: str, ctx: StepContext | None = None) -> None:
        self._gate = gate
        self.step = step
        self.replica = replica
        self.ctx = ctx  # read for the usage when the ticket is left
        self.core: Ticket | None = None
        self.queue_wait_s = 0.0
        self.waiter: Any = None  # while the step waits: what the gate waits on (gate-private)
        self._outcome: StepOutcome | None = None
        self._release = step.last_step
        self._prompt = 0
        self._output = 0
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def set_outcome(self, outcome: StepOutcome) -> None:
        self._outcome = outcome

    def record_usage(self, prompt_tokens: int, output_tokens: int) -> None:
        self._prompt = prompt_tokens if prompt_tokens > 0 else 0  # (not max(): slower, per step)
        self._output = output_tokens if output_tokens > 0 else 0

    def finish_agent(self) -> None:
        self._release = True

    def end(self, outcome: StepOutcome | None = None) -> bool:
        """End the slot now (a second end is counted by the core as a double end). True the first time."""
        first = not self._ended
        self._ended = True
        core = self.core
        if core is not None:
            final = outcome if outcome is not None else (self._outcome or StepOutcome.success)
            self._gate._end(core, final, self._prompt, self._output, self._release)
        return first

    def close(self, exc: BaseException | None) -> None:
        """What leaving the block does: end the slot once, with the outcome and the usage."""
        if self._ended:
            return
        self._ended = True
        core = self.core
        if core is None:  # never admitted (refused, cancelled while waiting) or the open gate
            return
        ctx = self.ctx
        if ctx is not None and (usage := ctx.usage) is not None:
            self.record_usage(usage.prompt_tokens, usage.completion_tokens)
        outcome = self._outcome or StepOutcome.of_exception(exc)
        self._gate._end(core, outcome, self._prompt, self._output, self._release)

    async def __aenter__(self) -> AdmissionTicket:
        if self.core is not None:  # entered already (``WindowGate.admit``): the block just holds it
            return self
        gate = self._gate
        if not gate._enter(self):
            try:
                await gate._wait(self)
            except BaseException as exc:
                self.close(exc)  # a slot taken before the wait failed is given back, never leaked
                raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exc)
