"""Whether a new agent may take a slot on one replica now, and what gives way for it.

Order of the checks (``SlotGate.reason``), each with its event reason:

1. ``Capacity.block_reason``: fresh pressure data, a free slot (W × the goodput probe's
   multiplier), room in the footprint budget. Stale or missing data admits nothing new,
   and nothing below overrides that.
2. A role below its guaranteed share takes a burst agent's slot (``share``; see `WindowShares`);
   a tenant below its fair share of the slots, or a higher priority class, claims the slot of an
   agent past its quantum (``claim``; see `TenantSlots`).
3. A *dormant* agent — idle past its return bound (`ReturnGaps`) — gives its slot to whoever
   waits (``Pausing.yield_dormant``): most clients never say an agent is done, and a slot held
   by a finished agent while others wait is the engine idling for nothing. If it comes back it
   resumes with priority.
4. **Work conservation** (``work_conserving``): when a step waits only for footprint room or a
   slot of a pressure-led W while nothing of ours runs on the replica, the engine queues nothing,
   and its prompt fits the cache beside the prefixes of the agents expected back, it is admitted
   (``work-conserving``): the footprint and W predict overflow, an idle engine is a certain loss,
   and an admission that evicts no prefix costs nothing certain. Not with ``footprint_hard_cap``;
   never past the fixed W of ``static``/``none``; never on stale data. The window also backfills:
   when the waiter its lanes chose cannot be admitted, the first other waiter this rule admits runs.

``deadline(now)`` tells the shell when time alone will next free a slot (an idle agent turning dormant
while steps wait), so it can grant then instead of at its next periodic tick.

Pure: ``now`` is passed in; single caller (the replica's window).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from concurproxy.config.admission import AdmissionConfig
from concurproxy.control.admission.capacity import Capacity
from concurproxy.control.admission.held import HeldAgent, HeldAgents
from concurproxy.control.admission.pausing import Pausing
from concurproxy.control.admission.returns import ReturnGaps
from concurproxy.control.types import StepInfo

# A below-share waiter blocked by slots or by the KV footprint budget takes burst agents' slots
# (and their footprint) back; stale pressure data is never overridden.
RECLAIMABLE = ("window-full", "footprint")
# The causes an idle-while-waiting period is charged to (`SlotGate.idle_cause`).
IDLE_CAUSES = ("prefix", "return", "engine", "signal", "limit")


class SlotGate:
    def __init__(
        self,
        config: AdmissionConfig,
        cap: Capacity,
        held: HeldAgents,
        pausing: Pausing,
        running: Callable[[], int],
        reclaim: Callable[[float], bool],
        claim: Callable[[StepInfo, float], bool],
    ) -> None:
        d = config.dormancy
        self.returns = ReturnGaps(factor=d.factor, min_s=d.min_s, max_s=config.idle_ttl_s, initial_s=d.initial_s)
        self._cap = cap
        self._held = held
        self._pausing = pausing
        self._running = running  # steps of ours running on the replica now
        self._reclaim = reclaim
        self._claim = claim
        self._conserve = config.work_conserving and not config.aimd.footprint_hard_cap
        self.dormancy = d.enabled
        self.last_end = float("-inf")  # when a step of ours last ended here (the window sets it)

    def reason(self, step: StepInfo, lane: str, default: str, now: float) -> str | None:
        """Why a new agent starting with ``step`` may take a slot now (``default`` when nothing had
        to give way), or None: it waits. May pause a dormant agent or reclaim a burst one."""
        cap = self._cap
        block = cap.block_reason(step, now)
        while block in RECLAIMABLE and lane == "share" and self._reclaim(now):
            block = cap.block_reason(step, now)
        while block in RECLAIMABLE and lane == "claim" and self._claim(step, now):
            block = cap.block_reason(step, now)
        while block in RECLAIMABLE and self.dormancy and self._yield_dormant(block, now):
            block = cap.block_reason(step, now)
        if block is None:
            return default
        return "work-conserving" if self._conserving(step, block, now) else None

    def conserving(self, step: StepInfo, now: float) -> bool:
        """The work-conserving rule alone admits ``step`` now (a backfill candidate: see `Lanes.backfill`)."""
        return self._conserving(step, self._cap.block_reason(step, now), now)

    def _conserving(self, step: StepInfo, block: str | None, now: float) -> bool:
        return self._conserves(block) and self.engine_idle() and self._prefixes_fit(step, now, block == "window-full")

    def _conserves(self, block: str | None) -> bool:
        """May the work-conserving rule override this block? The footprint budget, and W of a controller that
        reads pressure; never stale data, and never the fixed W of ``static``/``none`` (the baselines are
        what they say)."""
        if not self._conserve:
            return False
        if block == "footprint":
            return True
        return block == "window-full" and self._cap.controller.stale_after_s is not None

    def _yield_dormant(self, block: str, now: float) -> bool:
        """A dormant slot holder gives its place; for footprint room, a dormant small agent too (it holds no
        slot but its footprint counts: finished control agents of a client that never says so kept ~6k of a
        35k budget from the heavy tenant until their idle TTL, on the fairness benchmark)."""
        bound, done_s = self.returns.bound(), self.returns.min_s
        if self._pausing.yield_dormant(bound, now, done_s=done_s):
            return True
        return block == "footprint" and self._pausing.yield_dormant(bound, now, small=True, done_s=done_s)

    def _prefixes_fit(self, step: StepInfo, now: float, next_step: bool = False) -> bool:
        """The cached prefixes of the agents expected back (running, or idle within their return bound
        and not likely done: `FootprintPriors.likely_done`) plus this step's prompt fit the cache:
        admitting it evicts none of them now. The footprint budget predicts growth; this is the certain
        part. Measured in virtual time on qwen3-32b-h100 (8 agents, contexts to 22k tokens, 0.5 s tool
        pauses): admitting on an idle engine alone, into a cache full of paused agents' prefixes,
        doubled recomputed prefill (43% -> 78%) and cost 13% of goodput.

        ``next_step`` (admitting past W): each of them, and this step, also grows by its next step's
        expected growth — W is the controller's answer to preemptions, so a step let in past it must
        not be the one that makes the returning agents' next steps collide (vLLM's CPU build, the
        tier's agent loop, two pairs: `none` 18 preemptions; contexts alone 6, with the growth 2)."""
        s = self._cap.snapshot
        capacity = None if s is None else s.kv_capacity_tokens
        if not capacity:
            return True
        back = [a for a in self._held.agents.values() if self._expected_back(a, now)]
        if not next_step:
            return sum(a.fp.context for a in back) + step.est_prompt_tokens <= capacity
        new = self._held.new_footprint(step)
        held = sum(a.fp.context + math.ceil(a.fp.growth) for a in back)
        return held + new.context + math.ceil(new.growth) <= capacity

    def _expected_back(self, a: HeldAgent, now: float) -> bool:
        if a.running or not self.dormancy:
            return True
        if a.priors.likely_done(a.steps):  # most likely finished: its prefix is not worth an idle engine
            return False
        return now - a.last_seen < self.returns.bound()

    def engine_idle(self) -> bool:
        """No step of ours runs on the replica and the engine reports nothing waiting either. A report
        older than our last step's end does not count: the steps it saw waiting may have been ours (in
        virtual time on a plain 48-agent loop, trusting it left the engine idle 0.5% of the run)."""
        if self._running():
            return False
        s = self._cap.snapshot
        return s is None or not s.waiting or s.ts < self.last_end

    def idle_cause(self, step: StepInfo, now: float) -> str:
        """Why ``step`` (the waiter the lanes serve next) is not admitted while nothing of ours runs here: the cause an
        idle-while-waiting period is charged to (`IdleWaitClock`):

        * ``prefix``: only the cached prefixes of agents expected back (running or within their return
          bound) keep it out — admitting it would evict a prefix about to be reused;
        * ``return``: every slot is held and some holder is idle within its return bound (not dormant yet);
        * ``engine``: the engine itself reports steps waiting;
        * ``signal``: stale or missing pressure data (nothing new is admitted on no data);
        * ``limit``: W or the footprint budget, with no idle holder to yield (the controller's answer to
          thrash, or ``footprint_hard_cap``)."""
        block = self._cap.block_reason(step, now)
        if block is None:
            return "limit"
        if block.startswith("saturated"):
            return "signal"
        if self._conserves(block):
            if not self.engine_idle():
                return "engine"
            if not self._prefixes_fit(step, now, block == "window-full"):
                return "prefix"
        if self.dormancy and any(a.running == 0 and not a.small for a in self._held.agents.values()):
            return "return"
        return "limit"

    def note_arrival(self, agent_id: str, held: HeldAgent | None, now: float) -> None:
        """A step of ``agent_id`` arrived (``held``: its agent, if it holds a slot here): the gap since its
        previous step ended is a return gap when it was idle, holding its slot or paused (`Pausing.return_gap`:
        without the paused ones the gaps are censored at the bound they set)."""
        if held is not None:
            if not held.running:
                self.returns.record(now - held.last_seen)
        elif (gap := self._pausing.return_gap(agent_id, now)) is not None:
            self.returns.record(gap)

    def deadline(self, now: float) -> float | None:
        """The next time after ``now`` at which an idle slot holder turns dormant (None: none will). The
        caller asks only while steps wait. Holders dormant already are left out: the grant that just ran
        saw them and they did not free what the waiter needs (a holder yields only for another block),
        so the earliest of all would be in the past and hide the next one that may (a freed slot then
        waited for the periodic tick)."""
        if not self.dormancy:
            return None
        r = self.returns
        idle = [
            at
            for a in self._held.agents.values()
            if a.running == 0  # small ones too: their footprint counts in the budget
            and (at := a.last_seen + (r.min_s if a.priors.likely_done(a.steps) else r.bound())) > now
        ]
        return min(idle, default=None)


