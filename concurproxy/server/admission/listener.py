"""The metrics seam: listeners receive every typed admission decision event."""

from __future__ import annotations

from typing import Protocol

from concurproxy.control.admission.events import AdmissionEvent


class AdmissionListener(Protocol):
    """Receives every decision the admission core makes (admitted, queued, timeout,
    window change … each with its reason). Called synchronously on the event loop,
    in decision order: keep it cheap and non-blocking (count, observe, log).
    The observability module implements one that turns events into Prometheus
    metrics; this package imports no metrics library."""

    def on_admission_event(self, event: AdmissionEvent) -> None: ...


class RecordingListener:
    """Keeps every event in a list (tests, debugging)."""

    def __init__(self) -> None:
        self.events: list[AdmissionEvent] = []

    def on_admission_event(self, event: AdmissionEvent) -> None:
        self.events.append(event)
