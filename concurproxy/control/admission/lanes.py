"""Which waiting step a replica serves next, and which held agent gives way for it.

Lanes, in order (``Lanes.next``):

1. **starved** — a step waiting ``starvation_timeout_s`` or more (anti-starvation);
2. **share** — the longest-waiting step of a role below its guaranteed window share; a burst
   agent's slot is reclaimed for it (``reclaim``, `WindowShares`);
3. **claim** — the longest-waiting step of a tenant below its fair share of the slots, or of a
   higher priority class than a holder past its quantum; that holder gives its slot (``claim``,
   `TenantSlots`);
4. **resume** — a paused agent coming back (its prefix is invested and hot here);
5. **queue** — the pluggable wait queue's choice (fifo, vtc, ...).

Before all of them, the small-agent lane (``small_waiters``): new agents small enough to take
no slot of W (`SmallAgentLane`) are admitted outside it, in arrival order. After them, when the
chosen waiter cannot be admitted on an idle engine, ``backfill`` picks one the work-conserving
rule admits.

Pure; single caller (the replica's window, which owns every object handed in).
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING

from concurproxy.control.admission.capacity import Capacity
from concurproxy.control.admission.gate import SlotGate
from concurproxy.control.admission.held import HeldAgents
from concurproxy.control.admission.pausing import Pausing
from concurproxy.control.admission.tenants import TenantSlots
from concurproxy.control.admission.waiters import Waiter, WaiterSet
from concurproxy.control.types import StepInfo

if TYPE_CHECKING:
    from concurproxy.control.admission.window import ReplicaWindow

# Waiters a backfill looks at, longest-waiting first: bounds the scan of a long queue (the rule's
# prefix check sums the held agents: O(agents) per candidate).
BACKFILL_SCAN = 32


class Lanes:
    def __init__(
        self,
        window: ReplicaWindow,
        waiters: WaiterSet,
        held: HeldAgents,
        pausing: Pausing,
        cap: Capacity,
        tenant_slots: TenantSlots | None,
    ) -> None:
        self.window = window  # for its role shares and W, which change
        self.waiters = waiters
        self.held = held
        self.pausing = pausing
        self.cap = cap
        self.tenant_slots = tenant_slots

    def next(self, oldest: Waiter, starved: bool, now: float) -> tuple[Waiter | None, str]:
        """The waiter to serve next and its lane: the oldest when it starves, else a role below
        its share, else a paused agent resuming, else the wait queue's choice."""
        if starved:
            return oldest, "starved"
        share = self._share_waiter()
        if share is not None:
            return share, "share"
        claim = self._claim_waiter()
        if claim is not None:
            return claim, "claim"
        resume = self.waiters.oldest_resume()
        if resume is not None:
            return resume, "resume"
        return self.waiters.next_in_queue(now), "queue"

    def backfill(self, gate: SlotGate, now: float) -> Waiter | None:
        """The first of the longest-waiting steps (up to ``BACKFILL_SCAN``) that the work-conserving rule
        admits now, while the waiter the lanes chose cannot be: backfilling, as batch schedulers do. A
        resuming agent whose prefix does not fit beside the prefixes expected back waits for one of them
        to end; a small new agent that fits runs meanwhile instead of the engine idling. Measured in
        virtual time (plain loop on ``tiny``: 48 agents x 8 steps growing to ~830 of 1024 tokens, 8 ms
        client gaps, 60 s): with the rule's W override and this backfill, steps 497 -> 526, the engine
        idle while steps waited 4.5 s -> 0.3 s (the rest: reports predating our last step, see
        `SlotGate.engine_idle`)."""
        if not gate.engine_idle():
            return None
        for w in islice(self.waiters.by_id.values(), BACKFILL_SCAN):  # (no copy: nothing changes while scanning)
            if gate.conserving(w.step, now):
                return w
        return None

    def idle_cause(self, gate: SlotGate, starvation_timeout_s: float, now: float) -> str | None:
        """The cause an idle-while-waiting period is charged to: the gate's reason for the waiter these
        lanes would serve next (None: nobody waits)."""
        oldest = self.waiters.oldest()
        if oldest is None:
            return None
        w, _ = self.next(oldest, now - oldest.since >= starvation_timeout_s, now)
        return gate.idle_cause((w or oldest).step, now)

    # ---- the small-agent lane (`SmallAgentLane`): new agents admitted outside W ----------------
    def small_waiters(self, gate: SlotGate, now: float) -> list[Waiter]:
        """Waiting new agents the small-agent lane takes now, in arrival order (the caller admits each
        before the next is checked: it iterates, so take them one by one)."""
        out: list[Waiter] = []
        if self.cap.small.cap(self.cap.budget()) is None:
            return out
        typical = self.held.mean_charge()  # (once per pass: admitting small agents does not change it)
        for w in self.waiters:
            if w.step.agent_id in self.held.agents or any(o.step.agent_id == w.step.agent_id for o in out):
                continue
            if self.small_fits(gate, w.step, now, typical, pending=sum(self.held.new_charge(o.step) for o in out)):
                out.append(w)
        return out

    def small_fits(
        self, gate: SlotGate, step: StepInfo, now: float, typical: float | None = None, pending: int = 0
    ) -> bool:
        """The small-agent lane takes this new agent (``pending``: charges of agents about to join it); a
        dormant small agent gives its place in a full lane (finished control agents must not keep new ones
        out: most clients never say they are done)."""
        if self.cap.small_fits(step, now, typical, pending):
            return True
        if not gate.dormancy or not self.cap.is_small(step):
            return False
        bound = gate.returns.bound()
        while self.pausing.yield_dormant(bound, now, small=True, done_s=gate.returns.min_s):
            if self.cap.small_fits(step, now, typical, pending):
                return True
        return False

    def _share_waiter(self) -> Waiter | None:
        """The longest-waiting step of a role below its guaranteed share, if any."""
        if not self.window.shares:
            return None
        counts, w = self.window.shares.counts(self.held.slot_holders()), self.window.window
        return self.waiters.oldest_of_roles(lambda role: self.window.shares.below(role, counts, w))

    def _claim_waiter(self) -> Waiter | None:
        """The longest-waiting step that may claim a slot from another tenant's agent above its fair share
        of the slots, or from a lower priority class (see `TenantSlots`); None when none may."""
        slots = self.tenant_slots
        if slots is None:
            return None
        heads = self.waiters.tenant_heads()
        holders = self.held.slot_holders()
        if not heads or not holders:
            return None
        if len(heads) == 1 and all(
            h.tenant == heads[0].step.tenant and h.priority <= heads[0].step.priority for h in holders
        ):
            return None  # one tenant, no lower class holding a slot: nothing to claim (the common case)
        shares = slots.shares(self.cap.slots(), holders, self.waiters.tenants())
        for w in heads:
            if slots.victim(w.step.tenant, w.step.priority, holders, shares) is not None:
                return w
        return None

    def claim(self, step: StepInfo, now: float) -> bool:
        """Take a slot for ``step`` (lane ``claim``) from an agent over its tenant's share or of a lower
        priority class: an idle one gives it now (True); a running one is marked and gives it when its step
        ends (False: the waiter waits until then)."""
        slots = self.tenant_slots
        if slots is None:
            return False
        holders = self.held.slot_holders()
        shares = slots.shares(self.cap.slots(), holders, self.waiters.tenants())
        victim = slots.victim(step.tenant, step.priority, holders, shares)
        if victim is None:
            return False
        if victim.running == 0:
            self.pausing.give_back(self.held.agents[victim.agent_id], now, "tenant-share")
            return True
        if not any(r in self.pausing.reclaim_reason for r in self.pausing.reclaiming):  # one mark at a time
            self.pausing.reclaiming.add(victim.agent_id)
            self.pausing.reclaim_reason[victim.agent_id] = "tenant-share"
        return False

    def reclaim(self, now: float) -> bool:
        """Take a slot back from a burst agent for a below-share waiter (see `Pausing.reclaim`)."""
        return self.pausing.reclaim(self.window.shares, self.window.window, now)
