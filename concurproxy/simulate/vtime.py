"""Virtual-time run of admission in front of one simulated engine: closed-loop agents on the simulator's loop.

``agents`` closed-loop agents (``concurproxy.worker.agents``: contexts grow every
step with the engine's own output, tool pauses between steps; a finished task is
replaced by a new agent at once) send their steps through `SimProxy` — the
simulator's proxy, the policy's ``DecisionCore`` in virtual time — to one replica
of ``profile``. The loop, the step order and the control interval are the
simulator's (``simulate/proxy.py``); this module is only the workload and what it
records: per control interval a `TracePoint` (window, KV usage, active agents,
steps waiting, prefix-hit rate, the admitted agents' KV footprint), and at the end
goodput, tokens, recomputation, preemptions and step latencies (from the step
being ready to its last token, admission wait included). The last step of a task
releases the agent (``done_signal``: the client says so, as ``X-Agent-Done``).

The policy served is ``policy`` (default: `harness_policy`: the defaults, FIFO
queues, round-robin routing, dispatch off — admission alone) with ``admission``
as its admission section. Deterministic for a given (profile, spec, agents,
duration, admission, policy, seed).

``switch=(t, spec2)``: tasks started from virtual time ``t`` on follow ``spec2``
(a workload whose mix changes part-way; agents already running finish as they
began). Used by the convergence tests and by ``benchmarks.admission_vtime``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from concurproxy.config.admission import AdmissionConfig
from concurproxy.config.budgets import FairnessConfig
from concurproxy.config.models import Policy
from concurproxy.config.routing import RoutingConfig
from concurproxy.control.types import StepInfo
from concurproxy.simulate.fleet import Fleet, ReplicaSpec
from concurproxy.simulate.proxy import SimProxy
from concurproxy.simulate.steps import Ev, SimStep
from concurproxy.worker.agents import AgentSpec, AgentTask
from concurproxy.worker.profile import Profile

REPLICA = "r0"


@dataclass(frozen=True, slots=True)
class TracePoint:
    t: float
    window: int  # agents that may hold slots: W as the goodput probe scales or pins it
    kv_usage: float
    active: int
    waiting: int
    prefix_hit_rate: float | None = None  # over the last interval
    footprint: float = 0.0  # admitted agents' estimated KV footprint, share of capacity


@dataclass(frozen=True, slots=True)
class VTimeResult:
    controller: str
    agents: int
    seconds: float
    tasks_completed: int
    agent_steps: int
    tasks_per_min: float  # Σ completed steps / their task's step count, per minute (in-flight tasks pro rata)
    output_tok_s: float
    prefill_tokens: int
    recomputed_tokens: int  # preemption recompute + re-prefill of evicted prefixes
    preemptions: int
    prefix_hit_rate: float
    step_latency_p50_s: float
    step_latency_p99_s: float
    trace: list[TracePoint] = field(default_factory=list)
    idle_waiting_s: float = 0.0  # nothing of ours running on the engine while steps waited for admission
    prefill_iterations: float | None = None  # the engine's mean prefill time over mean inter-token latency


def harness_policy(admission: AdmissionConfig) -> Policy:
    """Admission alone: one tenant's plain FIFO queue (no short step passes a long one), round-robin
    routing (no prefix estimate moves the footprint), no dispatch holds, no budgets."""
    fairness = FairnessConfig(policy="fifo", max_bypass_s=0, protect_priority=None, long_prefills_per_replica=0)
    return Policy(admission=admission, routing=RoutingConfig(policy="round-robin"), fairness=fairness)


@dataclass(slots=True, kw_only=True)
class _AgentStep(SimStep):
    task: AgentTask
    since: float  # ready since (latency counts from here)


class _Agents:
    """The closed-loop workload as a `SimClient`."""

    def __init__(
        self,
        proxy: SimProxy,
        spec: AgentSpec,
        agents: int,
        seed: int,
        switch: tuple[float, AgentSpec] | None,
        done: bool,
    ) -> None:
        self.proxy, self.spec, self.seed, self.switch, self.done_signal = proxy, spec, seed, switch, done
        self.n_tasks = self.steps_done = self.tasks_done = 0
        self.task_units = 0.0
        self.latencies: list[float] = []
        self.trace: list[TracePoint] = []
        for i in range(agents):
            start = spec.tool_pause_s * i / max(agents, 1)  # staggered, as in the worker's thrash curve
            proxy.push(start, Ev.step, self._new_task(spec))

    def _new_task(self, spec: AgentSpec) -> AgentTask:
        task = AgentTask(self.n_tasks, spec, self.seed)
        self.n_tasks += 1
        return task

    def on_event(self, kind: Ev, obj: Any) -> None:
        task: AgentTask = obj
        now = self.proxy.now
        info = StepInfo(
            tenant="t",
            role="agent",
            agent_id=f"a{task.task_no}",
            task_id=f"t{task.task_no}",
            est_prompt_tokens=len(task.context),
            max_tokens=task.spec.output_tokens,
            last_step=self.done_signal and task.step == task.spec.steps - 1,
        )
        self.proxy.send(_AgentStep(info=info, prompt=task.prompt(), hashes=[], task=task, since=now))

    def busy(self) -> bool:
        return True

    def refused(self, run: _AgentStep, status: int, error: str, retry: float | None, retryable: bool) -> None:
        self.proxy.push(self.proxy.now + (retry or 1.0), Ev.step, run.task)  # the agent tries again

    def served(self, run: _AgentStep, prompt_tokens: int, output_tokens: int) -> None:
        now, task = self.proxy.now, run.task
        req = run.request
        assert req is not None
        task.on_output(req.token_ids[req.prompt_len :])
        self.steps_done += 1
        self.task_units += 1.0 / task.spec.steps
        self.latencies.append(now - run.since)
        if task.done:
            self.tasks_done += 1
            switch = self.switch
            self.proxy.push(now, Ev.step, self._new_task(self.spec if switch is None or now < switch[0] else switch[1]))
        else:
            self.proxy.push(now + task.spec.tool_pause_s, Ev.step, task)

    def on_tick(self, now: float) -> None:
        proxy = self.proxy
        rep = proxy.by_id[REPLICA]
        snap = rep.snapshot
        adm = proxy.core.admission
        capacity = rep.engine.config.capacity_tokens
        window = active = 0
        footprint = 0.0
        if adm is not None:
            w = adm.window(REPLICA)
            window, active, footprint = w.slots, w.active, w.footprint_tokens() / capacity
        hit = snap.prefix_hit_rate if snap is not None else None
        kv = rep.engine.kv_usage()
        self.trace.append(TracePoint(now, window, kv, active, proxy.waiting_steps(), hit, footprint))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_vtime(
    profile: Profile,
    spec: AgentSpec,
    agents: int,
    duration_s: float,
    admission: AdmissionConfig,
    *,
    interval_s: float | None = None,
    seed: int = 0,
    switch: tuple[float, AgentSpec] | None = None,
    done_signal: bool = True,
    policy: Policy | None = None,
) -> VTimeResult:
    served = (policy or harness_policy(admission)).model_copy(update={"admission": admission})
    fleet = Fleet("vtime", (ReplicaSpec(REPLICA, profile, profile.engine_config()),))
    proxy = SimProxy(fleet, served, engine="fast", interval_s=interval_s)
    client = _Agents(proxy, spec, agents, seed, switch, done_signal)
    proxy.run(client, duration_s)
    proxy.sync(duration_s)
    now = duration_s
    engine = proxy.replicas[0].engine
    s = engine.stats
    idle = 0.0
    if proxy.core.admission is not None:
        st = proxy.core.admission.state(now).get(REPLICA)
        idle = st.idle_waiting_s if st is not None else 0.0
    return VTimeResult(
        controller=admission.controller,
        agents=agents,
        seconds=now,
        tasks_completed=client.tasks_done,
        agent_steps=client.steps_done,
        tasks_per_min=client.task_units * 60.0 / now,
        output_tok_s=s.generation_tokens / now,
        prefill_tokens=s.prefill_tokens_computed,
        recomputed_tokens=s.recomputed_prefill_tokens + s.evicted_prefix_recompute_tokens,
        preemptions=s.preemptions,
        prefix_hit_rate=s.prefix_hit_rate,
        step_latency_p50_s=_pct(client.latencies, 0.5),
        step_latency_p99_s=_pct(client.latencies, 0.99),
        trace=client.trace,
        idle_waiting_s=idle,
        prefill_iterations=s.prefill_iterations,
    )
