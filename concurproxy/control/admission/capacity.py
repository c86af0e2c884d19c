"""What one replica can take now: fresh pressure data, a free slot of W, room in the footprint budget.

A *new* agent (one holding no slot here) is admitted when (see `ReplicaWindow`):

* the pressure data is fresh — stale, failed or missing data admits nothing new
  (``saturation``; controllers that read no pressure, ``static``/``none``, never saturate);
* fewer than W agents hold slots (the small-agent lane's agents hold none);
* ``Σ charge(admitted) + charge(new) ≤ footprint_headroom × kv_capacity_tokens``
  when the replica reports its KV capacity and the controller reads pressure
  (``budget``; never for ``static``/``none``, the benchmark baselines). An empty
  window always admits one agent (progress).

The small-agent lane (``small_fits``, see `SmallAgentLane`) admits small agents
outside W, within its share of the budget, on fresh data only.

Pure: the caller passes ``now``; single caller (the replica's window).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from concurproxy.config.admission import AIMDConfig
from concurproxy.control.admission.held import HeldAgents
from concurproxy.control.admission.overcommit import OvercommitProbe
from concurproxy.control.admission.small import SmallAgentLane
from concurproxy.control.admission.source import PressureSource
from concurproxy.control.limits.base import UNBOUNDED, WindowController, snapshot_problem
from concurproxy.control.types import PressureSnapshot, StepInfo


class Capacity:
    def __init__(
        self,
        controller: WindowController,
        aimd: AIMDConfig,
        held: HeldAgents,
        fallback: Callable[[], WindowController] | None = None,
        stale_grace_s: float = 10.0,
    ) -> None:
        self.source = PressureSource(controller, fallback, stale_grace_s)
        self.controller = controller  # the one deciding W now (see `PressureSource`)
        self.held = held
        self.small = SmallAgentLane.from_config(aimd)
        self.snapshot: PressureSnapshot | None = None
        self._headroom = aimd.footprint_headroom
        self._hard_cap = aimd.footprint_hard_cap
        self.probe = OvercommitProbe(aimd.probe)

    def observe(self, snapshot: PressureSnapshot | None, now: float) -> tuple[PressureSnapshot | None, str | None]:
        """Keep the newest snapshot (one older than the held one is ignored). Returns the one held now and
        the new pressure source mode when it changed (see `PressureSource`)."""
        if snapshot is not None and (self.snapshot is None or snapshot.ts >= self.snapshot.ts):
            self.snapshot = snapshot
        changed = self.source.observe(snapshot, now)
        self.controller = self.source.active(now)
        return self.snapshot, changed

    def saturation(self, now: float) -> str | None:
        """Why nothing new may be admitted on data grounds now, or None (also: which controller decides)."""
        mode = self.source.mode(now)
        if mode == "latency":
            self.controller = self.source.active(now)
            return None
        stale_after_s = self.source.kv.stale_after_s
        if stale_after_s is None:
            return None
        self.controller = self.source.kv
        return snapshot_problem(self.snapshot, now, stale_after_s)

    def budget(self) -> int | None:
        """Footprint tokens the admitted agents may hold together; None: no budget applies."""
        s = self.snapshot
        if self.controller.stale_after_s is None or s is None or not s.kv_capacity_tokens:
            return None
        if self._hard_cap:
            return int(self._headroom * s.kv_capacity_tokens)
        if self.probe.pinned is not None:
            return None  # goodput proved the agent count: the prediction is a signal, not a wall
        m = self.probe.multiplier
        return None if m == math.inf else int(self._headroom * s.kv_capacity_tokens * m)

    def agents_fit(self) -> float | None:
        """How many agents of the slot holders' mean charge the footprint budget (not multiplied) fits, or
        None: no budget applies, it is a wall (``footprint_hard_cap``), or nobody holds a slot. The goodput
        probe tries one agent at a time where this is small (`OvercommitProbe`)."""
        s = self.snapshot
        if self._hard_cap or self.controller.stale_after_s is None or s is None or not s.kv_capacity_tokens:
            return None
        mean = self.held.mean_charge()
        return self._headroom * s.kv_capacity_tokens / mean if mean else None

    def slots(self) -> int:
        """Agents that may hold slots now: W, times the goodput probe's multiplier for controllers that
        read pressure (``static``/``none`` are what they say)."""
        w = self.controller.window
        if self.controller.stale_after_s is None or w >= UNBOUNDED:
            return w
        pin = self.probe.pinned
        if pin is not None:
            return pin
        m = self.probe.multiplier
        return UNBOUNDED if m == math.inf else (w if m == 1.0 else math.ceil(w * m))

    def small_fits(self, step: StepInfo, now: float, typical: float | None = None, pending: int = 0) -> bool:
        """May this new agent be admitted by the small-agent lane now? (``typical``: the slot holders' mean
        charge, when the caller has it already; ``pending``: charges of agents about to join the lane.)"""
        budget = self.budget()
        if self.small.cap(budget) is None or self.saturation(now) is not None:
            return False
        if typical is None:
            typical = self.held.mean_charge()
        return self.small.fits(self.held.new_charge(step), self.held.small_tokens() + pending, budget, typical)

    def is_small(self, step: StepInfo) -> bool:
        """Would a new agent starting with ``step`` count as small (lane room aside)?"""
        return self.small.cap(self.budget()) is not None and self.small.small(
            self.held.new_charge(step), self.held.mean_charge()
        )

    def block_reason(self, step: StepInfo, now: float) -> str | None:
        """Why a new agent starting with ``step`` may not take a slot now, or None."""
        sat = self.saturation(now)
        if sat is not None:
            return f"saturated-{sat}"
        if len(self.held.slot_holders()) >= self.slots():
            return "window-full"
        budget = self.budget()
        if budget is not None and self.held.agents:
            if self.held.footprint_tokens() + self.held.new_charge(step) > budget:
                return "footprint"
        return None

    def new_reason(self) -> str:
        """The reason label of a new agent admitted without waiting."""
        unbounded = self.controller.stale_after_s is None and self.controller.window >= UNBOUNDED
        return "unbounded" if unbounded else "new"
