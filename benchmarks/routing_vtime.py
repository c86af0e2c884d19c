"""Virtual-time routing benchmark: one multi-agent workload over simulated engines, per policy.

``python -m benchmarks.routing_vtime [--agents 48 --replicas 4 --seconds 90 --blocks 4000]``

``agents`` closed-loop agents (:class:`concurproxy.worker.agents.AgentTask`: a shared system
prompt, a private task, a tool result appended every step, a tool pause between steps) send
their steps through a router to ``replicas`` engines (:class:`concurproxy.worker.engine.Engine`,
the llama3-8b-h100 step-time profile with ``blocks`` KV blocks each). Discrete-event loop in
virtual time: no clock, no sleeps; a run is deterministic for its arguments. Replica views are
read fresh from the engines at each decision (the live proxy sees ~250 ms old snapshots).

Printed per policy: the fleet's prefix-cache hit rate (the engines' own token counters, as
``vllm:prefix_cache_hits/queries``), TTFT mean / p50 / p99, goodput (generated tokens/s of
finished steps), agent steps completed, preemptions, and the worst replica's time-averaged KV
usage minus the fleet mean (points). Virtual time is unaffected by the host's speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from concurproxy.config.routing import RoutingConfig
from concurproxy.routing.factory import build_router
from concurproxy.routing.prefix import hash_tokens
from concurproxy.routing.prompt_cache import IncrementalPrefixHasher
from concurproxy.routing.types import ReplicaView, RouteDecision, Router, RouteRequest
from concurproxy.worker.agents import AgentSpec, AgentTask
from concurproxy.worker.engine import Engine, EngineConfig
from concurproxy.worker.profile import load_profile

POLICIES = ("round-robin", "least-loaded", "prefix-affinity")


@dataclass(frozen=True, slots=True)
class BenchResult:
    policy: str
    seconds: float
    hit_rate: float
    ttft_mean: float
    ttft_p50: float
    ttft_p99: float
    goodput_tok_s: float
    steps: int
    preemptions: int
    kv_skew_points: float
    fleet_kv_mean: float
    repins: tuple[tuple[str, int], ...] = ()  # re-pins by reason
    lost_prefixes: int = 0  # re-pins because the pinned replica died or drained
    retried: int = 0  # steps in flight on a killed replica, resubmitted through the router
    retried_completed: int = 0
    stranded: int = 0  # steps left on a dead replica at the end (must be 0)


def _pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(
    policy: str,
    config: EngineConfig,
    spec: AgentSpec,
    agents: int,
    replicas: int,
    seconds: float,
    seed: int = 0,
    kill_at: float | None = None,
) -> BenchResult:
    """One policy's run; ``kill_at`` kills replica ``r0`` at that virtual time (its in-flight
    steps are aborted and resubmitted through the router, as the proxy retries them)."""
    bt = config.block_size
    router = build_router(
        RoutingConfig.model_validate(
            {"policy": policy, "block_tokens": bt, "index_max_blocks": max(1000, config.num_blocks)}
        )
    )
    engines = {f"r{i}": Engine(config) for i in range(replicas)}
    ids = list(engines)
    wake: list[tuple[float, int, AgentTask]] = []
    started = 0
    for i in range(agents):
        heapq.heappush(wake, (spec.tool_pause_s * i / agents, started, AgentTask(started, spec, seed)))
        started += 1
    pending: dict[str, tuple[AgentTask, RouteDecision, list[int], list[int]]] = {}
    kv_area = dict.fromkeys(ids, 0.0)
    last_t = dict.fromkeys(ids, 0.0)
    ttfts: list[float] = []
    out_tokens = steps = n_req = 0
    repins: Counter[str] = Counter()
    lost = 0
    dead: set[str] = set()
    retry_ids: set[str] = set()
    retried_done = 0
    now = 0.0
    while now < seconds:
        if kill_at is not None and now >= kill_at and not dead:
            dead.add(ids[0])
            for req_id in [q for q, (_, d, _, _) in pending.items() if d.replica_id == ids[0]]:
                engines[ids[0]].abort(req_id, now)
                task = pending.pop(req_id)[0]
                heapq.heappush(wake, (now, -1 - len(retry_ids), task))
                retry_ids.add(f"retry-{task.task_no}-{task.step}")
        busy = [(max(e.busy_until, now), rid) for rid, e in engines.items() if e.has_work() and rid not in dead]
        t_eng, rid = min(busy) if busy else (float("inf"), "")
        t_wake = wake[0][0] if wake else float("inf")
        if t_wake <= t_eng:
            now = t_wake
            if now >= seconds:
                break
            _, _, task = heapq.heappop(wake)
            prompt = task.prompt()
            hashes = hash_tokens(prompt, bt)
            views = [
                ReplicaView(
                    r,
                    healthy=r not in dead,
                    kv_usage=e.kv_usage(),
                    waiting=e.num_waiting,
                    load=float(e.num_running + e.num_waiting),
                )
                for r, e in engines.items()
            ]
            d = router.route(RouteRequest(f"agent-{task.task_no}", tuple(hashes)), views, now)
            if d.repinned_from is not None:
                repins[d.reason.value] += 1
                lost += d.lost_prefix
            req_id = f"q{n_req}"
            n_req += 1
            if f"retry-{task.task_no}-{task.step}" in retry_ids:
                req_id = f"retry-{task.task_no}-{task.step}"
            engines[d.replica_id].add_request(
                req_id, prompt, max_tokens=spec.output_tokens, arrival=now, ignore_eos=True
            )
            pending[req_id] = (task, d, prompt, [])
            continue
        now = t_eng
        eng = engines[rid]
        res = eng.step(now)
        kv_area[rid] += eng.kv_usage() * res.duration
        last_t[rid] = res.end
        for out in res.outputs:
            task, d, prompt, produced = pending[out.req_id]
            produced.extend(out.new_token_ids)
            if not out.finished:
                continue
            del pending[out.req_id]
            retried_done += out.req_id in retry_ids
            if out.timing is not None and out.timing.ttft is not None:
                ttfts.append(out.timing.ttft)
            out_tokens += len(produced)
            steps += 1
            router.observe_served(d, hash_tokens(prompt + produced, bt), res.end)
            task.on_output(produced)
            if task.done:
                router.release(d.agent_id)
                task = AgentTask(started, spec, seed)
                started += 1
            heapq.heappush(wake, (res.end + spec.tool_pause_s, task.task_no, task))
    span = max(now, 1e-9)
    q = sum(e.stats.prefix_queries for e in engines.values())
    h = sum(e.stats.prefix_hits for e in engines.values())
    kv_means = [kv_area[r] / span for r in ids]
    fleet = sum(kv_means) / len(kv_means)
    return BenchResult(
        policy=policy,
        seconds=span,
        hit_rate=h / q if q else 0.0,
        ttft_mean=sum(ttfts) / len(ttfts) if ttfts else 0.0,
        ttft_p50=_pct(ttfts, 0.5),
        ttft_p99=_pct(ttfts, 0.99),
        goodput_tok_s=out_tokens / span,
        steps=steps,
        preemptions=sum(e.stats.preemptions for e in engines.values()),
        kv_skew_points=100 * (max(kv_means) - fleet),
        fleet_kv_mean=fleet,
        repins=tuple(sorted(repins.items())),
        lost_prefixes=lost,
        retried=len(retry_ids),
        retried_completed=retried_done,
        stranded=sum(1 for _, d, _, _ in pending.values() if d.replica_id in dead),
    )


def format_results(rows: Sequence[BenchResult]) -> str:
    head = (
        "policy",
        "hit rate",
        "ttft mean",
        "ttft p50",
        "ttft p99",
        "goodput tok/s",
        "steps",
        "preempt",
        "kv mean",
        "kv skew",
    )
    body = [
        (
            r.policy,
            f"{r.hit_rate:.1%}",
            f"{r.ttft_mean * 1e3:.0f} ms",
            f"{r.ttft_p50 * 1e3:.0f} ms",
            f"{r.ttft_p99 * 1e3:.0f} ms",
            f"{r.goodput_tok_s:.0f}",
            str(r.steps),
            str(r.preemptions),
            f"{r.fleet_kv_mean:.0%}",
            f"+{r.kv_skew_points:.1f} pt",
        )
        for r in rows
    ]
    table = [head, *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in table)


def micro() -> str:
    """Hot-path costs per request (wall clock of this host): tokenize, hash, route."""
    import time  # the only clock in this module: it measures the host, not the simulation

    from concurproxy.tokens import synth_text, tokenize

    texts = [synth_text(4096, seed=s) for s in range(32)]
    toks = [tokenize(t) for t in texts]
    hashes = [tuple(hash_tokens(t, 16)) for t in toks]
    views = [ReplicaView(f"r{i}", kv_usage=0.3 + i / 20, waiting=i, load=float(i)) for i in range(4)]
    lines = []

    def timed(label: str, n: int, fn: Callable[[int], object]) -> None:
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        lines.append(f"{label:50s} {(time.perf_counter() - t0) / n * 1e6:8.1f} µs")

    timed("tokenize a 4096-token prompt", 100, lambda i: tokenize(texts[i % 32]))
    timed("hash_tokens, 4096 tokens (256 blocks)", 300, lambda i: hash_tokens(toks[i % 32], 16))
    grown = [texts[0]]
    for k in range(1, 41):
        grown.append(grown[-1] + synth_text(256, seed=k))
    hasher = IncrementalPrefixHasher(16)
    hasher.hashes("a", grown[0])
    timed("incremental hash, +256 tokens (4k..14k history)", 40, lambda i: hasher.hashes("a", grown[i + 1]))
    for policy in POLICIES:
        router = build_router(RoutingConfig.model_validate({"policy": policy}))

        def route_one(i: int, r: Router = router) -> object:
            return r.route(RouteRequest(f"a{i % 32}", hashes[i % 32]), views, i * 1e-3)

        timed(f"route ({policy}, 4 replicas, 256 blocks)", 5000, route_one)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.routing_vtime", description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=48)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=90.0, help="virtual seconds per policy")
    ap.add_argument("--blocks", type=int, default=4000, help="KV blocks (of 16 tokens) per replica")
    ap.add_argument("--profile", default="llama3-8b-h100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", action="append", choices=POLICIES, help="default: all three")
    ap.add_argument("--kill-at", type=float, default=None, help="kill replica r0 at this virtual time")
    ap.add_argument("--micro", action="store_true", help="print per-request hot-path costs instead")
    a = ap.parse_args(argv)
    if a.micro:
        print(micro())
        return
    base = load_profile(a.profile).engine_config(seed=a.seed)
    config = dataclasses.replace(base, num_blocks=a.blocks, max_model_len=min(base.max_model_len, a.blocks * 16))
    spec = AgentSpec(steps=16, system_tokens=512, task_tokens=1024, tool_tokens=256, output_tokens=32, tool_pause_s=0.5)
    print(
        f"{a.agents} agents x {spec.steps} steps (context {spec.system_tokens + spec.task_tokens}"
        f"->{spec.final_context()} tokens, shared system prompt {spec.system_tokens}), "
        f"{a.replicas} replicas x {a.blocks} blocks, {a.seconds:.0f} virtual s, profile {a.profile}"
    )
    rows = [run(p, config, spec, a.agents, a.replicas, a.seconds, a.seed, a.kill_at) for p in (a.policy or POLICIES)]
    print(format_results(rows))
    if a.kill_at is not None:
        for r in rows:
            print(
                f"{r.policy}: r0 killed at {a.kill_at:g}s, {r.retried} in-flight steps resubmitted "
                f"({r.retried_completed} completed, {r.stranded} stranded), re-pins {dict(r.repins)}, "
                f"lost prefixes {r.lost_prefixes}"
            )


if __name__ == "__main__":
    main()
