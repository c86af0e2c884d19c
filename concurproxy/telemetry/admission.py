"""Admission → metrics: the AdmissionListener that counts typed decision events, and the
scrape-time refresher that publishes each replica's window, active and queued agents.

Wire both once, where the gate is built::

    gate = WindowGate(core, listeners=[AdmissionMetricsListener(metrics)])
    watch_admission(metrics, gate)

(``server/admission/build.py`` does, for the gate it builds).

Event mapping (``concurproxy.control.admission.events.EventKind``):

* admitted / queued / rejected / timeout / cancelled / paused / expired / released →
  ``concurproxy_admission_decisions_total{replica, decision=kind, reason}``
* window → ``concurproxy_admission_window_changes_total{replica, direction, reason}``; direction
  from the previous window of that replica, or (first change seen) ``down`` for ``thrash-*`` reasons;
  without a value (``replica-left``) the previous window is forgotten
* ended → ``concurproxy_tickets_ended_total{outcome}``; double_end → ``ticket_errors{double_release}``
* source → ``concurproxy_pressure_source{replica, source}`` (1 for the signal deciding W now)

Concurrency: called on the event loop in decision order (see AdmissionListener).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from concurproxy.control.admission.events import AdmissionEvent, EventKind
from concurproxy.telemetry.metrics import ProxyMetrics


class AdmissionMetricsListener:
    """Implements ``concurproxy.server.admission.listener.AdmissionListener``."""

    __slots__ = ("_metrics", "_window")

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics
        self._window: dict[str, float] = {}

    def on_admission_event(self, event: AdmissionEvent) -> None:
        kind, m = event.kind, self._metrics
        if kind is EventKind.window:
            if event.value is None:  # the replica left the pool
                self._window.pop(event.replica, None)
                return
            new = event.value
            old = self._window.get(event.replica)
            if old is None:  # first change seen: infer the direction from the reason
                old = new + 1 if event.reason.startswith("thrash") else new - 1
            self._window[event.replica] = new
            m.window_changed(event.replica, old, new, event.reason or "unknown")
        elif kind is EventKind.ended:
            m.ticket_ended(event.reason or "unknown")
        elif kind is EventKind.double_end:
            m.ticket_error("double_release")
        elif kind is EventKind.source:
            m.set_pressure_source(event.replica, event.reason)
        else:
            m.admission_decision(event.replica, kind, event.reason or "none")


class _ReplicaState(Protocol):
    window: int
    active_agents: int
    waiting: int
    idle_waiting_by_cause: dict[str, float]
    probe_multiplier: float


class _Core(Protocol):
    def state(self, now: float) -> Mapping[str, _ReplicaState]: ...


class _Service(Protocol):
    core: _Core
    clock: Callable[[], float]


def watch_admission(metrics: ProxyMetrics, service: _Service) -> None:
    """At each scrape, copy every replica's window / active agents / waiting steps into the gauges."""

    def refresh() -> None:
        for replica, st in service.core.state(service.clock()).items():
            metrics.set_admission_state(
                replica,
                window=st.window,
                active=st.active_agents,
                queued=st.waiting,
                idle_waiting=st.idle_waiting_by_cause,
                multiplier=st.probe_multiplier,
            )

    metrics.add_refresher(refresh)
