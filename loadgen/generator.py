"""The task-tree generator: scenario + seed → a deterministic stream of ``TaskPlan``.

Shape of one task (all agents share the system prompt, then the task text)::

    planner (planner_steps) ─┬─ exec0 ×M → critic0 ─(p)→ exec0 ×M → critic0 …─┐
                             ├─ exec1 ×M → critic1 …                          ├─ summary
                             └─ execK-1 …                                     ┘

Every step appends ``growth_tokens`` of new input to the agent's context and
sends the whole context, then the agent's reply (a deterministic stand-in of
exactly ``output_tokens`` words, since the real reply is not known in advance)
becomes part of its history, so consecutive steps share a growing prefix.
Outputs that feed another agent (the plan, a branch's result, the critic's
feedback) reuse the same stand-in text.

Determinism: task ``i`` draws from ``Random(f"{seed}:task:{i}")`` and arrivals
from ``Random(f"{seed}:arrivals")``, so plans do not depend on timing or on
how many tasks were generated before.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace

from loadgen.dists import sample_int
from loadgen.plan import Chain, StepSpec, TaskPlan
from loadgen.scenario import Bursts, Closed, Poisson, RoleSpec, Scenario, TaskShape, Tenant
from loadgen.text import chat_tokens, words
from loadgen.trace import iter_trace_tasks


def arrival_times(sc: Scenario, seed: int, duration_s: float | None, max_tasks: int | None) -> Iterator[float | None]:
    """Task start offsets (s). Poisson: cumulative Exp(rate) gaps; bursts: ``size`` tasks at
    ``k * every_s`` (+ U(0, jitter)); closed loop: ``None`` (the runner starts them)."""
    rng = random.Random(f"{seed}:arrivals")
    arr = sc.arrivals
    n = 0
    t = 0.0
    k = 0
    while max_tasks is None or n < max_tasks:
        if isinstance(arr, Closed):
            if max_tasks is None and duration_s is None:
                return
            yield None
            n += 1
            continue
        if isinstance(arr, Poisson):
            t += rng.expovariate(arr.rate_per_s)
            batch = [t]
        else:
            assert isinstance(arr, Bursts)
            batch = sorted(k * arr.every_s + rng.random() * arr.jitter_s for _ in range(arr.size))
            k += 1
        for at in batch:
            if (duration_s is not None and at > duration_s) or (max_tasks is not None and n >= max_tasks):
                return
            yield at
            n += 1


def _pick_tenant(tenants: list[Tenant], rng: random.Random) -> Tenant:
    return rng.choices(tenants, weights=[t.weight for t in tenants])[0]


class _Agent:
    """Builds one agent's steps; its context only grows."""

    def __init__(
        self,
        task_id: str,
        agent_id: str,
        text_key: str,
        role: str,
        spec: RoleSpec,
        base: list[tuple[str, str, int]],
    ):
        self.task_id, self.agent_id, self.text_key, self.role, self.spec = (
            task_id,
            agent_id,
            text_key,
            role,
            spec,
        )
        self.msgs = list(base)  # (chat role, content, n_words)
        self.steps: list[StepSpec] = []

    def step(self, rng: random.Random, inputs: Sequence[tuple[str, int]] = ()) -> tuple[str, int]:
        """Append ``inputs`` (text, n_words from other agents) and fresh growth; return the reply."""
        i = len(self.steps)
        for text, n in inputs:
            self.msgs.append(("user", text, n))
        g = sample_int(self.spec.growth_tokens, rng)
        if g or not inputs:
            self.msgs.append(("user", words(f"{self.text_key}:{i}:in", g), g))
        out = max(1, sample_int(self.spec.output_tokens, rng))
        pause = self.spec.tool_pause_s.sample(rng)
        self.steps.append(
            StepSpec(
                task_id=self.task_id,
                agent_id=self.agent_id,
                role=self.role,
                index=i,
                messages=tuple((r, c) for r, c, _ in self.msgs),
                max_tokens=out,
                est_prompt_tokens=chat_tokens([(r, n) for r, _, n in self.msgs]),
                priority=self.spec.priority,
                pause_after_s=pause,
            )
        )
        reply = words(f"{self.text_key}:{i}:out", out)
        self.msgs.append(("assistant", reply, out))
        return reply, out


