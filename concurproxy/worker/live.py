"""Closed-loop agents over HTTP, against a running worker (or anything OpenAI-compatible).

The same agent tasks as the virtual-time curve (:mod:`concurproxy.worker.agents`),
sent as ``/v1/completions`` requests in wall-clock time. A prompt is the task's
instruction and tool results rendered one word per token id (`` t123456``, one
token for :mod:`concurproxy.tokens`) with the model's answers appended verbatim,
so the prompt of step k+1 extends the prompt of step k plus its answer.
Requests carry ``X-Agent-Id`` / ``X-Task-Id`` so a concurproxy in front can
admit whole agents. Engine counters (preemptions, prefix hits, recomputed
tokens) are read as deltas of the target's vLLM-named ``/metrics`` (or
``metrics_url``, e.g. the worker behind a proxy); absent names stay ``None``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from concurproxy.tokens import tokenize
from concurproxy.worker.agents import AgentSpec, AgentTask

COUNTERS = (
    "vllm:num_preemptions_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "concurworker_recomputed_prefill_tokens_total",
    "concurworker_evicted_prefix_recompute_tokens_total",
)


@dataclass(frozen=True, slots=True)
class LivePoint:
    agents: int
    seconds: float
    output_tok_s: float
    agent_steps: int
    tasks_per_min: float
    errors: int
    preemptions: int | None
    prefix_hit_rate: float | None
    recomputed_tokens: int | None
    evicted_prefix_tokens: int | None


def render(ids: list[int]) -> str:
    return "".join(f" t{i % 1_000_000}" for i in ids)


async def scrape(session: aiohttp.ClientSession, metrics_url: str) -> dict[str, float]:
    """Sum of each counter in ``COUNTERS`` over its label sets; missing names are absent."""
    try:
        async with session.get(metrics_url) as r:
            if r.status != 200:
                return {}
            text = await r.text()
    except aiohttp.ClientError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in COUNTERS:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


async def run_live(
    session: aiohttp.ClientSession,
    base_url: str,
    spec: AgentSpec,
    agents: int,
    duration_s: float,
    seed: int = 0,
    model: str = "default",
    metrics_url: str | None = None,
    first_task: int = 0,
) -> LivePoint:
    loop = asyncio.get_running_loop()
    metrics_url = metrics_url or base_url.rstrip("/") + "/metrics"
    before = await scrape(session, metrics_url)
    start = loop.time()
    stop_at = start + duration_s
    out_tokens = steps = errors = 0

    async def agent(k: int) -> None:
        nonlocal out_tokens, steps, errors
        task_no = first_task + k
        while loop.time() < stop_at:
            task = AgentTask(task_no, spec, seed)
            prompt = render(task.context)
            while not task.done and loop.time() < stop_at:
                body = {
                    "model": model,
                    "prompt": prompt,
                    "max_tokens": spec.output_tokens,
                    "ignore_eos": True,
                }
                headers = {"X-Agent-Id": f"agent-{k}-task-{task_no}", "X-Task-Id": f"task-{task_no}"}
                try:
                    async with session.post(base_url.rstrip("/") + "/v1/completions", json=body, headers=headers) as r:
                        data = await r.json(content_type=None)
                        ok = r.status == 200
                except (aiohttp.ClientError, ValueError):
                    ok, data = False, None
                if not ok or not isinstance(data, dict):
                    errors += 1
                    await asyncio.sleep(0.05)
                    continue
                text = data["choices"][0]["text"]
                out_tokens += int(data.get("usage", {}).get("completion_tokens", 0))
                steps += 1
                out_ids = tokenize(text)
                n_before = len(task.context)
                task.on_output(out_ids)
                # the answer verbatim (its tokens are the engine's), then the tool result
                prompt += text + render(task.context[n_before + len(out_ids) :])
                if not task.done:
                    await asyncio.sleep(spec.tool_pause_s)
            task_no += agents

    await asyncio.gather(*(agent(k) for k in range(agents)))
    elapsed = loop.time() - start
    after = await scrape(session, metrics_url)

    def delta(name: str) -> float | None:
        return after[name] - before.get(name, 0.0) if name in after else None

    queries, hits = delta(COUNTERS[1]), delta(COUNTERS[2])
    pre, rec, ev = delta(COUNTERS[0]), delta(COUNTERS[3]), delta(COUNTERS[4])
    return LivePoint(
        agents=agents,
        seconds=elapsed,
        output_tok_s=out_tokens / elapsed,
        agent_steps=steps,
        tasks_per_min=steps / spec.steps * 60.0 / elapsed,
        errors=errors,
        preemptions=None if pre is None else int(pre),
        prefix_hit_rate=None if not queries or hits is None else hits / queries,
        recomputed_tokens=None if rec is None else int(rec),
        evicted_prefix_tokens=None if ev is None else int(ev),
    )


HEADER = (
    "agents",
    "out tok/s",
    "steps",
    "tasks/min",
    "errors",
    "preempt",
    "recomputed",
    "evicted-recomp",
    "hit rate",
)


def format_live_table(points: list[LivePoint]) -> str:
    def opt(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [HEADER]
    for p in points:
        rows.append(
            (
                str(p.agents),
                f"{p.output_tok_s:.0f}",
                str(p.agent_steps),
                f"{p.tasks_per_min:.1f}",
                str(p.errors),
                opt(p.preemptions, "d"),
                opt(p.recomputed_tokens, "d"),
                opt(p.evicted_prefix_tokens, "d"),
                opt(p.prefix_hit_rate, ".1%"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