class IdleWaitClock:
    """Seconds a replica spent with no step of ours running while steps waited for admission: the work
    conservation the gate promises, measured (``/admin/state``, and the metric
    ``concurproxy_admission_idle_waiting_seconds_total``), and split by the cause charged when each
    idle period began (`SlotGate.idle_cause`; ``idle_waiting_by_cause`` in ``/admin/state``).

    ``observe(now, idle_waiting, cause)`` after every change of either; the time since the previous call
    counts, to the cause of the period, when the previous state was idle-and-waiting. O(1); single caller."""

    __slots__ = ("_cause", "_since", "by_cause", "total_s")

    def __init__(self) -> None:
        self.total_s = 0.0
        self.by_cause: dict[str, float] = {}
        self._since: float | None = None
        self._cause = ""

    @property
    def idle(self) -> bool:
        return self._since is not None

    def observe(self, now: float, idle_waiting: bool, cause: str | None = None) -> None:
        since = self._since
        if since is not None and now > since:
            self.total_s += now - since
            self.by_cause[self._cause] = self.by_cause.get(self._cause, 0.0) + (now - since)
        if idle_waiting and (since is None or cause is not None):
            self._cause = cause or "limit"
        self._since = now if idle_waiting else None

    def total(self, now: float) -> float:
        return self.total_s + (now - self._since if self._since is not None and now > self._since else 0.0)

    def totals(self, now: float) -> dict[str, float]:
        out = dict(self.by_cause)
        if self._since is not None and now > self._since:
            out[self._cause] = out.get(self._cause, 0.0) + now - self._since
        return out
