"""Virtual-time run of the admission core in front of the simulated engine (no sleeps, no I/O).

``agents`` closed-loop agents (``concurproxy.worker.agents``: contexts grow every
step, tool pauses between steps; a finished task is replaced by a new agent at
once) go through an ``AdmissionCore`` before each step; admitted steps run on
one ``concurproxy.worker.engine.Engine``. Every ``interval_s`` the engine's
state becomes a ``PressureSnapshot`` (KV usage, waiting, preemptions/s and
prefix-hit rate from counter deltas, KV capacity) fed to ``on_pressure``, then
idle agents expire and waiters are granted. The last step of a task releases
the agent. Deterministic for a given (config, spec, agents, duration, seed).

``switch=(t, spec2)``: tasks started from virtual time ``t`` on follow ``spec2``
(a workload whose mix changes part-way; agents already running finish as they
began). Used by the convergence tests and by ``benchmarks.admission_vtime``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from concurproxy.config.admission import AdmissionConfig
from concurproxy.control.admission import AdmissionCore, Admitted, Outcome, Queued, Ticket
from concurproxy.control.types import PressureSnapshot, StepInfo
from concurproxy.worker.agents import AgentSpec, AgentTask
from concurproxy.worker.engine import Engine, EngineConfig

REPLICA = "r0"


@dataclass(frozen=True, slots=True)
class TracePoint:
    t: float
    window: int
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
    idle_waiting_s: float = 0.0  # engine idle (nothing to run) while steps waited for admission


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_vtime(
    engine_config: EngineConfig,
    spec: AgentSpec,
    agents: int,
    duration_s: float,
    admission: AdmissionConfig,
    *,
    interval_s: float | None = None,
    seed: int = 0,
    switch: tuple[float, AgentSpec] | None = None,
    done_signal: bool = True,
) -> VTimeResult:
    core = AdmissionCore(admission)
    engine = Engine(engine_config)
    capacity = engine_config.num_blocks * engine_config.block_size
    interval = interval_s if interval_s is not None else admission.aimd.interval_ms / 1000.0
    now, next_tick = 0.0, 0.0
    ready: list[tuple[float, int, AgentTask]] = []  # (time its next step is ready, seq, task)
    n_tasks = 0
    for i in range(agents):
        start = spec.tool_pause_s * i / max(agents, 1)  # staggered, as in the worker's thrash curve
        heapq.heappush(ready, (start, n_tasks, AgentTask(n_tasks, spec, seed)))
        n_tasks += 1
    waiting: dict[int, tuple[AgentTask, float]] = {}  # waiter id → (task, ready since)
    inflight: dict[str, tuple[AgentTask, Ticket, float, list[int]]] = {}
    n_req = steps_done = tasks_done = 0
    task_units = 0.0  # completed steps, each counted as 1/steps of its task
    latencies: list[float] = []
    trace: list[TracePoint] = []
    last = (0, 0, 0, 0.0)  # preemptions, hits, queries, t
    idle_waiting = 0.0

    def submit(task: AgentTask, ticket: Ticket, since: float) -> None:
        nonlocal n_req
        req_id = f"t{task.task_no}s{task.step}r{n_req}"
        n_req += 1
        engine.add_request(req_id, task.prompt(), max_tokens=task.spec.output_tokens, arrival=now, ignore_eos=True)
        inflight[req_id] = (task, ticket, since, [])

    def grant() -> None:
        for g in core.grant(REPLICA, now):
            task, since = waiting.pop(g.waiter_id)
            submit(task, g.admitted.ticket, since)

    def tick() -> None:
        nonlocal last
        s = engine.stats
        dt = max(now - last[3], 1e-9)
        dq = s.prefix_queries - last[2]
        snap = PressureSnapshot(
            ts=now,
            kv_usage=engine.kv_usage(),
            running=engine.num_running,
            waiting=engine.num_waiting,
            preemptions_per_s=(s.preemptions - last[0]) / dt,
            prefix_hit_rate=(s.prefix_hits - last[1]) / dq if dq > 0 else None,
            kv_capacity_tokens=capacity,
            source="vtime",
        )
        last = (s.preemptions, s.prefix_hits, s.prefix_queries, now)
        core.on_pressure(REPLICA, snap, now)
        core.expire(now)
        grant()
        w = core.window(REPLICA)
        trace.append(
            TracePoint(
                now,
                w.window,
                engine.kv_usage(),
                w.active,
                len(waiting),
                snap.prefix_hit_rate,
                w.footprint_tokens() / capacity,
            )
        )

    while now < duration_s:
        if now >= next_tick:
            tick()
            next_tick = now + interval
        while ready and ready[0][0] <= now:
            _, _, task = heapq.heappop(ready)
            step = StepInfo(
                tenant="t",
                role="agent",
                agent_id=f"a{task.task_no}",
                task_id=f"t{task.task_no}",
                est_prompt_tokens=len(task.context),
                max_tokens=task.spec.output_tokens,
            )
            res = core.try_admit(step, REPLICA, now)
            if isinstance(res, Admitted):
                submit(task, res.ticket, now)
            elif isinstance(res, Queued):
                waiting[res.waiter_id] = (task, now)
            grant()
        dl = core.window(REPLICA).deadline()
        if dl is not None and dl <= now:
            grant()
            dl = core.window(REPLICA).deadline()
            dl = dl if dl is not None and dl > now else None
        if not engine.has_work():
            later = min(ready[0][0] if ready else duration_s, next_tick, dl if dl is not None else duration_s)
            if waiting:
                idle_waiting += later - now
            now = later
            continue
        res_step = engine.step(now)
        now = res_step.end
        for out in res_step.outputs:
            inflight[out.req_id][3].extend(out.new_token_ids)
            if not out.finished:
                continue
            task, ticket, since, tokens = inflight.pop(out.req_id)
            prompt_len = len(task.context)
            task.on_output(tokens)
            steps_done += 1
            task_units += 1.0 / task.spec.steps
            latencies.append(now - since)
            core.end(
                ticket,
                Outcome.success,
                now,
                prompt_tokens=prompt_len,
                output_tokens=len(tokens),
                release=task.done and done_signal,
            )
            if task.done:
                tasks_done += 1
                task = AgentTask(n_tasks, spec if switch is None or now < switch[0] else switch[1], seed)
                n_tasks += 1
                heapq.heappush(ready, (now, task.task_no, task))
            else:
                heapq.heappush(ready, (now + task.spec.tool_pause_s, task.task_no, task))
        grant()
    s = engine.stats
    return VTimeResult(
        controller=admission.controller,
        agents=agents,
        seconds=now,
        tasks_completed=tasks_done,
        agent_steps=steps_done,
        tasks_per_min=task_units * 60.0 / now,
        output_tok_s=s.generation_tokens / now,
        prefill_tokens=s.prefill_tokens_computed,
        recomputed_tokens=s.recomputed_prefill_tokens + s.evicted_prefix_recompute_tokens,
        preemptions=s.preemptions,
        prefix_hit_rate=s.prefix_hit_rate,
        step_latency_p50_s=_pct(latencies, 0.5),
        step_latency_p99_s=_pct(latencies, 0.99),
        trace=trace,
        idle_waiting_s=idle_waiting,
    )
