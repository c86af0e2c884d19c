"""Shared by the real-vLLM test tier (tests/vllm) and the demo (scripts/vllm/demo.py).

Runs one seeded loadgen workload against a target (an engine or the proxy) and measures what
the engines themselves count, from their ``/metrics`` before and after the run (counter deltas,
not wall time): preemptions, prefix-cache queries and hits (tokens, counted per full
128-token block on the CPU build), generated tokens. Between arms each engine's prefix cache
is emptied with ``POST /reset_prefix_cache`` (needs ``VLLM_SERVER_DEV_MODE=1`` on the engine),
so the arms start from the same cold cache.

Nothing here starts processes (:mod:`scripts.vllm.engines` does); proxies run in-process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

import httpx

from concurproxy.config import load_policy
from concurproxy.config.models import Policy
from concurproxy.server.app import running_proxy
from concurproxy.signals.cost import FIELDS as COST_FIELDS
from concurproxy.signals.cost import prefill_iterations
from concurproxy.signals.engine_metrics import parse_engine_metrics
from loadgen.results import Results
from loadgen.runner import run_scenario
from loadgen.scenario import Scenario, parse_scenario

# The admission workload of the tier, the demo and the goodput benchmark on ``medium`` (12-block
# engine, 1536 KV tokens): an agent loop that overloads the cache in both ways at once. 16 agents
# (the demo: 24) start together, each 5 steps over its
# own ~200-token task prompt (after a shared ~130-token system prompt), the context growing by the
# previous reply and 8 words a step to ~900 tokens (7 blocks), 24 generated tokens a step
# (``ignore_eos``). Bare, the engine runs every agent whose prompt fits: running requests that grow
# into a new block find the cache full and are preempted (8-9 times per run), and each agent's
# context is evicted by the other agents' steps before its next step, so it is prefilled again
# (prefix hit rate ~19%). Through AIMD the admitted agents' contexts stay cached (~55-63%) and the
# engine computes about half the tokens. Longer replies would preempt more but push the 5th step
# past max-model-len 1024; fewer steps or shorter contexts save less prefill. A bare arm lasts
# 25-50 s on this 2-core box (load-dependent), so the 300 s deadline leaves room.
AGENT_LOOP: dict[str, Any] = {
    "agents": 16, "steps": 5, "system_words": 32, "task_words": 48, "growth_words": 8, "output_tokens": 24,
    "deadline_s": 300.0, "request_timeout_s": 300.0,
}  # fmt: skip
# A decode-bound swarm on ``tiny`` (issue 18 (b)), same 12-block engine: 24 agents at once, 3 steps
# each over short contexts (~130 tokens, a shared ~70-token system prompt) growing by the previous
# 48-token reply (~200 tokens a step: the load generator's reply stand-in is 48 words) to ~560
# tokens, 48 generated tokens a step. Recompute is cheap here (a 560-token prefill on ``tiny`` costs
# a few decode iterations) and most engine iterations are decode, so what decides goodput is how
# full each batch is: the bare engine runs as many agents as fit (and preempts ~10 times), while
# admission that serialises agents to fit the cache costs engine iterations.
DECODE_SWARM: dict[str, Any] = {
    "agents": 24, "steps": 3, "system_words": 16, "task_words": 16, "growth_words": 4, "output_tokens": 48,
    "deadline_s": 300.0, "request_timeout_s": 300.0,
}  # fmt: skip
# AIMD for an engine whose steps last about a second: start at one agent, read the engine
# every 50 ms, grow 0.1 agent per healthy read only while KV usage < 50%, hold 10 reads after a cut.
# One agent's whole-life footprint here is ~60% of the cache, so at the default headroom (0.95)
# the footprint budget admits a second agent only now and then and the engine idles between the
# steps of the one it runs; 1.3 lets two agents in mid-life share it (measured: docs/vllm.md).
# kv_target 0.5 keeps the window at what fits: with 7-block contexts a third agent preempts.
AIMD: dict[str, Any] = {
    "initial": 1, "interval_ms": 50, "increase": 0.1, "kv_target": 0.5, "cooldown_intervals": 10,
    "footprint_headroom": 1.3,
}  # fmt: skip
# Routing: 4 agents one after another, 3 steps each, the prompt growing ~2 blocks per step.
ROUTE: dict[str, Any] = {
    "agents": 4, "concurrency": 1, "steps": 3, "system_words": 32, "task_words": 8, "growth_words": 32,
    "output_tokens": 32,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative engine counters summed over engines (``None`` fields read as 0)."""

    preemptions: float = 0.0
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    generation_tokens: float = 0.0
    prompt_tokens: float = 0.0
    computed_tokens: float = 0.0  # vllm:iteration_tokens_total_sum: prefill (recompute included) + decode
    iterations: float = 0.0  # vllm:iteration_tokens_total_count: engine steps (one batch each)
    prefill_s: float = 0.0  # vllm:request_prefill_time_seconds_sum: requests' PREFILL phases
    prefills: float = 0.0  # its _count
    itl_s: float = 0.0  # vllm:inter_token_latency_seconds_sum (time_per_output_token before vLLM 0.11)
    itls: float = 0.0  # its _count (the four in signals/cost.py's FIELDS order)

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0

    @property
    def prefill_iterations(self) -> float | None:
        """A request's mean prefill time in mean inter-token latencies (decode iterations): what one
        prefill costs the batch, the engine's own measure of how dear recompute is (docs/vllm.md)."""
        return prefill_iterations(self.prefill_s, self.prefills, self.itl_s, self.itls)


