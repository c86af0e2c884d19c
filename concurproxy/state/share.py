"""One instance's share of a replica's fleet-wide admission window (pure, no I/O).

The fleet-wide window ``W`` of a replica is the leader's AIMD decision (or,
until a leader has published one, this instance's own). Every instance caps
its local ``ReplicaWindow`` at::

    connected:  cap = max(0, W − others)          others = live leases held by agents
                                                  this instance does not hold
    degraded:   cap = max(1, ⌊W_last / n_live⌋)  n_live = instances alive at the last sync

so that ``Σ_i local_i ≤ W`` as of the last sync. Between syncs two instances
may both see room for the last slot; the atomic lease claim (a Lua script that
checks the lease set's size < W) decides, and the loser re-queues the agent.
The degraded rule is conservative (no instance takes more than its share) but
never 0, so every instance keeps serving while Redis is away.

``SharedWindowController`` wraps the replica's own controller: the admission
window reads ``controller.window`` on every decision, so a new cap applies at
once. Concurrency: one event loop; the sync task mutates ``ReplicaShare``
between decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from concurproxy.control.limits.base import UNBOUNDED, StepSample, WindowController, WindowDecision
from concurproxy.control.types import PressureSnapshot


@dataclass(slots=True)
class ReplicaShare:
    replica: str
    connected: bool = False
    global_window: int | None = None  # the leader's published W (None: none published / unknown)
    others: int = 0  # live leases of agents this instance does not hold
    live_instances: int = 1
    last_window: int | None = None  # the last W used while connected, for the degraded share
    members: set[str] = field(default_factory=set)  # live leases at the last sync
    mine: set[str] = field(default_factory=set)  # of those, agents held here

    def cap(self, own_window: int) -> int:
        """Local window for this instance given its own controller's window."""
        w = self.global_window if self.global_window is not None else own_window
        if w >= UNBOUNDED:
            return w
        if self.connected:
            self.last_window = w
            return max(0, w - self.others)
        base = self.last_window if self.last_window is not None else w
        return max(1, base // max(1, self.live_instances))


class SharedWindowController:
    """A ``WindowController`` whose window is the instance's share of the fleet-wide one."""

    def __init__(self, inner: WindowController, share: ReplicaShare) -> None:
        self.inner = inner
        self.share = share
        self.name = inner.name
        self.stale_after_s = inner.stale_after_s
        self._last = self.window

    @property
    def own_window(self) -> int:
        """What this instance's controller alone decided (the leader publishes it)."""
        return self.inner.window

    @property
    def window(self) -> int:
        return self.share.cap(self.inner.window)

    def update(
        self, snapshot: PressureSnapshot | None, in_use: int, now: float, acked: int | None = None
    ) -> WindowDecision:
        d = self.inner.update(snapshot, in_use, now, acked)
        w = self.window
        changed, self._last = w != self._last, w
        return replace(d, window=w, changed=changed)

    def on_step(self, sample: StepSample) -> None:
        self.inner.on_step(sample)
