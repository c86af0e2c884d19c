"""How agents admitted on one replica lose their slot: paused, expired, released.

An agent keeps its slot between steps (tool pauses) until one of:

* **released**: explicitly, or with its last ticket when marked finished;
* **expired**: no step ran for ``idle_ttl_s``;
* **paused** (its next step waits like a new agent's, in the resume lane):
  ``over-window`` (ranked beyond W after a shrink), ``over-budget`` (admitted
  contexts outgrew the footprint budget), ``share-reclaim`` (a burst agent gives
  its slot to a role below its guaranteed share; see `WindowShares`).

A running step is never cut: a running agent over the window, or marked for a
share reclaim, loses its slot when its step ends (``pause_excess`` runs then).
Agents are ranked by admission time, those within their role's guarantee first;
those ranked beyond W are over the window. Newest-first matches vLLM's own
preemption order and keeps the oldest agents (closest to finishing and freeing
memory) running.

Pure; single caller (the replica's window), which passes the window size, the
shares and the footprint budget in force.
"""

from __future__ import annotations

from concurproxy.control.admission.events import AdmissionEvent, EventKind, EventLog
from concurproxy.control.admission.held import HeldAgent, HeldAgents
from concurproxy.control.admission.shares import WindowShares
from concurproxy.control.admission.state import Counters


