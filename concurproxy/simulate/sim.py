"""Discrete-event simulation of a fleet behind the proxy's real decision core, driven by the load
generator's task plans.

The proxy side — budgets, routing, admission, dispatch, the engines, the control
interval — is `SimProxy` (``proxy.py``): the policy's ``DecisionCore``, the same
object the proxy serves with, carried out in virtual time. This module is its
client: the load generator's tasks and their retries.

* ``arrival``: a task starts (open-loop arrival offsets from the scenario, or
  closed-loop: ``concurrency`` tasks kept running, the next one started after
  ``think_s``). Its first phase's chains become ready.
* ``step``: a step (or a retry) goes down the proxy's path: tenant from the API
  key (none: 401), then ``SimProxy.send``. 429/503 are retried like the load
  generator does (``scenario.retry``: Retry-After, else exponential backoff).
* When a step is served, the chain's next step is scheduled after its tool
  pause; when a phase's chains are done, the next phase starts.

Ending: no task starts after ``duration_s``; at ``duration_s + drain_s``
running tasks are cancelled (``truncated``). Every task ends as ok, failed or
cancelled; every attempt leaves one ``StepResult`` (conservation).

Deterministic for (fleet, policy, scenario, seed, options).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from concurproxy.config.models import Policy
from concurproxy.control.types import PriorityClass, StepInfo
from concurproxy.simulate.fleet import Fleet
from concurproxy.simulate.proxy import SimProxy
from concurproxy.simulate.record import SimReport
from concurproxy.simulate.report import build_report
from concurproxy.simulate.steps import Ev, SimTask, StepRun
from concurproxy.simulate.workload import AgentTokens, TaskTokens
from concurproxy.tenancy.directory import TenantDirectory
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
        self.proxy = SimProxy(fleet, policy, engine=opt.engine, interval_s=opt.interval_s)
        self.core = self.proxy.core
        self.replicas = self.proxy.replicas
        self.tenants = TenantDirectory.from_policy(policy.tenants, policy.auth, env={})
        self._tenant_of: dict[str, str | None] = {}
        self.duration = opt.duration_s if opt.duration_s is not None else scenario.duration_s
        drain = opt.drain_s if opt.drain_s is not None else scenario.drain_s
        self.hard_end = None if self.duration is None else self.duration + drain
        self.closed = isinstance(scenario.arrivals, Closed) and scenario.trace is None
        self._plans: Iterator[TaskPlan] = iter_tasks(
            scenario,
            self.seed,
            duration_s=None if self.closed else self.duration,
            max_tasks=opt.max_tasks if opt.max_tasks is not None else scenario.max_tasks,
        )
        self._plans_done = False
        self._think = random.Random(f"{self.seed}:think")
        self._shared: dict[tuple[bool, str, str], list[int]] = {}
        self.active_tasks = 0
        self._task_set: dict[str, SimTask] = {}
        self.steps: list[StepResult] = []
        self.tasks: list[TaskResult] = []
        self.cpu_seconds = 0.0

    @property
    def now(self) -> float:
        return self.proxy.now

    @property
    def decisions(self) -> int:
        return self.proxy.decisions

    @property
    def engine_calls(self) -> int:
        return self.proxy.engine_calls

    def _next_plan(self) -> TaskPlan | None:
        if self._plans_done:
            return None
        plan = next(self._plans, None)
        if plan is None:
            self._plans_done = True
        return plan

    def tenant(self, api_key: str) -> str | None:
        """The tenant of a key (None: the proxy would answer 401)."""
        if api_key not in self._tenant_of:
            self._tenant_of[api_key] = self.tenants.lookup(api_key)
        return self._tenant_of[api_key]

    # ---- run --------------------------------------------------------------------------------
    def run(self) -> SimReport:
        wall0 = time.perf_counter()
        cpu0 = time.process_time()
        proxy = self.proxy
        if self.closed:
            assert isinstance(self.sc.arrivals, Closed)
            for _ in range(self.sc.arrivals.concurrency):
                plan = self._next_plan()
                if plan is not None:
                    proxy.push(0.0, Ev.arrival, plan)
        else:
            plan = self._next_plan()
            if plan is not None:
                proxy.push(plan.arrival_s or 0.0, Ev.arrival, plan)
        cut = proxy.run(self, self.hard_end)
        truncated = cut and self.active_tasks > 0
        end = float(self.hard_end) if truncated and self.hard_end is not None else self.now
        proxy.sync(end)
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

    # ---- SimClient ----------------------------------------------------------------------------
    def on_event(self, kind: Ev, obj: Any) -> None:
        if kind == Ev.step:
            self._issue(obj)
        else:
            self._start_task(obj)

    def busy(self) -> bool:
        return self.active_tasks > 0 or self.proxy.pending(Ev.arrival)

    def on_tick(self, now: float) -> None:
        return None

    # ---- tasks ------------------------------------------------------------------------------
    @property
    def _running(self) -> list[SimTask]:
        return list(self._task_set.values())

    def _start_task(self, plan: TaskPlan) -> None:
        if not self.closed:
            nxt = self._next_plan()
            if nxt is not None:
                self.proxy.push(nxt.arrival_s or 0.0, Ev.arrival, nxt)
        task = SimTask(plan, self.tenant(plan.api_key), TaskTokens(self._shared), self.now)
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
            self.proxy.push(self.now, Ev.step, self._new_step(task, chain, 0))

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
        hashes = list(agent.route_hashes)
        return StepRun(info=info, prompt=prompt, hashes=hashes, stream=self.sc.stream, task=task, chain=chain, pos=pos)

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
                self.proxy.push(self.now + self.sc.arrivals.think_s.sample(self._think), Ev.arrival, plan)

    # ---- one step: identity here, the rest in the proxy ---------------------------------------
    def _issue(self, run: StepRun) -> None:
        if run.task.status != "running":
            return
        if run.task.tenant is None:
            run.start = self.now
            self.refused(run, 401, "invalid_api_key", None, True)
            return
        self.proxy.send(run)

    def refused(self, run: StepRun, status: int, error: str, retry: float | None, retryable: bool) -> None:
        """An error answer to the client; the load generator retries 429/503 while it has attempts."""
        self.steps.append(run.result(self.now, status, error=error))
        r = self.sc.retry
        if status in (429, 503) and retryable and run.attempt < r.max_attempts:
            wait = retry if retry is not None else r.backoff_s * 2 ** (run.attempt - 1)
            run.attempt += 1
            run.wait_s = 0.0
            run.ticket = run.reservation = run.decision = None
            self.proxy.push(self.now + min(wait, r.max_backoff_s), Ev.step, run)
            return
        self._end_task(run.task, "failed")

    def served(self, run: StepRun, prompt_tokens: int, output_tokens: int) -> None:
        now, spec = self.now, run.spec
        self.steps.append(
            run.result(now, 200, replica=run.replica.id, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                       max_tokens=run.max_tokens)
        )  # fmt: skip
        task = run.task
        if task.status != "running":
            return
        if run.pos + 1 < len(run.chain):
            self.proxy.push(now + spec.pause_after_s, Ev.step, self._new_step(task, run.chain, run.pos + 1))
            return
        task.chains_left -= 1
        if task.chains_left == 0:
            task.phase += 1
            self._start_phase(task)


def simulate(fleet: Fleet, policy: Policy, scenario: Scenario, options: SimOptions | None = None) -> SimReport:
    """Run one simulation (see the module doc)."""
    return Simulation(fleet, policy, scenario, options).run()


def priority_of(name: str) -> PriorityClass:
    try:
        return PriorityClass[name]
    except KeyError:
        return PriorityClass.normal
