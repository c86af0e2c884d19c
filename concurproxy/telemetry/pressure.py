"""Pressure poller → metrics: publish every snapshot, count failed reads by a bounded kind.

Wire it as the poller's ``on_snapshot`` hook, chaining the admission service::

    poller = PressurePoller(session, targets, on_snapshot=pressure_hook(metrics, service.on_pressure))

Failed reads carry free-text errors (``"<url>: <ExceptionType>: <message>"``); they are
classified into a bounded ``kind`` label: connect, timeout, status, parse, stale, other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from concurproxy.control.types import PressureSnapshot
from concurproxy.telemetry.metrics import ProxyMetrics

Hook = Callable[[str, PressureSnapshot], Awaitable[None] | None]
_KINDS = (
    ("stale", ("stale",)),
    ("timeout", ("TimeoutError", "ServerTimeoutError")),
    (
        "connect",
        ("ClientConnectorError", "ClientConnectionError", "ClientOSError", "ServerDisconnectedError"),
    ),
    ("status", ("PollError", "ClientResponseError")),
    ("parse", ("MetricsParseError", "FeedError", "JSONDecodeError", "UnicodeDecodeError")),
)


def classify_poll_error(error: str | None) -> str:
    """Map a snapshot's error text to one of: connect, timeout, status, parse, stale, other."""
    text = error or ""
    for kind, needles in _KINDS:
        if any(n in text for n in needles):
            return kind
    return "other"


def pressure_hook(metrics: ProxyMetrics, downstream: Hook | None = None) -> Callable[[str, PressureSnapshot], object]:
    """An ``on_snapshot`` hook that records the snapshot, then calls ``downstream`` (and returns its result)."""

    def hook(replica: str, snap: PressureSnapshot) -> object:
        if snap.ok:
            metrics.observe_pressure(replica, snap)
        else:
            metrics.pressure_poll_error(replica, classify_poll_error(snap.error))
        return downstream(replica, snap) if downstream is not None else None

    return hook
