"""Typed decision events: the core records them, the shell forwards them to listeners
(metrics, logs, traces). One event per decision, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    admitted = "admitted"  # reason: in-window | new | starvation | unbounded; value: waited seconds
    queued = "queued"  # value: queue length after
    rejected = "rejected"  # reason: queue-full
    timeout = "timeout"  # waited max_queue_wait_s; value: waited seconds
    cancelled = "cancelled"  # waiter gave up (client gone); value: waited seconds
    window = "window"  # window changed; reason: controller reason; value: new window (None: replica-left)
    paused = "paused"  # admitted agent lost its slot (over the window, between steps)
    expired = "expired"  # idle TTL
    released = "released"  # explicit release / finished
    ended = "ended"  # ticket ended; reason: outcome; value: held seconds
    double_end = "double_end"  # ticket ended again (no-op)
    source = "source"  # the signal controlling the window changed; reason: kv | stale | latency | static


@dataclass(slots=True)
class AdmissionEvent:
    """One decision. Treat as immutable: not ``frozen`` because two are built per step and a frozen
    dataclass costs about six times as much to construct (``object.__setattr__`` per field)."""

    kind: EventKind
    replica: str
    now: float
    reason: str = ""
    agent_id: str | None = None
    tenant: str | None = None
    value: float | None = None


class EventLog:
    """Decision events in decision order until the shell drains them.

    One log may be shared by every replica's window (``AdmissionCore`` does so): draining is then
    one swap, whatever the number of replicas, and the order across replicas is the decision order.
    """

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[AdmissionEvent] = []

    def drain(self) -> list[AdmissionEvent]:
        events, self.events = self.events, []
        return events