class Pausing:
    """``paused``: agent id → when it lost its slot (kept for ``idle_ttl_s``: its next step resumes).
    ``reclaiming``: running burst agents that give their slot back when their step ends."""

    def __init__(self, replica: str, held: HeldAgents, counters: Counters, log: EventLog) -> None:
        self.replica = replica
        self.held = held
        self.counters = counters
        self.log = log
        # agent id -> (when it lost its slot, steps it had taken: its life goes on when it resumes)
        self.paused: dict[str, tuple[float, int]] = {}
        # agent id -> when its last step ended, until its next step arrives (a pause takes only an idle agent's
        # slot, so that arrival is a return gap: `return_gap`)
        self._last_end: dict[str, float] = {}
        self.reclaiming: set[str] = set()
        self.reclaim_reason: dict[str, str] = {}  # marked agents that give their slot for a tenant claim

    def drop(self, agent: HeldAgent, kind: EventKind, now: float, reason: str) -> None:
        """``agent`` loses its slot (``kind``: paused, expired or released)."""
        del self.held.agents[agent.agent_id]
        self.reclaiming.discard(agent.agent_id)
        self.reclaim_reason.pop(agent.agent_id, None)
        if kind is EventKind.paused:
            self.counters.paused += 1
            self.paused[agent.agent_id] = (now, agent.steps)
            self._last_end[agent.agent_id] = agent.last_seen
        elif kind is EventKind.expired:
            self.counters.expired += 1
        else:
            self.counters.released += 1
        if kind is not EventKind.paused or reason == "dormant":
            # most clients never say an agent is done: one that went quiet past its return bound (or the
            # idle TTL) has most likely finished, and its size is what the role's agents grow to
            agent.priors.on_finished(agent.fp, agent.steps)
        self.log.events.append(AdmissionEvent(kind, self.replica, now, reason, agent.agent_id, agent.tenant, None))

    def resume(self, agent_id: str) -> int:
        """The agent takes a slot again: no longer paused. The steps it had taken (0: never paused), so
        that its life goes on over the pause (likely-done, life lengths)."""
        self._last_end.pop(agent_id, None)
        return self.paused.pop(agent_id, (0.0, 0))[1]

    def return_gap(self, agent_id: str, now: float) -> float | None:
        """Seconds since a paused agent's last step ended, at the arrival of its next step (once; None: not
        paused, or asked already). Recorded beside the gaps of agents that kept their slots: left out, the
        return gaps are censored at the bound they set (an agent slower than the bound loses its slot before
        it returns), and the bound, learned from the early returners alone, sinks to its floor (a decode
        swarm on vLLM: 59 of 64 pauses were dormant yields at a bound of 0.05 s, most of those agents came
        back)."""
        last_end = self._last_end.pop(agent_id, None)
        return None if last_end is None else now - last_end

    def release(self, agent_id: str, now: float) -> bool:
        """The agent finished: free its slot now, or when its running steps end. False: not held here."""
        self.paused.pop(agent_id, None)
        self._last_end.pop(agent_id, None)
        agent = self.held.agents.get(agent_id)
        if agent is None:
            return False
        if agent.running:
            agent.releasing = True
        else:
            self.drop(agent, EventKind.released, now, "explicit")
        return True

    def expire(self, ttl: float, now: float) -> list[str]:
        """Drop the agents idle for ``ttl`` and forget pauses older than it; the expired agents' ids."""
        idle = [a for a in self.held.agents.values() if a.running == 0 and now - a.last_seen >= ttl]
        for a in idle:
            self.drop(a, EventKind.expired, now, "idle-ttl")
        for aid in [aid for aid, (at, _) in self.paused.items() if now - at >= ttl]:
            del self.paused[aid]
            self._last_end.pop(aid, None)
        return [a.agent_id for a in idle]

    def yield_dormant(self, bound_s: float, now: float, small: bool = False, done_s: float = 0.0) -> bool:
        """A dormant slot holder (``small``: small agent) gives its place back (someone waits): one likely
        done (`FootprintPriors.likely_done`) idle for ``done_s``, else the longest-idle one if idle for
        ``bound_s`` or more. True when one did. Its next step, if it ever comes, waits in the resume lane."""
        idle = [a for a in self.held.agents.values() if a.running == 0 and a.small is small]
        done = [a for a in idle if now - a.last_seen >= done_s and a.priors.likely_done(a.steps)]
        agent = min(done or idle, key=lambda a: a.last_seen, default=None)
        if agent is None or (not done and now - agent.last_seen < bound_s):
            return False
        self.counters.yielded += 1
        self.drop(agent, EventKind.paused, now, "dormant")
        return True

    def give_back(self, agent: HeldAgent, now: float, reason: str = "share-reclaim") -> None:
        """A burst agent (role share) or an agent over its tenant's share of slots gives its slot to a waiter."""
        if reason == "share-reclaim":
            self.counters.share_reclaims += 1
        else:
            self.counters.tenant_claims += 1
        self.drop(agent, EventKind.paused, now, reason)

    def reclaim(self, shares: WindowShares, window: int, now: float) -> bool:
        """Take a slot back from a burst agent for a below-share waiter. True: a slot is free now.

        An idle burst agent gives it at once; otherwise the newest running one is
        marked and gives it when its step ends (one mark at a time: that step end
        runs grant again)."""
        victim = shares.reclaim_victim(self.held.slot_holders(), window)
        if victim is None:
            return False
        if victim.running == 0:
            self.reclaiming.clear()  # a marked agent is no longer needed for this waiter
            self.give_back(self.held.agents[victim.agent_id], now)
            return True
        if not self.reclaiming:
            self.reclaiming.add(victim.agent_id)
        return False

    def pause_excess(self, shares: WindowShares, window: int, budget: int | None, now: float) -> None:
        """Pause the idle agents beyond the window or the footprint budget, and marked reclaims now idle.

        Skipped without a scan when nothing can be in excess: no mark, no more agents than
        the window, and one agent or fewer (the first-kept agent is never paused for the budget).
        """
        agents = self.held.agents
        if self.reclaiming:
            for aid in [aid for aid in self.reclaiming if aid in agents and agents[aid].running == 0]:
                self.give_back(agents[aid], now, self.reclaim_reason.pop(aid, "share-reclaim"))
        n = len(agents)
        if n > window:
            for a in self.held.over_window(shares, window):
                self.drop(a, EventKind.paused, now, "over-window")
        if budget is not None and n > 1:
            for a in self.held.over_budget(shares, window, budget):
                self.drop(a, EventKind.paused, now, "over-budget")
