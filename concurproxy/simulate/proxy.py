"""The proxy in virtual time: the policy's `DecisionCore` in front of simulated engines, one event heap.

`SimProxy` carries out the decisions of the very object the proxy serves with
(``DecisionCore.from_policy``: budgets, router, admission, dispatch) and nothing
else decides. A *client* (`SimClient`: the load generator's task plans in ``sim.py``,
the closed-loop agents of ``vtime.py``) puts steps in and hears how each ended;
both run this one loop (``run``).

One step (``send``), in the proxy's order: ``budgets.check`` (a Deny is a 429/413
to the client) → ``router.route`` over ``ReplicaView``s built from the latest
snapshots and in-flight counts (the routed prefix becomes the step's resident
prefix, as the proxy's pipeline does) → ``admission.try_admit`` (``Admitted``:
on to dispatch; ``Queued``: it waits for a ``grant``; ``Rejected``: 429) →
dispatch: the KV reserve, then the prefill gate (``dispatch.py``: the core's
``DispatchCores``; a held step waits for a release or for its core's deadline, as
the proxy's dispatch stage does) → the replica's engine. Under ``admission.controller: none`` there is no
window and no dispatch: every routed step goes to its engine at once.

Events (``Ev``), ordered by ``(time, sequence)``; nothing sleeps or reads a clock:

* ``engine``: a replica's engine iteration ends: its outputs are delivered (first
  token → TTFT and the end of the step's prefill at the prefill gate; finished →
  ticket ended, budget settled, router told, dispatch cores told, waiters
  granted, then the client hears ``served``) and the next iteration starts if the
  engine has work. A request added while an iteration runs joins the next one, as
  in a real engine.
* ``tick`` (every control interval, while the client is ``busy``): each replica's
  state becomes a ``PressureSnapshot`` fed to ``on_pressure`` (the window
  controllers), ``expire`` (idle TTL, queue timeouts → 503 to the client), then
  ``grant``; then the client's ``on_tick``.
* ``admission``: the admission core's deadline while steps wait (an idle agent
  turns dormant: its slot can go to a waiter): ``expire`` and ``grant`` then, not
  at the next tick — the proxy's gate arms a timer at the same time.
* ``dispatch``: a dispatch core's deadline on a replica (a bounded hold ran out,
  the KV reserve lapsed): ``expire`` lets its steps go.
* ``arrival``, ``step``: the client's own (``SimClient.on_event``).

Deterministic for (fleet, policy, client, options). Concurrency: none.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from typing import Any, Protocol

from concurproxy.config.models import Policy
from concurproxy.control.admission import Admitted, Queued
from concurproxy.control.budgets import Deny
from concurproxy.control.types import StepOutcome
from concurproxy.decision import DecisionCore
from concurproxy.plugins.installed import Plugins
from concurproxy.routing import NoHealthyReplica, ReplicaView, RouteRequest
from concurproxy.simulate.dispatch import SimDispatch
from concurproxy.simulate.fastengine import make_engine
from concurproxy.simulate.fleet import Fleet
from concurproxy.simulate.replica import SimReplica, replica_views
from concurproxy.simulate.steps import Ev, SimStep
from concurproxy.worker.engine import RequestRejected


class SimClient(Protocol):
    """What drives the proxy and hears back (see the module doc)."""

    def on_event(self, kind: Ev, obj: Any) -> None:
        """One of the client's own events (``arrival``, ``step``) is due."""
        ...

    def busy(self) -> bool:
        """False once nothing is running and nothing more will come: ticks stop, the heap runs dry."""
        ...

    def refused(self, run: Any, status: int, error: str, retry: float | None, retryable: bool) -> None:
        """The proxy answered ``run`` with an error (``retry``: its Retry-After, if any)."""
        ...

    def served(self, run: Any, prompt_tokens: int, output_tokens: int) -> None:
        """``run`` was answered in full (after its ticket ended and waiters were granted)."""
        ...

    def on_tick(self, now: float) -> None:
        """A control interval ended (pressure read, windows updated, waiters granted)."""
        ...


