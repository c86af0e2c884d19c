"""The window-controller protocol: a tiny object fed observations, never a clock.

Modelled on Netflix concurrency-limits' ``Limit``: the controller only turns
samples into a number. It does not know about agents, queues or tickets — the
admission window (``concurproxy.control.admission``) owns those and asks the
controller for the size of the window once per pressure sample.

Concurrency: controllers are plain objects mutated by one caller at a time (the
single event loop of the shell, or a test). They hold no locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from concurproxy.control.types import PressureSnapshot

#: Window reported by controllers that do not bound admission (``none``).
UNBOUNDED = 1 << 30


@dataclass(frozen=True, slots=True)
class WindowDecision:
    """Outcome of one controller update.

    ``window``: active agents allowed on the replica now (>= 1, or ``UNBOUNDED``).
    ``changed``: the window differs from the previous decision.
    ``reason``: short machine-readable cause (``increase``, ``thrash-preemption``,
    ``stale``, ``hold-cooldown`` …) — it becomes a metric label, keep it low-cardinality.
    ``saturated``: admit nothing *new* on this replica (stale or failed pressure data);
    steps of agents already in the window still pass.
    """

    window: int
    changed: bool
    reason: str
    saturated: bool = False


@dataclass(frozen=True, slots=True)
class StepSample:
    """One step that ended on the replica, as a controller sees it (``on_step``).

    ``latency_s``: from the step's admission to its end (dispatch hold, engine queue, prefill,
    decode, relay). ``running``: steps running on the replica when it ended, itself included
    (the concurrency the latency was measured at). ``ok``: it ended as a success; failed or
    cancelled steps carry no usable latency or output. ``at``: when it ended (samples arrive between
    two ``update`` calls; a controller that dates them must not use the last update's ``now``).
    """

    output_tokens: int
    latency_s: float
    running: int
    ok: bool = True
    at: float | None = None  # when it ended (the caller's clock, like ``now``); None: unknown


class WindowController(Protocol):
    """Decides the size of one replica's active-agent window.

    ``update`` is called with the latest pressure snapshot (``None`` before the
    first read), the number of agents currently holding a slot (``in_use``), the
    caller's ``now`` (seconds, the same clock as ``snapshot.ts``) and ``acked``: how
    many of the ``in_use`` holders have had a step end since they were admitted (their
    KV has been in the engine's readings; ``None``: not known).

    ``stale_after_s`` tells the admission window how old a snapshot may be
    before the replica counts as saturated between updates; ``None`` means the
    controller does not use pressure at all (``static``, ``none``).

    ``on_step`` is fed every step that ends on the replica (`StepSample`): output tokens
    for goodput, latency and concurrency for latency-based limits.
    """

    name: str
    stale_after_s: float | None

    @property
    def window(self) -> int: ...

    def update(
        self, snapshot: PressureSnapshot | None, in_use: int, now: float, acked: int | None = None
    ) -> WindowDecision: ...

    def on_step(self, sample: StepSample) -> None:
        """A step ended on the replica (goodput and latency samples; controllers that need none ignore it)."""
        ...


def snapshot_problem(snapshot: PressureSnapshot | None, now: float, stale_after_s: float) -> str | None:
    """Why ``snapshot`` cannot be trusted at ``now`` (a reason label), or None when it is fresh.

    A missing, failed or stale snapshot counts as saturated: stale
    pressure throttles, it never admits.
    """
    if snapshot is None:
        return "no-data"
    if not snapshot.ok:
        return "source-error"
    age = snapshot.age(now)
    if age > stale_after_s:
        return "stale"
    return None
