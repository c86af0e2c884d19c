"""Discrete-event simulation of a fleet behind the proxy's real decision core.

Algorithm
---------
One event heap ordered by ``(time, sequence)``; nothing sleeps, nothing reads
a clock. Events:

* ``arrival``: a task starts (open-loop arrival offsets from the scenario, or
  closed-loop: ``concurrency`` tasks kept running, the next one started after
  ``think_s``). Its first phase's chains become ready.
* ``step``: a step (or a retry) goes down the proxy's path, in the proxy's
  order: tenant from the API key → ``BudgetEngine.check`` (a Deny is a
  429/413 to the client) → ``Router.route`` over ``ReplicaView``s built from
  the latest snapshots and in-flight counts → ``AdmissionCore.try_admit``
  (``Admitted``: the request goes to that replica's engine; ``Queued``: it
  waits for a ``grant``; ``Rejected``: 429). 429/503 are retried like the load
  generator does (``scenario.retry``: Retry-After, else exponential backoff).
* ``engine``: a replica's engine iteration ends: its outputs are delivered
  (first token → TTFT; finished → ticket ended, budget settled, router told,
  the chain's next step scheduled after its tool pause, waiters granted) and
  the next iteration starts if the engine has work. A request added while an
  iteration runs joins the next one, as in a real engine.
* ``tick`` (every control interval): each replica's state becomes a
  ``PressureSnapshot`` fed to ``on_pressure`` (the window controllers),
  ``expire`` (idle TTL, queue timeouts → 503 + retry), then ``grant``.

Ending: no task starts after ``duration_s``; at ``duration_s + drain_s``
running tasks are cancelled (``truncated``). Every task ends as ok, failed or
cancelled; every attempt leaves one ``StepResult`` (conservation).

Deterministic for (fleet, policy, scenario, seed, options).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from concurproxy.config.models import Policy
from concurproxy.control.admission import Admitted, Outcome, Queued
from concurproxy.control.budgets import Deny
from concurproxy.control.types import StepInfo
from concurproxy.routing import NoHealthyReplica, ReplicaView, RouteRequest
from concurproxy.simulate.decide import DecisionCore, priority_of
from concurproxy.simulate.fastengine import make_engine
from concurproxy.simulate.fleet import Fleet
from concurproxy.simulate.record import SimReport
from concurproxy.simulate.replica import SimReplica, replica_views
from concurproxy.simulate.report import build_report
from concurproxy.simulate.steps import Ev, SimTask, StepRun
from concurproxy.simulate.workload import AgentTokens, TaskTokens
from concurproxy.worker.engine import RequestRejected
from loadgen.generator import iter_tasks
from loadgen.plan import TaskPlan
from loadgen.results import StepResult, TaskResult
from loadgen.scenario import Closed, Scenario


@dataclass(frozen=True, slots=True)
class SimOptions:
    duration_s: float | None = None  # stop starting tasks after this (default: the scenario's)
    drain_s: float | None = None  # then let running tasks finish this long (default: the scenario's)
    max_tasks: int | None = None
    seed: int | None = None  # default: the scenario's
    interval_s: float | None = None  # control interval (default: admission.aimd.interval_ms)
    engine: str = "fast"  # fast (exact decode fast-forward) | exact (one call per iteration)
    label: str = ""


class Simulation:
    def __init__(self, fleet: Fleet, policy: Policy, scenario: Scenario, options: SimOptions | None = None):
        self.opt = opt = options or SimOptions()
        self.sc = scenario
        self.fleet = fleet
        self.seed = scenario.seed if opt.seed is None else opt.seed
        self.core = DecisionCore.from_policy(policy)
        self.replicas = [SimReplica(s, make_engine(s.engine, opt.engine), i) for i, s in enumerate(fleet.replicas)]
        self.by_id = {r.id: r for r in self.replicas}
        self.interval = opt.interval_s or policy.admission.aimd.interval_ms / 1000.0
        self.duration = opt.duration_s if opt.duration_s is not None else scenario.duration_s
        drain = opt.drain_s if opt.drain_s is not None else scenario.drain_s
        self.hard_end = None if self.duration is None else self.duration + drain
        self.closed = isinstance(scenario.arrivals, Closed) and scenario.trace is None
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._plans: Iterator[TaskPlan] = iter_tasks(
            scenario,
            self.seed,
            duration_s=None if self.closed else self.duration,
            max_tasks=opt.max_tasks if opt.max_tasks is not None else scenario.max_tasks,
        )
        self._plans_done = False
        self._think = random.Random(f"{self.seed}:think")
        self._shared: dict[tuple[bool, str, str], list[int]] = {}
        self._waiting: dict[tuple[str, int], StepRun] = {}
        self._inflight: dict[str, StepRun] = {}
        self._req = itertools.count()
        self.active_tasks = 0
        self._task_set: dict[str, SimTask] = {}
        self.steps: list[StepResult] = []
        self.tasks: list[TaskResult] = []
        self.decisions = 0
        self.cpu_seconds = 0.0
        self.engine_calls = 0
        self.now = 0.0
        self._next_tick = 0.0
        self._want_window = any(s.type == "window-room" for s in policy.routing.scorers)

    # ---- event heap -------------------------------------------------------------------------
    def _push(self, t: float, kind: Ev, obj: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, obj))

    def _next_plan(self) -> TaskPlan | None:
        if self._plans_done:
            return None
        plan = next(self._plans, None)
        if plan is None:
            self._plans_done = True
        return plan

    # ---- run --------------------------------------------------------------------------------
    def run(self) -> SimReport:
        wall0 = time.perf_counter()
        cpu0 = time.process_time()
        if self.closed:
            assert isinstance(self.sc.arrivals, Closed)
            for _ in range(self.sc.arrivals.concurrency):
                plan = self._next_plan()
                if plan is not None:
                    self._push(0.0, Ev.arrival, plan)
        else:
            plan = self._next_plan()
            if plan is not None:
                self._push(plan.arrival_s or 0.0, Ev.arrival, plan)
        self._push(0.0, Ev.tick, None)
        heap = self._heap
        pop = heapq.heappop
        truncated = False
        while heap:
            t, _, kind, obj = heap[0]
            if self.hard_end is not None and t > self.hard_end:
                truncated = self.active_tasks > 0
                break
            pop(heap)
            self.now = t
            if kind == Ev.engine:
                self._on_engine(obj)
            elif kind == Ev.step:
                self._issue(obj)
            elif kind == Ev.tick:
                if self.active_tasks == 0 and not self._more_arrivals():
                    continue  # nothing left: let the heap run dry
                self._tick()
                self._next_tick = t + self.interval
                self._push(self._next_tick, Ev.tick, None)
            else:
                self._start_task(obj)
        end = self.now if not truncated else float(self.hard_end or self.now)
        for r in self.replicas:
            r.engine.sync(end)
        for task in list(self._running):
            self.tasks.append(
                TaskResult(
                    task.plan.task_id,
                    task.plan.tenant,
                    "cancelled",
                    task.start,
                    None,
                    task.plan.n_steps,
                    task.plan.deadline_s,
                    task.plan.arrival_s,
                )
            )
        self.cpu_seconds = time.process_time() - cpu0
        return build_report(self, end, time.perf_counter() - wall0, truncated)

    def _more_arrivals(self) -> bool:
        return any(k == Ev.arrival for _, _, k, _ in self._heap)

    # ---- tasks ------------------------------------------------------------------------------
    @property
    def _running(self) -> list[SimTask]:
        return list(self._task_set.values())

    def _start_task(self, plan: TaskPlan) -> None:
        if not self.closed:
            nxt = self._next_plan()
            if nxt is not None:
                self._push(nxt.arrival_s or 0.0, Ev.arrival, nxt)
        task = SimTask(plan, self.core.tenant(plan.api_key), TaskTokens(self._shared), self.now)
        self.active_tasks += 1
        self._task_set[plan.task_id] = task
        self._start_phase(task)

    def _start_phase(self, task: SimTask) -> None:
        if task.phase >= len(task.plan.phases):
            self._end_task(task, "ok")
            return
        chains = task.plan.phases[task.phase]
        task.chains_left = len(chains)
        for chain in chains:
            self._push(self.now, Ev.step, self._new_step(task, chain, 0))

    def _new_step(self, task: SimTask, chain: Any, pos: int) -> StepRun:
        spec = chain[pos]
        tenant = task.tenant or "anonymous"
        agent = task.agents.get(spec.agent_id)
        if agent is None:
            agent = task.agents[spec.agent_id] = AgentTokens()
        prompt = agent.prompt(spec, task.tokens, self.core.block_tokens)
        info = StepInfo(
            tenant=tenant,
            role=spec.role,
            agent_id=f"{tenant}/{spec.agent_id}",
            task_id=f"{tenant}/{spec.task_id}",
            priority=priority_of(spec.priority),
            est_prompt_tokens=spec.est_prompt_tokens,
            max_tokens=spec.max_tokens,
            last_step=spec.agent_done,
        )
        return StepRun(task, chain, pos, info, prompt, list(agent.route_hashes))

    def _end_task(self, task: SimTask, status: str) -> None:
        if task.status != "running":
            return
        task.status = status
        self.active_tasks -= 1
        self._task_set.pop(task.plan.task_id, None)
        p = task.plan
        self.tasks.append(
            TaskResult(p.task_id, p.tenant, status, task.start, self.now, p.n_steps, p.deadline_s, p.arrival_s)
        )
        task.agents.clear()
        task.tokens.own.clear()
        if self.closed and (self.duration is None or self.now < self.duration):
            plan = self._next_plan()
            if plan is not None:
                assert isinstance(self.sc.arrivals, Closed)
                self._push(self.now + self.sc.arrivals.think_s.sample(self._think), Ev.arrival, plan)

    # ---- one step down the proxy's path ------------------------------------------------------
    def _issue(self, run: StepRun) -> None:
        if run.task.status != "running":
            return
        now = self.now
        run.start = now
        core = self.core
        if run.task.tenant is None:
            self._answer(run, 401, "invalid_api_key", retry=None)
            return
        self.decisions += 1
        bud = core.budgets.check(run.info, now)
        if isinstance(bud, Deny):
            self._answer(
                run,
                bud.http_status,
                bud.reason.value,
                retry=bud.retry_after_s if bud.http_status == 429 else None,
                retryable=bud.http_status == 429,
            )
            return
        run.reservation = bud.reservation
        run.max_tokens = bud.clamped_max_tokens or run.spec.max_tokens
        try:
            dec = core.router.route(
                RouteRequest(run.info.agent_id, run.hashes, run.info.est_prompt_tokens), self._views(now), now
            )
        except NoHealthyReplica:
            core.budgets.refund(run.reservation, now)
            self._answer(run, 503, "no_healthy_replica", retry=2.0)
            return
        run.decision = dec
        if dec.matched_blocks:  # as the proxy's routing stage does: a resident shared prefix costs no new KV
            resident = min(dec.matched_blocks * core.block_tokens, run.info.est_prompt_tokens)
            run.info = dataclasses.replace(run.info, resident_prefix_tokens=resident)
        rep = run.replica = self.by_id[dec.replica_id]
        res = core.admission.try_admit(run.info, rep.id, now)
        if isinstance(res, Admitted):
            run.ticket = res.ticket
            self._submit(run)
        elif isinstance(res, Queued):
            self._waiting[(rep.id, res.waiter_id)] = run
        else:
            core.budgets.refund(run.reservation, now)
            self._answer(run, 429, res.reason, retry=res.retry_after_s)

    def _views(self, now: float) -> list[ReplicaView]:
        adm = self.core.admission if self._want_window else None
        return replica_views(self.replicas, now, self.core.stale_after_s, adm)

    def _submit(self, run: StepRun) -> None:
        rep = run.replica
        req_id = f"r{next(self._req)}"
        self._interrupt(rep)
        try:
            rep.engine.add_request(req_id, run.prompt, max_tokens=run.max_tokens, arrival=self.now, ignore_eos=True)
        except RequestRejected as exc:
            assert run.ticket is not None
            self.core.admission.end(run.ticket, Outcome.error, self.now)
            self.core.budgets.refund(run.reservation, self.now)
            self._answer(run, 400, f"context_length_exceeded: {exc}", retry=None)
            return
        rep.in_flight += 1
        self._inflight[req_id] = run
        if not rep.scheduled:
            rep.scheduled = True
            self._push(self.now, Ev.engine, (rep, rep.version))

    def _answer(self, run: StepRun, status: int, error: str, retry: float | None, retryable: bool = True) -> None:
        """An error answer to the client; the load generator retries 429/503 while it has attempts."""
        self.steps.append(run.result(self.now, status, error=error))
        r = self.sc.retry
        if status in (429, 503) and retryable and run.attempt < r.max_attempts:
            wait = retry if retry is not None else r.backoff_s * 2 ** (run.attempt - 1)
            run.attempt += 1
            run.wait_s = 0.0
            run.ticket = run.reservation = run.decision = None
            self._push(self.now + min(wait, r.max_backoff_s), Ev.step, run)
            return
        self._end_task(run.task, "failed")

    # ---- engines ----------------------------------------------------------------------------
    def _interrupt(self, rep: SimReplica) -> None:
        """Apply a planned decode run up to now (a request joins, or a pressure read) and
        reschedule the engine at the end of the iteration in progress."""
        e = rep.engine
        if e.planned and e.sync(self.now):
            rep.version += 1
            self._push(max(self.now, e.busy_until), Ev.engine, (rep, rep.version))

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
            if out.finished:
                del self._inflight[out.req_id]
                self._finish(run, out.prompt_tokens, out.output_tokens)
        e = rep.engine
        e.sync(now)
        if e.has_work():
            res = e.advance(now, self._next_tick)
            self.engine_calls += 1
            rep.pending = res.outputs
            if res.num_scheduled == 0:  # nothing fits right now: look again after one step floor
                self._push(now + max(e.config.timing.fixed_s, 1e-3), Ev.engine, ev)
            else:
                self._push(res.end, Ev.engine, ev)
        else:
            rep.scheduled = False

    def _finish(self, run: StepRun, prompt_tokens: int, output_tokens: int) -> None:
        now, core, rep, spec = self.now, self.core, run.replica, run.spec
        rep.in_flight -= 1
        assert run.ticket is not None
        core.admission.end(
            run.ticket,
            Outcome.success,
            now,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            release=spec.agent_done,
        )
        core.budgets.settle(run.reservation, prompt_tokens, output_tokens, now)
        core.router.observe_served(run.decision, run.hashes, now)
        if spec.agent_done:
            core.router.release(run.info.agent_id)
        self.steps.append(
            run.result(now, 200, replica=rep.id, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                       max_tokens=run.max_tokens)
        )  # fmt: skip
        self._grant(rep.id)
        task = run.task
        if task.status != "running":
            return
        if run.pos + 1 < len(run.chain):
            self._push(now + spec.pause_after_s, Ev.step, self._new_step(task, run.chain, run.pos + 1))
            return
        task.chains_left -= 1
        if task.chains_left == 0:
            task.phase += 1
            self._start_phase(task)

    def _grant(self, replica: str) -> None:
        for g in self.core.admission.grant(replica, self.now):
            run = self._waiting.pop((replica, g.waiter_id), None)
            if run is None:
                continue
            run.ticket = g.admitted.ticket
            run.wait_s = g.admitted.waited_s
            if run.task.status != "running":
                self.core.admission.end(run.ticket, Outcome.cancelled, self.now)
                self.core.budgets.refund(run.reservation, self.now)
                continue
            self._submit(run)

    # ---- control interval -------------------------------------------------------------------
    def _tick(self) -> None:
        now, adm = self.now, self.core.admission
        for r in self.replicas:
            if r.engine.planned:
                self._interrupt(r)
            adm.on_pressure(r.id, r.sample(now), now)
        for rid, res in adm.expire(now).items():
            for to in res.waiters:
                run = self._waiting.pop((rid, to.waiter_id), None)
                if run is None:
                    continue
                run.wait_s = to.waited_s
                self.core.budgets.refund(run.reservation, now)
                self._answer(run, 503, "admission_timeout", retry=to.retry_after_s)
        for r in self.replicas:
            self._grant(r.id)
        adm.drain_events()

    # ---- report -----------------------------------------------------------------------------


def simulate(fleet: Fleet, policy: Policy, scenario: Scenario, options: SimOptions | None = None) -> SimReport:
    """Run one simulation (see the module doc)."""
    return Simulation(fleet, policy, scenario, options).run()
