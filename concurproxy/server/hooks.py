"""The seams of the request path: where budgets, admission and routing plug in.

Each stage is a small protocol with a pass-through default, so the proxy core
runs (and is tested) without them, and each feature replaces its default
without touching the pipeline. Admission's protocol and its one ticket live with
their implementations in ``server/admission/`` (``gate.py``; ``OpenGate`` is the
pass-through); they are re-exported here. The order of one step is the pipeline's
(`concurproxy.server.pipeline.STAGES`):

    identity → budgets.check → router.pick → admission.acquire (held across the attempt)
             → dispatch → relay (retry before the first byte) → budgets.settle → StepListener.on_step_end
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from concurproxy.server.admission.gate import AdmissionGate, AdmissionTicket
from concurproxy.server.step import StepContext, StepOutcome
from concurproxy.upstream.replica import Replica


class Router(Protocol):
    def pick(self, ctx: StepContext, candidates: Sequence[Replica], now: float) -> Replica:
        """Choose among ``candidates`` (non-empty, healthy, serving the model). May record its
        decision in ``ctx.route_decision`` and ``ctx.resident_prefix_tokens`` (its own fields);
        it never edits ``ctx.step``: the pipeline does, explicitly, before admission."""
        ...

    def forget_replica(self, replica_id: str) -> None:
        """The replica left the pool: drop what is known about its cache."""
        ...

    def release(self, agent_id: str) -> None:
        """The agent finished: drop its pin and per-agent routing state."""
        ...


class BudgetGate(Protocol):
    def check(self, ctx: StepContext, now: float) -> None:
        """Reserve budget or raise ProxyError (429/413); may clamp the output limit (``ctx.codec``)."""
        ...

    def settle(self, ctx: StepContext, now: float) -> None:
        """Once per ended step, before the listeners: charge the usage (or refund the reservation)."""
        ...


class StepListener(Protocol):
    def on_step_end(self, ctx: StepContext, now: float) -> None:
        """Called exactly once per step after it ended and was settled (any outcome): learn, record."""
        ...


# --- pass-through defaults -------------------------------------------------------


class NoBudgets:
    def check(self, ctx: StepContext, now: float) -> None:
        return None

    def settle(self, ctx: StepContext, now: float) -> None:
        return None


__all__ = [
    "AdmissionGate",
    "AdmissionTicket",
    "BudgetGate",
    "NoBudgets",
    "Router",
    "StepContext",
    "StepListener",
    "StepOutcome",
]