async def read_counters(client: httpx.AsyncClient, engine_url: str) -> Counters:
    r = await client.get(engine_url + "/metrics", timeout=10.0)
    r.raise_for_status()
    s = parse_engine_metrics(r.text, time.monotonic())
    return Counters(
        s.preemptions_total or 0.0,
        s.prefix_queries_total or 0.0,
        s.prefix_hits_total or 0.0,
        s.generation_tokens_total or 0.0,
        s.prompt_tokens_total or 0.0,
        _sum_of(r.text, "vllm:iteration_tokens_total_sum"),
        _sum_of(r.text, "vllm:iteration_tokens_total_count"),
        *(getattr(s, f) or 0.0 for f in COST_FIELDS),
    )


def _sum_of(text: str, name: str) -> float:
    """Sum of the samples of one metric name (over engines); 0 when absent."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(None, 1)[-1])
    return total


async def total_counters(client: httpx.AsyncClient, engines: Sequence[str]) -> Counters:
    total = Counters()
    for url in engines:
        total = total + await read_counters(client, url)
    return total


async def reset_prefix_cache(client: httpx.AsyncClient, engines: Sequence[str]) -> None:
    """Empty every engine's prefix cache (the engine must be idle; dev-mode endpoint)."""
    for url in engines:
        r = await client.post(url + "/reset_prefix_cache", timeout=30.0)
        r.raise_for_status()


@dataclass
class Arm:
    """One run of the workload: the loadgen results and the engines' counter deltas."""

    name: str
    results: Results
    delta: Counters
    summary: dict[str, Any] = field(default_factory=dict)
    controller: str = ""  # admission controller of the proxy in front, when the arm compares them
    admission: dict[str, Any] = field(default_factory=dict)  # the proxy's admission state of replica r0 at the end

    @property
    def completed(self) -> int:
        return int(self.summary["tasks"]["completed"])

    @property
    def started(self) -> int:
        return int(self.summary["tasks"]["started"])

    @property
    def in_deadline(self) -> int:
        return int(self.summary["tasks"]["in_deadline"])

    @property
    def failed(self) -> int:
        return int(self.summary["tasks"]["failed"]) + int(self.summary["tasks"]["cancelled"])

    @property
    def goodput_per_min(self) -> float:
        return float(self.summary["tasks"]["goodput_per_min"])

    def engine_mean(self, name: str) -> float | None:
        """Mean over the run of an engine gauge scraped every 0.5 s (summed over engines per scrape)."""
        per_t: dict[float, float] = {}
        for series in self.results.series:
            if series.name == name:
                for t, v in series.points:
                    per_t[round(t * 2) / 2] = per_t.get(round(t * 2) / 2, 0.0) + v
        return sum(per_t.values()) / len(per_t) if per_t else None


