"""Agent-level admission: per-replica active windows of agents, tickets, wait queues."""

from concurproxy.control.admission.core import AdmissionCore
from concurproxy.control.admission.events import AdmissionEvent, EventKind
from concurproxy.control.admission.fifo import FifoQueue
from concurproxy.control.admission.footprint import Footprint
from concurproxy.control.admission.shares import WindowShares
from concurproxy.control.admission.state import AgentState, Counters, ReplicaState
from concurproxy.control.admission.tickets import (
    AdmitResult,
    Admitted,
    ExpireResult,
    Grant,
    Outcome,
    Queued,
    Rejected,
    Ticket,
    WaiterTimeout,
)
from concurproxy.control.admission.window import ReplicaWindow

__all__ = [
    "AdmissionCore",
    "AdmissionEvent",
    "AdmitResult",
    "Admitted",
    "AgentState",
    "Counters",
    "EventKind",
    "ExpireResult",
    "FifoQueue",
    "Footprint",
    "Grant",
    "Outcome",
    "Queued",
    "Rejected",
    "ReplicaState",
    "ReplicaWindow",
    "Ticket",
    "WaiterTimeout",
    "WindowShares",
]
