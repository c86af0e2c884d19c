"""The open gate: ``admission.controller: none`` — every step admitted at once, nothing tracked.

The plain-engine baseline of the benchmarks, and the switch that turns admission off without
removing the proxy (identity, budgets and routing still apply). Its tickets have no core ticket,
so entering and leaving them costs two calls; there is no window to report, release or forget.
The simulator runs the same policy the same way (``DecisionCore.admission`` is None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from concurproxy.config.models import Policy
from concurproxy.control.admission.tickets import Ticket
from concurproxy.control.types import PressureSnapshot, StepOutcome
from concurproxy.server.admission.gate import AdmissionTicket

if TYPE_CHECKING:
    from concurproxy.server.step import StepContext


class OpenGate:
    def acquire(self, ctx: StepContext) -> AdmissionTicket:
        replica = ctx.replica
        return AdmissionTicket(self, ctx.step, replica.id if replica is not None else "")

    def _enter(self, ticket: AdmissionTicket) -> bool:
        return True

    async def _wait(self, ticket: AdmissionTicket) -> None:  # never called: every step enters at once
        return None

    def _end(self, ticket: Ticket, outcome: StepOutcome, prompt: int, output: int, release: bool) -> bool:
        return False  # (no core ticket is ever issued)

    def on_pressure(self, replica: str, snapshot: PressureSnapshot | None) -> None:
        return None

    async def run(self) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {"controller": "none"}

    def forget_replica(self, replica: str) -> None:
        return None

    def reconfigure(self, policy: Policy) -> None:
        return None

    def release_agent(self, agent_id: str) -> bool:
        return False

    def window_room(self, replica: str) -> tuple[int, int] | None:
        return None