async def run_arm(
    name: str, sc: Scenario, target: str, engines: Sequence[str], *, reset: bool = True, model: str | None = None
) -> Arm:
    """Run ``sc`` once against ``target``; counter deltas are summed over ``engines``.

    The engines' ``/metrics`` (and the proxy's, when ``target`` is a proxy: its admission
    window) are scraped every 0.5 s into the results for the report's time series.
    """
    async with httpx.AsyncClient() as client:
        if reset:
            await reset_prefix_cache(client, engines)
        before = await total_counters(client, engines)
        res = await run_scenario(
            sc,
            target,
            label=name,
            model=model,
            run_tag=f"{name}-",
            scrape=[u + "/metrics" for u in engines] + ([] if target in engines else [target + "/metrics"]),
            scrape_interval_s=0.5,
        )
        after = await total_counters(client, engines)
        state: dict[str, Any] = {}
        if target not in engines:
            r = await client.get(target + "/admin/state", timeout=10.0)
            if r.status_code == 200:
                state = (r.json().get("admission") or {}).get("replicas", {}).get("r0", {})
    return Arm(name, res, after - before, res.summary(), admission=state)


def policy_for(urls: Sequence[str], **sections: Any) -> Policy:
    """A proxy policy over ``urls`` (replicas r0, r1, …) with the given top-level sections."""
    doc: dict[str, Any] = {"upstreams": [{"url": u, "name": f"r{i}"} for i, u in enumerate(urls)], **sections}
    return load_policy(overrides=doc, env={})


ADMISSION: dict[str, dict[str, Any]] = {"none": {"controller": "none"}, "aimd": {"controller": "aimd", "aimd": AIMD}}
# Arms interleaved so that a drift in a shared machine's load weighs on both controllers alike.
ROUND = ("none", "aimd", "aimd", "none")
PAIR = ("none", "aimd")


async def admission_round(
    engine_url: str,
    workload: dict[str, Any] = AGENT_LOOP,
    order: Sequence[str] = ROUND,
    admission: dict[str, dict[str, Any]] = ADMISSION,
    arms: list[Arm] | None = None,
) -> list[Arm]:
    """The seeded ``workload`` through the proxy in front of one engine, one arm per controller of
    ``order`` (named ``none-1``, ``aimd-1``, ``aimd-2``, …; ``Arm.controller`` says which). Arms are
    appended to ``arms`` (numbered on from what it holds) and returned."""
    arms = [] if arms is None else arms
    for controller in order:
        name = f"{controller}-{1 + sum(a.controller == controller for a in arms)}"
        async with running_proxy(policy_for([engine_url], admission=admission[controller])) as proxy:
            arm = await run_arm(name, agent_swarm(**workload), proxy, [engine_url])
        arm.controller = controller
        arms.append(arm)
    return arms


def of(arms: Sequence[Arm], controller: str) -> list[Arm]:
    return [a for a in arms if a.controller == controller]


def pooled_goodput(arms: Sequence[Arm]) -> float:
    """Tasks within deadline per minute over the arms' summed wall clock."""
    return 60.0 * sum(a.in_deadline for a in arms) / sum(a.results.meta.elapsed_s for a in arms)


def pooled_line(arms: Sequence[Arm]) -> str:
    none, aimd = pooled_goodput(of(arms, "none")), pooled_goodput(of(arms, "aimd"))
    return f"pooled goodput (tasks/min): none {none:.1f}, aimd {aimd:.1f} (x{aimd / none:.2f})"


# How real agent frameworks call: identity headers (X-Agent-Id, ...) but never X-Agent-Done.
REAL_CLIENT: dict[str, Any] = {"api": "chat", "identity": "headers", "done_signal": False}


