"""One replica's active window of agents: admission, tickets, idle TTL (losing slots: ``pausing.py``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace

from concurproxy.config.admission import AdmissionConfig
from concurproxy.control.admission.capacity import Capacity
from concurproxy.control.admission.events import AdmissionEvent, EventKind, EventLog
from concurproxy.control.admission.gate import IdleWaitClock, SlotGate
from concurproxy.control.admission.held import HeldAgent, HeldAgents
from concurproxy.control.admission.lanes import Lanes
from concurproxy.control.admission.pace import AdmissionPace
from concurproxy.control.admission.pausing import Pausing
from concurproxy.control.admission.shares import WindowShares
from concurproxy.control.admission.state import Counters, ReplicaState
from concurproxy.control.admission.tenants import TenantSlots
from concurproxy.control.admission.tickets import (
    AdmitResult,
    Admitted,
    ExpireResult,
    Grant,
    Outcome,
    Queued,
    Rejected,
    Ticket,
    WaiterTimeout,
)
from concurproxy.control.admission.waiters import Waiter, WaiterSet
from concurproxy.control.limits.base import StepSample, WindowController, WindowDecision
from concurproxy.control.types import PressureSnapshot, StepInfo, WaitQueue


class ReplicaWindow:
    """Active window of AGENTS (not requests) on one replica.

    Algorithm:

    * An agent holds a slot from admission until it is released (explicitly, or
      with its last ticket when marked finished), its idle TTL expires (no step
      running for ``idle_ttl_s``), or it is *paused*. Steps of an agent holding a
      slot pass at once, whatever the pressure.
    * A new agent is admitted when nobody waits ahead of it and the replica can
      take it: fresh pressure data, a free slot of W, room in the KV footprint
      budget (see `Capacity`; small agents: `SmallAgentLane`).
    * Otherwise the step waits in the ``WaitQueue``. ``grant(now)`` admits
      waiters while the conditions hold, in queue order — except that a waiter
      older than ``starvation_timeout_s`` goes first, and, when no new agent has
      been admitted for ``starvation_timeout_s``, it is admitted even above the
      window or footprint (never on stale data): at least one new agent per
      timeout per replica. Waiters older than ``max_queue_wait_s`` time out.
    * Window shrink, outgrown footprint budget, share reclaim: idle agents beyond
      them lose their slot, running ones after their step (see `Pausing`).
    * Role shares (``shares``, from ``roles.*.window_share``; see `WindowShares`):
      a waiter whose role holds fewer slots than its guarantee is served before
      the queue, taking a burst agent's slot when the window is full. No shares
      configured: none of this applies.
    * Work conservation (`SlotGate`): an idle agent past its learned return gap
      (*dormant*: most clients never send ``X-Agent-Done``) gives its slot to a
      waiting step; a step waiting for footprint room or a pressure-led W is
      admitted while nothing runs here if it evicts no prefix expected back, and
      another waiter backfills when the lanes' choice cannot be admitted. Tenants
      share the slots by weighted max-min fairness and claim them at step
      boundaries (`TenantSlots`); the order of waiters is `Lanes`'. A goodput
      probe (`OvercommitProbe`) scales W and the footprint budget where admitting
      more pays. ``idle_waiting_s`` measures the invariant.
    * Pressure source (`PressureSource`): a replica without a usable KV signal is
      led by a latency-based controller; one whose signal went stale is saturated
      for ``stale_grace_s``, then falls back the same way.

    Tickets: every admitted step gets a ``Ticket`` that must be ended once with
    an ``Outcome``; a second ``end`` is a counted no-op.

    Events: every decision appends an ``AdmissionEvent`` to the window's `EventLog`
    (``log``; the core shares one among its windows); ``drain_events`` hands them to
    the shell. Concurrency: single caller (one event loop), no locks.

    Hot path: a step of an agent that holds a slot, on a replica without waiters, costs
    a dict lookup, one ticket, one event each way, and no scan of the agents (see
    ``Pausing.pause_excess``).
    """

    def __init__(
        self,
        replica: str,
        controller: WindowController,
        config: AdmissionConfig,
        queue: WaitQueue[int],
        *,
        ids: Iterator[int] | None = None,
        log: EventLog | None = None,
        fallback: Callable[[], WindowController] | None = None,
    ) -> None:
        self.replica = replica
        self._cfg = config
        self._waiters = WaiterSet(queue)
        self.queued = self._waiters.by_id  # waiter id -> waiter, arrival order (read-only)
        self._ids = ids if ids is not None else itertools.count(1)
        self._held = HeldAgents(config.aimd, lambda role: self.shares.key(role))
        self._agents = self._held.agents  # insertion order = admission order
        self._tickets: dict[int, Ticket] = {}
        self._cap = Capacity(controller, config.aimd, self._held, fallback, config.stale_grace_s)
        self._decision = WindowDecision(controller.window, False, "initial")
        self._pace = AdmissionPace(config.max_queue_wait_s, config.starvation_timeout_s)
        self._log = log if log is not None else EventLog()
        self.counters = Counters()
        self.shares = WindowShares()
        self._pausing = Pausing(replica, self._held, self.counters, self._log)
        self._paused = self._pausing.paused  # agent id -> (when it lost its slot, steps): its next step resumes
        self._tenant_slots = TenantSlots(config.tenant_slots.quantum_steps) if config.tenant_slots.enabled else None
        self._lanes = Lanes(self, self._waiters, self._held, self._pausing, self._cap, self._tenant_slots)
        self._gate = SlotGate(
            config, self._cap, self._held, self._pausing, self.open_tickets, self._lanes.reclaim, self._lanes.claim
        )
        self._idle = IdleWaitClock()

    # ---- pressure and window ------------------------------------------------------------
    @property
    def controller(self) -> WindowController:
        return self._cap.controller

    @property
    def window(self) -> int:
        return self._cap.controller.window

    @property
    def slots(self) -> int:
        """Agents that may hold slots now: W as the goodput probe scales or pins it (see `Capacity.slots`)."""
        return self._cap.slots()

    @property
    def active(self) -> int:
        return len(self._agents)

    def on_pressure(self, snapshot: PressureSnapshot | None, now: float) -> WindowDecision:
        """Feed the latest snapshot (None: re-evaluate the one held) to the controller."""
        held, source = self._cap.observe(snapshot, now)
        if source is not None:
            self._emit(EventKind.source, now, source)
        slot_holders = self._held.slot_holders()
        d = self.controller.update(held, len(slot_holders), now, HeldAgents.acked(slot_holders))
        if d.changed:
            if d.window > self._decision.window:
                self.counters.window_increases += 1
            else:
                self.counters.window_decreases += 1
            self._emit(EventKind.window, now, d.reason, value=d.window)
        self._decision = d
        if self._cap.controller.stale_after_s is not None:  # the probe moves limits only for pressure readers
            hit = None if snapshot is None else snapshot.prefix_hit_rate
            holders, fits = len(self._agents), self._cap.agents_fit()
            self._cap.probe.on_tick(now, self._cap.saturation(now) is None, bool(self._waiters), hit, holders, fits)
        self._pause_over_window(now)
        return d

    def saturation(self, now: float) -> str | None:
        """Why nothing new may be admitted on data grounds now, or None (see `Capacity`)."""
        return self._cap.saturation(now)

    def footprint_tokens(self) -> int:
        return self._held.footprint_tokens()

    # ---- admission ---------------------------------------------------------------------
    def try_admit(self, step: StepInfo, now: float) -> AdmitResult:
        agent = self._agents.get(step.agent_id)
        self._gate.note_arrival(step.agent_id, agent, now)
        if agent is not None:
            agent.releasing = False
            agent.priors.on_step(agent.fp, step.est_prompt_tokens)
            return Admitted(self._open(step, agent, now, "in-window"))
        if len(self._waiters) >= self._cfg.max_queue_length:
            self.counters.rejected += 1
            self._emit(EventKind.rejected, now, "queue-full", step)
            return Rejected("queue-full", self.retry_after_s(len(self._waiters)))
        if self._lanes.small_fits(self._gate, step, now):
            agent = self._admit_agent(step, now, small=True)
            return Admitted(self._open(step, agent, now, "small"))
        if not self._waiters:
            reason = self._gate.reason(step, "queue", self._cap.new_reason(), now)
            if reason is not None:
                agent = self._admit_agent(step, now)
                return Admitted(self._open(step, agent, now, reason))
        wid = next(self._ids)
        self._waiters.push(wid, step, now, resume=step.agent_id in self._paused)
        if not self._tickets and not self._idle.idle:
            self._note_idle(now)
        self.counters.queued += 1
        self._emit(
            EventKind.queued, now, self._cap.block_reason(step, now) or "behind-queue", step, value=len(self._waiters)
        )
        return Queued(wid, len(self._waiters))

    def grant(self, now: float) -> list[Grant]:
        """Admit waiters while slots, budget and fresh data allow (call after any change)."""
        grants = self._grant_small(now)
        while (oldest := self._waiters.oldest()) is not None:
            starved = now - oldest.since >= self._cfg.starvation_timeout_s
            w, lane = self._lanes.next(oldest, starved, now)
            if w is None:
                break
            default = lane if lane in ("share", "resume", "claim") else "new"
            reason = self._gate.reason(w.step, lane, default, now)
            if reason is None and starved:
                block = self._cap.block_reason(w.step, now)
                if block is not None and not block.startswith("saturated") and self._pace.stalled(now, w.since):
                    reason = "starvation"
            if reason is None:
                w = self._lanes.backfill(self._gate, now)  # the head waits for a prefix: fill the idle engine
                if w is None:
                    break
                lane, reason = "backfill", "work-conserving"
            self._waiters.take(w, lane == "queue", now)
            grants.append(self._grant_waiter(w, now, reason))
            for other in self._waiters.remove_agent(w.step.agent_id):
                grants.append(self._grant_waiter(other, now, "in-window"))
        if self._idle.idle:  # still idle after trying: charge the rest of the period to today's cause
            self._note_idle(now)
        return grants

    def deadline(self, now: float) -> float | None:
        """The next time after ``now`` at which time alone may free a slot here while steps wait (an
        idle agent turns dormant), or None; the shell grants again then instead of at its next tick."""
        return self._gate.deadline(now) if self._waiters else None

    def _grant_small(self, now: float) -> list[Grant]:
        """Admit waiting new agents that the small-agent lane fits, in arrival order."""
        grants: list[Grant] = []
        for w in self._lanes.small_waiters(self._gate, now):
            self._waiters.take(w, False, now)
            grants.append(self._grant_waiter(w, now, "small"))
            for other in self._waiters.remove_agent(w.step.agent_id):
                grants.append(self._grant_waiter(other, now, "in-window"))
        return grants

    # ---- role shares ----------------------------------------------------------------------
    def set_shares(self, shares: WindowShares, now: float) -> None:
        self.shares = shares
        self._held.refresh_priors()
        self._pausing.reclaiming.clear()
        self._pause_over_window(now)

    def set_tenant_weight(self, weight: Callable[[str], float]) -> None:
        """Tenants' weights for their fair shares of the slots (``tenants[].weight``)."""
        if self._tenant_slots is not None:
            self._tenant_slots.weight = weight

    def _grant_waiter(self, w: Waiter, now: float, reason: str) -> Grant:
        waited = now - w.since
        agent = self._agents.get(w.step.agent_id)
        if agent is None:
            agent = self._admit_agent(w.step, now, small=reason == "small")
            if reason == "starvation":
                self.counters.admitted_starvation += 1
        else:
            agent.priors.on_step(agent.fp, w.step.est_prompt_tokens)
        return Grant(w.waiter_id, Admitted(self._open(w.step, agent, now, reason, waited), waited))

    def _admit_agent(self, step: StepInfo, now: float, *, small: bool = False) -> HeldAgent:
        priors = self._held.priors_of(step.role, step.tenant)
        fp = self._held.new_footprint(step, priors)
        agent = HeldAgent(
            step.agent_id, step.tenant, step.role, now, now, fp, priors, small=small, priority=step.priority
        )
        agent.steps = self._pausing.resume(step.agent_id)  # a paused agent's life goes on
        if small:
            self.counters.admitted_small += 1
        self._agents[step.agent_id] = agent
        self._pace.admitted(now)
        self.counters.admitted_new += 1
        return agent

    def _open(self, step: StepInfo, agent: HeldAgent, now: float, reason: str, waited: float = 0.0) -> Ticket:
        t = Ticket(next(self._ids), self.replica, agent.agent_id, step, now, reason)
        self._tickets[t.id] = t
        if self._idle._since is not None:  # a step runs: an idle-while-waiting period ends
            self._idle.observe(now, False)
        agent.running += 1
        agent.steps += 1
        agent.last_seen = now
        self.counters.admitted_steps += 1
        self._log.events.append(
            AdmissionEvent(EventKind.admitted, self.replica, now, reason, step.agent_id, step.tenant, waited)
        )
        return t

    def retry_after_s(self, position: int) -> float:
        """Seconds a client should wait before retrying (see `AdmissionPace`)."""
        return self._pace.retry_after_s(position)

    # ---- endings -----------------------------------------------------------------------
    def end(
        self,
        ticket: Ticket,
        outcome: Outcome,
        now: float,
        *,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
        release: bool = False,
    ) -> bool:
        """End a step's ticket. False (and counted) when it was already ended.

        ``release``: the agent is finished (last step) — its slot goes when its
        last running step ends. Usage tokens update the footprint estimate and
        are charged to the wait queue's fairness counters.
        """
        name: str = outcome._value_  # the plain string (``.value`` is a slow descriptor on the per-step path)
        step = ticket.step
        if self._tickets.pop(ticket.id, None) is None:
            self.counters.double_end += 1
            self._emit(EventKind.double_end, now, name, step)
            return False
        ended = self.counters.ended
        ended[name] = ended.get(name, 0) + 1
        self._log.events.append(
            AdmissionEvent(
                EventKind.ended, self.replica, now, name, step.agent_id, step.tenant, now - ticket.admitted_at
            )
        )
        if prompt_tokens or output_tokens:
            self._waiters.queue.charge(step, prompt_tokens, output_tokens, now)
        self._gate.last_end = now
        ok = outcome is Outcome.success
        if ok:
            self._cap.probe.on_step(output_tokens)
        self._cap.source.on_step(StepSample(output_tokens, now - ticket.admitted_at, len(self._tickets) + 1, ok, now))
        agent = self._agents.get(ticket.agent_id)
        if agent is not None:
            agent.running -= 1
            agent.last_seen = now
            agent.fp.on_usage(prompt_tokens, output_tokens)
            agent.releasing = agent.releasing or release
            if agent.running == 0 and agent.releasing:
                self._pausing.drop(agent, EventKind.released, now, "finished")
        if len(self._agents) > 1 or self._pausing.reclaiming:  # one agent is never beyond W (>= 1) or the budget
            self._pause_over_window(now)
        if not self._tickets and self._waiters:
            self._note_idle(now)
        return True

    def release_agent(self, agent_id: str, now: float) -> bool:
        """The agent finished: free its slot now, or when its running steps end."""
        return self._pausing.release(agent_id, now)

    def cancel_wait(self, waiter_id: int, now: float) -> bool:
        """A waiting step gave up (client gone, task cancelled). True if it was waiting."""
        if not self._give_up(waiter_id, "client", now):
            return False
        self._note_idle(now)
        return True

    def _give_up(self, waiter_id: int, reason: str, now: float) -> bool:
        """A waiter leaves unadmitted (``cancelled``, ``reason``). False: it was not waiting."""
        w = self._waiters.remove(waiter_id)
        if w is not None:
            self.counters.cancelled_waits += 1
            self._emit(EventKind.cancelled, now, reason, w.step, value=now - w.since)
        return w is not None

    def close(self, now: float) -> list[int]:
        """The replica left the pool: every step waiting here gives up (``cancelled``, reason ``replica-left``)
        and a ``window`` event without a value says the window is gone. Returns the waiters' ids."""
        ids = list(self.queued)
        for wid in ids:
            self._give_up(wid, "replica-left", now)
        self._emit(EventKind.window, now, "replica-left")
        self._note_idle(now)
        return ids

    def expire(self, now: float) -> ExpireResult:
        """Drop agents idle for ``idle_ttl_s`` and time out waiters past ``max_queue_wait_s``."""
        expired = self._pausing.expire(self._cfg.idle_ttl_s, now)
        late = [w for w in self._waiters if now - w.since >= self._cfg.max_queue_wait_s]
        timeouts: list[WaiterTimeout] = []
        for pos, w in enumerate(late, start=1):
            self._waiters.remove(w.waiter_id)
            self.counters.timeouts += 1
            self._emit(EventKind.timeout, now, "max-queue-wait", w.step, value=now - w.since)
            timeouts.append(
                WaiterTimeout(w.waiter_id, w.step.agent_id, now - w.since, self.retry_after_s(len(self._waiters) + pos))
            )
        self._note_idle(now)
        return ExpireResult(expired, timeouts)

    def _note_idle(self, now: float) -> None:
        waiting = not self._tickets and bool(self._waiters)
        cause = self._lanes.idle_cause(self._gate, self._cfg.starvation_timeout_s, now) if waiting else None
        self._idle.observe(now, waiting, cause)

    def _pause_over_window(self, now: float) -> None:
        self._pausing.pause_excess(self.shares, self._cap.slots(), self._cap.budget(), now)

    # ---- events and state --------------------------------------------------------------
    def _emit(
        self,
        kind: EventKind,
        now: float,
        reason: str,
        step: StepInfo | None = None,
        *,
        value: float | None = None,
        agent_id: str | None = None,
        tenant: str | None = None,
    ) -> None:
        if step is not None:
            agent_id, tenant = step.agent_id, step.tenant
        self._log.events.append(AdmissionEvent(kind, self.replica, now, reason, agent_id, tenant, value))

    def drain_events(self) -> list[AdmissionEvent]:
        """The events not yet drained (every window's, when the log is shared)."""
        return self._log.drain()

    def has_waiters(self) -> bool:
        return bool(self.queued)

    def open_tickets(self) -> int:
        return len(self._tickets)

    def state(self, now: float) -> ReplicaState:
        s = self._cap.snapshot
        sat = self._cap.saturation(now)  # (first: it also settles which controller decides now)
        oldest = self._waiters.oldest()
        return ReplicaState(
            replica=self.replica,
            controller=self.controller.name,
            window=self.window,
            window_reason=self._decision.reason,
            saturated=sat is not None,
            saturated_reason=sat,
            active_agents=len(self._agents),
            running_steps=len(self._tickets),
            paused_agents=len(self._paused),
            waiting=len(self._waiters),
            oldest_wait_s=0.0 if oldest is None else now - oldest.since,
            footprint_tokens=self.footprint_tokens(),
            footprint_budget_tokens=self._cap.budget(),
            pressure_age_s=None if s is None else s.age(now),
            kv_usage=None if s is None else s.kv_usage,
            counters=replace(self.counters, ended=dict(self.counters.ended)),
            agents=self._held.states(now),
            slots=self._cap.slots(),
            probe_multiplier=self._cap.probe.multiplier,
            return_bound_s=self._gate.returns.bound(),
            idle_waiting_s=self._idle.total(now),
            idle_waiting_by_cause=self._idle.totals(now),
            pressure_source=self._cap.source.mode(now),
        )
