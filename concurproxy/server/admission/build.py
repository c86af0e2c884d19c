"""The one place that picks the admission gate for a policy (``server/assembly.py`` calls it once)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from concurproxy.decision import DecisionCore
from concurproxy.server.admission.gate import AdmissionGate
from concurproxy.server.admission.listener import AdmissionListener
from concurproxy.server.admission.open import OpenGate
from concurproxy.server.admission.windows import WindowGate
from concurproxy.telemetry.admission import AdmissionMetricsListener, watch_admission
from concurproxy.telemetry.metrics import ProxyMetrics

if TYPE_CHECKING:
    from concurproxy.server.admission.leases import SharedWindowGate
    from concurproxy.state.redis_state import RedisState


def build_gate(
    core: DecisionCore, metrics: ProxyMetrics | None = None, *, clock: Callable[[], float] = time.monotonic
) -> AdmissionGate:
    """``core.admission`` None (controller ``none``): the `OpenGate`; else a `WindowGate` on it. With
    ``metrics``: every decision event is counted, and the windows are published at each scrape."""
    if core.admission is None:
        return OpenGate()
    return _watched(WindowGate(core.admission, clock=clock, listeners=_listeners(metrics)), metrics)


def build_shared_gate(
    core: DecisionCore,
    state: RedisState,
    metrics: ProxyMetrics | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> SharedWindowGate:
    """``state.backend: redis``: the `SharedWindowGate` on ``core.admission`` (the core built with the
    backend's ``wrap_*`` hooks, ``server/stages/shared.py``), wired to the metrics like ``build_gate``'s."""
    from concurproxy.server.admission.leases import SharedWindowGate  # (imports the Redis client)

    assert core.admission is not None, "admission.controller none shares nothing"
    gate = SharedWindowGate(core.admission, state, clock=clock, listeners=_listeners(metrics))
    return _watched(gate, metrics)


def _listeners(metrics: ProxyMetrics | None) -> list[AdmissionListener]:
    return [AdmissionMetricsListener(metrics)] if metrics is not None else []


_G = TypeVar("_G", bound=WindowGate)


def _watched(gate: _G, metrics: ProxyMetrics | None) -> _G:
    if metrics is not None:
        watch_admission(metrics, gate)  # type: ignore[arg-type]  # structural: core.state(now)
    return gate
