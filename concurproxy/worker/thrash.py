"""Thrash curve: closed-loop agents against the engine in virtual time.

``N`` agents run concurrently; each works through an :class:`AgentTask`, and
when a task ends a new one starts at once (closed loop, constant concurrency).
The engine is stepped back-to-back while it has work; when idle the clock
jumps to the next agent's return from its tool pause. No sleeps, no wall
clock: a run is deterministic for a given (config, spec, N, duration, seed).

Reported per N: useful output tokens/s, prefill tokens/s (everything the
engine prefilled, recomputation included), preemptions, tokens recomputed
after preemption, prefix tokens recomputed after eviction, prefix hit rate,
agent tasks per minute (completed agent steps / steps per task, so tasks
still in flight at the end count pro rata), mean KV usage and busy fraction.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from concurproxy.worker.agents import AgentSpec, AgentTask
from concurproxy.worker.engine import Engine, EngineConfig, EngineStats


@dataclass(frozen=True, slots=True)
class ThrashPoint:
    agents: int
    seconds: float
    output_tok_s: float
    prefill_tok_s: float
    preemptions: int
    recomputed_tokens: int
    evicted_prefix_tokens: int
    prefix_hit_rate: float
    tasks_per_min: float
    agent_steps: int
    mean_kv_usage: float
    busy_frac: float
    stats: EngineStats


def run_closed_loop(
    config: EngineConfig, spec: AgentSpec, agents: int, duration_s: float, seed: int = 0
) -> ThrashPoint:
    if spec.final_context() > config.max_model_len:
        raise ValueError(f"agent context {spec.final_context()} exceeds max_model_len {config.max_model_len}")
    engine = Engine(config)
    now = 0.0
    tasks_started = 0
    wake: list[tuple[float, int, AgentTask]] = []
    for i in range(agents):
        # stagger starts over one tool pause so the agents do not move in lockstep
        heapq.heappush(
            wake,
            (spec.tool_pause_s * i / max(agents, 1), tasks_started, AgentTask(tasks_started, spec, seed)),
        )
        tasks_started += 1
    outputs: dict[str, list[int]] = {}
    owner: dict[str, AgentTask] = {}
    steps_done = 0
    kv_area = 0.0
    n_req = 0
    while now < duration_s:
        while wake and wake[0][0] <= now:
            _, _, task = heapq.heappop(wake)
            req_id = f"t{task.task_no}s{task.step}r{n_req}"
            n_req += 1
            engine.add_request(req_id, task.prompt(), max_tokens=spec.output_tokens, arrival=now, ignore_eos=True)
            outputs[req_id] = []
            owner[req_id] = task
        if not engine.has_work():
            now = wake[0][0] if wake else duration_s
            continue
        res = engine.step(now)
        kv_area += engine.kv_usage() * res.duration
        now = res.end
        for out in res.outputs:
            outputs[out.req_id].extend(out.new_token_ids)
            if not out.finished:
                continue
            task = owner.pop(out.req_id)
            task.on_output(outputs.pop(out.req_id))
            steps_done += 1
            if task.done:
                task = AgentTask(tasks_started, spec, seed)
                tasks_started += 1
            heapq.heappush(wake, (now + spec.tool_pause_s, task.task_no, task))
    s = engine.stats
    return ThrashPoint(
        agents=agents,
        seconds=now,
        output_tok_s=s.generation_tokens / now,
        prefill_tok_s=s.prefill_tokens_computed / now,
        preemptions=s.preemptions,
        recomputed_tokens=s.recomputed_prefill_tokens,
        evicted_prefix_tokens=s.evicted_prefix_recompute_tokens,
        prefix_hit_rate=s.prefix_hit_rate,
        tasks_per_min=steps_done / spec.steps * 60.0 / now,
        agent_steps=steps_done,
        mean_kv_usage=kv_area / now,
        busy_frac=s.busy_time / now,
        stats=s,
    )


# Workloads that put each shipped profile's knee inside the default sweep: long, private
# histories (no shared system prompt), short outputs, short tool pauses — the agentic shape.
PRESETS: dict[str, tuple[AgentSpec, tuple[int, ...], float]] = {
    "tiny": (
        AgentSpec(steps=10, system_tokens=0, task_tokens=96, tool_tokens=24, output_tokens=8, tool_pause_s=0.02),
        (1, 2, 3, 4, 6, 8, 12, 16),
        60.0,
    ),
    "qwen3-32b-h100": (
        AgentSpec(steps=20, system_tokens=0, task_tokens=3000, tool_tokens=1000, output_tokens=64, tool_pause_s=0.5),
        (1, 2, 3, 4, 6, 8, 12),
        600.0,
    ),
    "llama3-8b-h100": (
        AgentSpec(steps=16, system_tokens=0, task_tokens=2000, tool_tokens=300, output_tokens=32, tool_pause_s=0.5),
        (32, 64, 96, 128, 192, 256),
        120.0,
    ),
}


def preset_for(profile_name: str, capacity_tokens: int, max_model_len: int) -> tuple[AgentSpec, tuple[int, ...], float]:
    """The preset for a shipped profile, else a workload scaled to the KV capacity."""
    if profile_name in PRESETS:
        return PRESETS[profile_name]
    final = min(max_model_len, capacity_tokens // 3)
    steps = 12
    out = max(4, final // 100)
    tool = max(4, (final - final // 4 - steps * out) // (steps - 1))
    spec = AgentSpec(
        steps=steps,
        system_tokens=0,
        task_tokens=final // 4,
        tool_tokens=tool,
        output_tokens=out,
        tool_pause_s=0.1,
    )
    return spec, (1, 2, 3, 4, 6, 8, 12, 16), 120.0


def sweep(
    config: EngineConfig, spec: AgentSpec, counts: Sequence[int], duration_s: float, seed: int = 0
) -> list[ThrashPoint]:
    return [run_closed_loop(config, spec, n, duration_s, seed) for n in counts]


HEADER = (
    "agents",
    "out tok/s",
    "prefill tok/s",
    "preempt",
    "recomputed",
    "evicted-recomp",
    "hit rate",
    "tasks/min",
    "kv use",
    "busy",
)


def format_table(points: Sequence[ThrashPoint]) -> str:
    rows = [HEADER]
    for p in points:
        rows.append(
            (
                str(p.agents),
                f"{p.output_tok_s:.0f}",
                f"{p.prefill_tok_s:.0f}",
                str(p.preemptions),
                str(p.recomputed_tokens),
                str(p.evicted_prefix_tokens),
                f"{p.prefix_hit_rate:.1%}",
                f"{p.tasks_per_min:.1f}",
                f"{p.mean_kv_usage:.0%}",
                f"{p.busy_frac:.0%}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