class SimProxy:
    def __init__(
        self,
        fleet: Fleet,
        policy: Policy,
        *,
        engine: str = "fast",
        interval_s: float | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        self.core = DecisionCore.from_policy(policy, plugins)
        self.replicas = [SimReplica(s, make_engine(s.engine, engine), i) for i, s in enumerate(fleet.replicas)]
        self.by_id = {r.id: r for r in self.replicas}
        self.interval = interval_s or policy.admission.aimd.interval_ms / 1000.0
        self._want_window = any(s.type == "window-room" for s in policy.routing.scorers)
        self._heap: list[tuple[float, int, Ev, Any]] = []
        self._seq = itertools.count()
        self._req = itertools.count()
        self._waiting: dict[tuple[str, int], SimStep] = {}  # (replica, waiter id) → step waiting for admission
        self._inflight: dict[str, SimStep] = {}  # engine request id → step
        self._armed_admission: float | None = None  # time of the pending admission deadline event
        self.now = 0.0
        self.next_tick = 0.0
        self.decisions = 0
        self.engine_calls = 0
        self.client: SimClient | None = None
        cores = self.core.dispatch
        self.dispatch = SimDispatch(cores, self.push, self._submit) if cores is not None else None

    # ---- the event loop ------------------------------------------------------------------------
    def push(self, t: float, kind: Ev, obj: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, obj))

    def pending(self, kind: Ev) -> bool:
        return any(k == kind for _, _, k, _ in self._heap)

    def run(self, client: SimClient, hard_end: float | None = None) -> bool:
        """Run until the heap is empty (False) or the next event lies past ``hard_end`` (True: cut there).
        ``now`` is then the time of the last event run; ``sync(end)`` brings the engines to the end."""
        self.client = client
        self.push(0.0, Ev.tick, None)
        heap = self._heap
        pop = heapq.heappop
        on_event = client.on_event
        while heap:
            t, _, kind, obj = heap[0]
            if hard_end is not None and t > hard_end:
                return True
            pop(heap)
            self.now = t
            if kind == Ev.engine:
                self._on_engine(obj)
            elif kind == Ev.tick:
                if not client.busy():
                    continue  # nothing left: let the heap run dry
                self._tick()
                self.next_tick = t + self.interval
                self.push(self.next_tick, Ev.tick, None)
            elif kind == Ev.dispatch:
                assert self.dispatch is not None
                self.dispatch.on_deadline(obj, t)
            elif kind == Ev.admission:
                if obj == self._armed_admission:  # (else superseded by an earlier one)
                    self._armed_admission = None
                    self._housekeep()
            else:
                on_event(kind, obj)
        return False

    def sync(self, end: float) -> None:
        """Apply every engine's planned work up to ``end`` (before reading their figures)."""
        for r in self.replicas:
            r.engine.sync(end)

    def _client(self) -> SimClient:
        assert self.client is not None, "SimProxy.run starts the client"
        return self.client

    # ---- one step down the proxy's path ----------------------------------------------------------
    def send(self, run: SimStep) -> None:
        """Budgets → routing → admission → dispatch → engine (see the module doc); ``run.start`` is set."""
        now, core = self.now, self.core
        run.start = now
        self.decisions += 1
        bud = core.budgets.check(run.info, now)
        if isinstance(bud, Deny):
            retryable = bud.http_status == 429
            self._client().refused(run, bud.http_status, bud.reason.value, bud.retry_after_s if retryable else None,
                                   retryable)  # fmt: skip
            return
        run.reservation = bud.reservation
        run.max_tokens = bud.clamped_max_tokens or run.info.max_tokens
        try:
            dec = core.router.route(
                RouteRequest(run.info.agent_id, run.hashes, run.info.est_prompt_tokens), self._views(now), now
            )
        except NoHealthyReplica:
            self._refuse(run, 503, "no_healthy_replica", 2.0)
            return
        run.decision = dec
        if dec.matched_blocks:  # as the proxy's routing stage does: a resident shared prefix costs no new KV
            resident = min(dec.matched_blocks * core.block_tokens, run.info.est_prompt_tokens)
            run.info = dataclasses.replace(run.info, resident_prefix_tokens=resident)
        rep = run.replica = self.by_id[dec.replica_id]
        if core.admission is None:  # controller none: admitted at once, nothing tracked
            self._submit(run)
            return
        res = core.admission.try_admit(run.info, rep.id, now)
        if isinstance(res, Admitted):
            run.ticket = res.ticket
            self._dispatch(run)
        elif isinstance(res, Queued):
            self._waiting[(rep.id, res.waiter_id)] = run
            self._grant(rep.id)  # the queue may be able to move right away
            self._arm_admission()
        else:
            self._refuse(run, 429, res.reason, res.retry_after_s)

    def _refuse(self, run: SimStep, status: int, error: str, retry: float | None) -> None:
        self.core.budgets.refund(run.reservation, self.now)
        self._client().refused(run, status, error, retry, True)

    def _views(self, now: float) -> list[ReplicaView]:
        adm = self.core.admission if self._want_window else None
        return replica_views(self.replicas, now, self.core.stale_after_s, adm)

    def waiting_steps(self) -> int:
        """Steps waiting for admission now."""
        return len(self._waiting)

    def _dispatch(self, run: SimStep) -> None:
        if self.dispatch is None:
            self._submit(run)
        else:
            self.dispatch.start(run, self.now)

    # ---- engines ---------------------------------------------------------------------------------
    def _submit(self, run: SimStep) -> None:
        rep = run.replica
        req_id = f"r{next(self._req)}"
        self._interrupt(rep)
        try:
            run.request = rep.engine.add_request(
                req_id, run.prompt, max_tokens=run.max_tokens, arrival=self.now, ignore_eos=True
            )
        except RequestRejected as exc:
            self._end(run, StepOutcome.error)
            self._refuse(run, 400, f"context_length_exceeded: {exc}", None)
            return
        rep.in_flight += 1
        self._inflight[req_id] = run
        if not rep.scheduled:
            rep.scheduled = True
            self.push(self.now, Ev.engine, (rep, rep.version))

    def _interrupt(self, rep: SimReplica) -> None:
        """Apply a planned decode run up to now (a request joins, or a pressure read) and
        reschedule the engine at the end of the iteration in progress."""
        e = rep.engine
        if e.planned and e.sync(self.now):
            rep.version += 1
            self.push(max(self.now, e.busy_until), Ev.engine, (rep, rep.version))

    def _on_engine(self, ev: tuple[SimReplica, int]) -> None:
        rep, version = ev
        if version != rep.version:
            return  # superseded by _interrupt
        now = self.now
        outs, rep.pending = rep.pending, ()
        for out in outs:
            run = self._inflight.get(out.req_id)
            if run is None:
                continue
            if run.ttft is None:
                run.ttft = now - run.start
                if run.stream and self.dispatch is not None:  # the relay's first streamed token
                    self.dispatch.first_token(run, now)
            if out.finished:
                del self._inflight[out.req_id]
                self._finish(run, out.prompt_tokens, out.output_tokens)
        e = rep.engine
        e.sync(now)
        if e.has_work():
            res = e.advance(now, self.next_tick)
            self.engine_calls += 1
            rep.pending = res.outputs
            if res.num_scheduled == 0:  # nothing fits right now: look again after one step floor
                self.push(now + max(e.config.timing.fixed_s, 1e-3), Ev.engine, ev)
            else:
                self.push(res.end, Ev.engine, ev)
        else:
            rep.scheduled = False

    def _finish(self, run: SimStep, prompt_tokens: int, output_tokens: int) -> None:
        now, core, rep = self.now, self.core, run.replica
        rep.in_flight -= 1
        self._end(run, StepOutcome.success, prompt_tokens, output_tokens)
        core.budgets.settle(run.reservation, prompt_tokens, output_tokens, now)
        core.router.observe_served(run.decision, run.hashes, now)
        if run.info.last_step:
            core.router.release(run.info.agent_id)
        self._grant(rep.id)
        self._client().served(run, prompt_tokens, output_tokens)

    def _end(self, run: SimStep, outcome: StepOutcome, prompt_tokens: int = 0, output_tokens: int = 0) -> None:
        """The step's admission ticket and dispatch hold end (the proxy leaves both blocks)."""
        if self.dispatch is not None:
            self.dispatch.end(run, self.now)
        adm = self.core.admission
        if adm is not None and run.ticket is not None:
            adm.end(run.ticket, outcome, self.now, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                    release=outcome is StepOutcome.success and run.info.last_step)  # fmt: skip
            self._arm_admission()  # its agent went idle: it may turn dormant while steps wait

    def _grant(self, replica: str) -> None:
        adm = self.core.admission
        if adm is None:
            return
        for g in adm.grant(replica, self.now):
            run = self._waiting.pop((replica, g.waiter_id), None)
            if run is None:
                continue
            run.ticket = g.admitted.ticket
            run.wait_s = g.admitted.waited_s
            if not run.live():  # its task ended while it waited
                adm.end(run.ticket, StepOutcome.cancelled, self.now)
                self.core.budgets.refund(run.reservation, self.now)
                continue
            self._dispatch(run)

    # ---- control interval, and housekeeping at the core's deadline ------------------------------
    def _tick(self) -> None:
        now, adm = self.now, self.core.admission
        for r in self.replicas:
            if r.engine.planned:
                self._interrupt(r)
            snap = r.sample(now)
            if adm is not None:
                adm.on_pressure(r.id, snap, now)
        self._housekeep()
        self._client().on_tick(now)

    def _housekeep(self) -> None:
        """Idle expiry and queue timeouts (503 to the client), then grants on every replica: what the
        proxy's gate does at each tick and at the core's deadline (``WindowGate.tick``)."""
        now, adm = self.now, self.core.admission
        if adm is None:
            return
        for rid, res in adm.expire(now).items():
            for to in res.waiters:
                run = self._waiting.pop((rid, to.waiter_id), None)
                if run is None:
                    continue
                run.wait_s = to.waited_s
                self._refuse(run, 503, "admission_timeout", to.retry_after_s)
        for r in self.replicas:
            self._grant(r.id)
        adm.drain_events()
        self._arm_admission()

    def _arm_admission(self) -> None:
        """An event at the admission core's next deadline while steps wait (one pending, moved only earlier;
        the deadline is after ``now``: one that passed was seen by the grant that just ran)."""
        adm = self.core.admission
        if adm is None or not self._waiting:
            return
        at = adm.deadline(self.now)
        if at is None:
            return
        if self._armed_admission is not None and self._armed_admission <= at:
            return
        self._armed_admission = at = max(at, self.now)
        self.push(at, Ev.admission, at)