def _finish(chain: list[StepSpec]) -> Chain:
    """Mark each agent's last step done; keep a tool pause only before the same agent's next step."""
    last = {s.agent_id: j for j, s in enumerate(chain)}
    out = []
    for j, s in enumerate(chain):
        same_next = j + 1 < len(chain) and chain[j + 1].agent_id == s.agent_id
        out.append(replace(s, agent_done=last[s.agent_id] == j, pause_after_s=s.pause_after_s if same_next else 0.0))
    return tuple(out)


def build_task(sc: Scenario, seed: int, index: int, arrival_s: float | None, tag: str = "") -> TaskPlan:
    rng = random.Random(f"{seed}:task:{index}")
    tenant = _pick_tenant(sc.tenants, rng)
    shape: TaskShape = sc.shape_for(tenant)
    task_id = f"{tag}t{index:05d}"
    sys_n = shape.system_prompt_tokens
    system = words(f"{seed}:system:{tenant.name}", sys_n)
    task_n = sample_int(shape.task_prompt_tokens, rng)
    # no system message at all when it would be empty: the Messages API has no empty system prompt,
    # and every API must send the same conversation
    base = [("system", system, sys_n)] if sys_n else []
    base.append(("user", words(f"{seed}:{index}:task", task_n), task_n))
    roles = shape.roles

    def agent(name: str, role: str, spec: RoleSpec) -> _Agent:
        # text keys leave out the run tag: the same seed gives the same prompts in every run
        return _Agent(task_id, f"{task_id}.{name}", f"{seed}:{index}.{name}", role, spec, base)

    phases: list[tuple[Chain, ...]] = []
    plan_inputs: list[tuple[str, int]] = []
    if shape.planner_steps:
        planner = agent("planner", "planner", roles.planner)
        for _ in range(shape.planner_steps):
            plan_inputs = [planner.step(rng)]
        phases.append((_finish(planner.steps),))

    branches = []
    results: list[tuple[str, int]] = []
    for k in range(sample_int(shape.branches, rng)):
        ex = agent(f"exec{k}", "executor", roles.executor)
        critic = agent(f"critic{k}", "critic", roles.critic)
        chain: list[StepSpec] = []
        feedback = list(plan_inputs)
        rounds = 1
        while rounds < shape.max_rounds and shape.critic and rng.random() < shape.critic_reject_p:
            rounds += 1
        last: tuple[str, int] = ("", 0)
        for _ in range(rounds):
            for j in range(max(1, sample_int(shape.branch_steps, rng))):
                last = ex.step(rng, feedback if j == 0 else [])
                chain.append(ex.steps[-1])
            if shape.critic:
                feedback = [critic.step(rng, [last])]
                chain.append(critic.steps[-1])
        results.append(last)
        branches.append(_finish(chain))
    if branches:
        phases.append(tuple(branches))
    if shape.summary:
        summ = agent("summary", "summary", roles.summary)
        summ.step(rng, results)
        phases.append((_finish(summ.steps),))
    return TaskPlan(
        index=index,
        task_id=task_id,
        tenant=tenant.name,
        api_key=tenant.api_key,
        arrival_s=arrival_s,
        deadline_s=shape.deadline_s,
        phases=tuple(phases),
    )


def iter_tasks(
    sc: Scenario,
    seed: int | None = None,
    *,
    duration_s: float | None = None,
    max_tasks: int | None = None,
    tag: str = "",
) -> Iterator[TaskPlan]:
    """The scenario's tasks, lazily, in arrival order. ``duration_s``/``max_tasks`` override
    the scenario's. Trace scenarios are replayed by ``loadgen.trace``."""
    seed = sc.seed if seed is None else seed
    dur = duration_s if duration_s is not None else sc.duration_s
    mx = max_tasks if max_tasks is not None else sc.max_tasks
    if sc.trace is not None:
        yield from iter_trace_tasks(sc, seed, mx, dur, tag)
        return
    for i, at in enumerate(arrival_times(sc, seed, dur, mx)):
        yield build_task(sc, seed, i, at, tag)
