"""Tickets and admission results: what ``try_admit`` hands back instead of callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from concurproxy.control.types import StepInfo, StepOutcome

Outcome = StepOutcome  # the name the windows read it by (``window.py``); one enum, defined in ``control.types``


@dataclass(slots=True)
class Ticket:
    """One admitted step. Must be ended exactly once (``ReplicaWindow.end``); ending it
    again is a counted no-op. Identity is ``(replica, id)``.

    Treat as immutable. Not ``frozen``: one is built per step, and a frozen dataclass costs
    about six times as much to construct (``object.__setattr__`` per field); same for `Admitted`."""

    id: int
    replica: str
    agent_id: str
    step: StepInfo
    admitted_at: float
    reason: str  # "in-window" (agent already admitted), "new", "starvation", "unbounded"


@dataclass(slots=True)
class Admitted:
    ticket: Ticket
    waited_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Queued:
    """The step waits; ``waiter_id`` identifies it in later grants, cancels and timeouts."""

    waiter_id: int
    position: int  # 1 = next in line by arrival


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # "queue-full"
    retry_after_s: float


AdmitResult = Admitted | Queued | Rejected


@dataclass(frozen=True, slots=True)
class Grant:
    """A waiter that was admitted later (slot opened, window grew, starvation)."""

    waiter_id: int
    admitted: Admitted


@dataclass(frozen=True, slots=True)
class WaiterTimeout:
    """A waiter that hit ``max_queue_wait_s``; the shell answers it 503 + Retry-After."""

    waiter_id: int
    agent_id: str
    waited_s: float
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class ExpireResult:
    """What one expiry pass dropped: agents idle past their TTL, waiters past ``max_queue_wait_s``."""

    agents: list[str] = field(default_factory=list)
    waiters: list[WaiterTimeout] = field(default_factory=list)