def agent_swarm(
    *,
    agents: int = 16,
    concurrency: int | None = None,
    steps: int = 2,
    system_words: int = 64,
    task_words: int = 24,
    growth_words: int = 16,
    output_tokens: int = 96,
    seed: int = 7,
    model: str = "tiny",
    request_timeout_s: float = 120.0,
    deadline_s: float = 120.0,
    client: dict[str, Any] | None = None,
) -> Scenario:
    """``agents`` single-agent tasks, ``concurrency`` (default: all) at once in a closed loop, each
    ``steps`` growing steps; a task counts for goodput when done within ``deadline_s``.

    ``client`` is loadgen's client mode; the default is the realistic one (``REAL_CLIENT``: identity
    headers, no ``X-Agent-Done``: a finished agent just stops sending, as real clients do).

    Every request asks for exactly ``output_tokens`` (``ignore_eos``); the context grows by the
    previous reply plus ``growth_words`` each step. One loadgen word is ~4 tokens of the tiny
    model's tokenizer, so with the defaults a step's prompt is ~420 then ~900 tokens.
    """
    doc = {
        "name": f"swarm-{agents}x{steps}",
        "model": model,
        "seed": seed,
        "arrivals": {"mode": "closed", "concurrency": concurrency or agents},
        "max_tasks": agents,
        "drain_s": request_timeout_s,
        "request_timeout_s": request_timeout_s,
        "retry": {"max_attempts": 1},
        "task": {
            "system_prompt_tokens": system_words,
            "task_prompt_tokens": task_words,
            "planner_steps": 0,
            "branches": 1,
            "branch_steps": steps,
            "critic": False,
            "summary": False,
            "deadline_s": deadline_s,
            "roles": {"executor": {"growth_tokens": growth_words, "output_tokens": output_tokens}},
        },
        "client": REAL_CLIENT if client is None else client,
    }
    return parse_scenario(doc, "agent_swarm")


def _one_decimal(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _mean(arm: Arm, name: str) -> str:
    return _one_decimal(arm.engine_mean(name))


def _idle(arm: Arm) -> str:
    idle = arm.admission.get("idle_waiting_s")
    return "-" if idle is None else f"{idle:.1f}"


def format_table(arms: Sequence[Arm]) -> str:
    """Side-by-side table of the arms (engine counters + task outcome)."""
    rows: list[tuple[str, list[str]]] = [
        ("preemptions", [f"{a.delta.preemptions:.0f}" for a in arms]),
        ("prefix-cache hits (tokens)", [f"{a.delta.prefix_hits:.0f}" for a in arms]),
        ("prefix-cache hit rate", [f"{a.delta.hit_rate:.1%}" for a in arms]),
        ("prompt tokens", [f"{a.delta.prompt_tokens:.0f}" for a in arms]),
        ("tokens computed (recompute incl.)", [f"{a.delta.computed_tokens:.0f}" for a in arms]),
        ("generated tokens", [f"{a.delta.generation_tokens:.0f}" for a in arms]),
        ("engine iterations", [f"{a.delta.iterations:.0f}" for a in arms]),
        ("prefill / inter-token latency", [_one_decimal(a.delta.prefill_iterations) for a in arms]),
        ("tasks completed", [f"{a.completed}/{a.started}" for a in arms]),
        ("goodput (tasks/min)", [f"{a.goodput_per_min:.1f}" for a in arms]),
        ("task latency p50 (s)", [f"{a.summary['tasks']['latency_s']['p50']:.1f}" for a in arms]),
        ("elapsed (s)", [f"{a.results.meta.elapsed_s:.1f}" for a in arms]),
        ("engine: requests running (mean)", [_mean(a, "vllm:num_requests_running") for a in arms]),
        ("engine: requests waiting (mean)", [_mean(a, "vllm:num_requests_waiting") for a in arms]),
        ("proxy: engine idle, steps waiting (s)", [_idle(a) for a in arms]),
    ]
    w0 = max(len(r[0]) for r in rows)
    ws = [max(len(a.name), *(len(r[1][i]) for r in rows)) for i, a in enumerate(arms)]
    lines = ["  ".join([" " * w0, *(a.name.rjust(w) for a, w in zip(arms, ws, strict=True))])]
    for label, vals in rows:
        lines.append("  ".join([label.ljust(w0), *(v.rjust(w) for v, w in zip(vals, ws, strict=True))]))
    return "\n".join(lines)
