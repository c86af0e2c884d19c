"""`concurproxy demo`: the product's effect in one command, on this machine.

Starts bundled worker replicas (simulated engine, default profile ``tiny``: a
1024-token KV cache), then runs the same seeded multi-agent workload (agents
whose contexts grow every step) through the proxy once per admission
controller — by default ``none`` (a plain pass-through) and ``aimd`` — each
against a fresh engine, and prints a side-by-side table: task goodput, step
latency, preemptions and recomputed prefill tokens read from the engine (recompute after a
preemption plus re-prefill of evicted prefixes: the same definition as the admission benchmark).

With several replicas, each worker's own ``vllm:kv_cache_usage_perc`` is sampled every
0.5 s over the run: the table shows the fleet's mean KV usage and how far the busiest
replica's time-averaged usage lies above it (``kv skew``, in points), and a line per run
checks the routing target "no replica more than 20 points above the fleet mean".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class DemoRow:
    controller: str
    tasks_done: int
    tasks_failed: int
    goodput_per_min: float
    steps: int
    p50_ms: float
    p99_ms: float
    preemptions: int
    recomputed_tokens: int
    prefill_tokens: int
    prefix_hit_rate: float
    ttft_p50_ms: float = 0.0
    kv_means: dict[str, float] | None = None  # replica -> time-averaged KV usage (0-1), from its /metrics
    results: Any = None

    @property
    def kv_fleet_mean(self) -> float | None:
        return sum(self.kv_means.values()) / len(self.kv_means) if self.kv_means else None

    @property
    def kv_skew_points(self) -> float | None:
        """How far the busiest replica's mean KV usage lies above the fleet mean, in points."""
        mean = self.kv_fleet_mean
        return None if mean is None or not self.kv_means else 100 * (max(self.kv_means.values()) - mean)


KV_SKEW_TARGET_POINTS = 20.0
KV_SERIES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


def kv_means(series: list[Any], metrics_urls: dict[str, str]) -> dict[str, float]:
    """Per replica, the mean of its scraped KV-usage samples (``metrics_urls``: replica -> URL)."""
    by_url: dict[str, list[float]] = {}
    for s in series:
        if s.name in KV_SERIES and s.points:
            by_url.setdefault(s.url, []).extend(v for _, v in s.points)
    return {r: sum(v) / len(v) for r, url in metrics_urls.items() if (v := by_url.get(url))}


# How the demo's agents talk to the proxy (loadgen's ``client`` section).
CLIENTS: dict[str, dict[str, Any]] = {
    "realistic": {"identity": "headers", "done_signal": False},
    "anonymous": {"identity": "none", "done_signal": False},
    "announcing": {"identity": "headers", "done_signal": True},
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run worker + proxy + a short agent load; compare admission controllers")
    p.add_argument("--profile", default="tiny", help="worker profile (default: tiny)")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--scenario", default="agents-thrash", help="loadgen scenario name or path")
    p.add_argument("--agents", type=int, help="concurrent agent tasks (closed loop); default: the scenario's")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load per controller")
    p.add_argument("--controllers", default="none,aimd", help="comma-separated admission controllers")
    p.add_argument(
        "--routing",
        default="prefix-affinity",
        help="comma-separated routing policies (round-robin, least-loaded, prefix-affinity); "
        "every controller runs with every policy",
    )
    p.add_argument("--time-scale", type=float, default=1.0, help="run the simulated engine this much faster")
    p.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="realistic",
        help="how the agents talk: realistic (identity headers, never X-Agent-Done: the common client; default), "
        "anonymous (no identity headers at all: the proxy infers the agents), announcing (X-Agent-Done on the "
        "last step)",
    )
    p.add_argument("--report", type=Path, help="write an HTML report of all runs")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        import uvloop

        rows = uvloop.run(run_demo(args))
    except ImportError:  # pragma: no cover
        rows = asyncio.run(run_demo(args))
    print(format_table(rows))
    if args.report:
        from loadgen import write_report

        write_report([r.results for r in rows], html_path=args.report)
        print(f"report: {args.report}")
    return 0


async def run_one(controller: str, routing: str, args: argparse.Namespace, progress: bool) -> DemoRow:
    from concurproxy.config import load_policy
    from concurproxy.server.app import running_proxy
    from concurproxy.worker.fleet import run_fleet
    from loadgen import load_scenario, run_scenario

    scenario = load_scenario(args.scenario)
    client = scenario.client.model_copy(update=CLIENTS[getattr(args, "client", "realistic")])
    scenario = scenario.model_copy(update={"client": client})
    if args.agents:
        scenario = scenario.model_copy(
            update={"arrivals": scenario.arrivals.model_copy(update={"concurrency": args.agents})}
        )
    async with run_fleet(args.profile, args.replicas, time_scale=args.time_scale, seed=1) as workers:
        policy = load_policy(
            overrides={
                "upstreams": [{"url": w.url, "name": f"worker-{i}"} for i, w in enumerate(workers)],
                "admission.controller": controller,
                "routing.policy": routing,
                "telemetry.log_level": "WARNING",
            },
            env={},
        )
        async with running_proxy(policy) as url:
            worker_metrics = {f"worker-{i}": w.url + "/metrics" for i, w in enumerate(workers)}
            scrape = [url + "/metrics", *worker_metrics.values()]
            results = await run_scenario(
                scenario,
                url,
                duration_s=args.duration,
                progress=progress,
                label=f"admission={controller} routing={routing}",
                scrape=scrape,
                scrape_interval_s=0.5,
                run_tag=f"{controller}-{routing}-",
                model=workers[0].served_model,
            )
        stats = [w.engine.stats for w in workers]
    summary = results.summary()
    tasks, steps = summary["tasks"], summary["steps"]
    queries = sum(s.prefix_queries for s in stats)
    return DemoRow(
        controller=controller if len(args.routing.split(",")) == 1 else f"{controller}/{routing}",
        ttft_p50_ms=float(steps["ttft_ms"].get("p50") or 0.0),
        tasks_done=int(tasks["completed"]),
        tasks_failed=int(tasks["failed"]) + int(tasks["cancelled"]),
        goodput_per_min=float(tasks["goodput_per_min"]),
        steps=int(steps["ok"]),
        p50_ms=float(steps["latency_ms"].get("p50") or 0.0),
        p99_ms=float(steps["latency_ms"].get("p99") or 0.0),
        preemptions=sum(s.preemptions for s in stats),
        recomputed_tokens=sum(s.recomputed_prefill_tokens + s.evicted_prefix_recompute_tokens for s in stats),
        prefill_tokens=sum(s.prefill_tokens_computed for s in stats),
        prefix_hit_rate=(sum(s.prefix_hits for s in stats) / queries) if queries else 0.0,
        kv_means=kv_means(results.series, worker_metrics) if len(workers) > 1 else None,
        results=results,
    )


async def run_demo(args: argparse.Namespace) -> list[DemoRow]:
    rows = []
    for controller in [c.strip() for c in args.controllers.split(",") if c.strip()]:
        for routing in [r.strip() for r in args.routing.split(",") if r.strip()]:
            print(
                f"running {args.duration:g}s of '{args.scenario}' through the proxy with admission={controller}, "
                f"routing={routing} against {args.replicas} fresh '{args.profile}' worker(s)…",
                file=sys.stderr,
            )
            rows.append(await run_one(controller, routing, args, progress=sys.stderr.isatty()))
    return rows


def format_table(rows: list[DemoRow]) -> str:
    cols: list[tuple[str, Callable[[DemoRow], str]]] = [
        ("tasks done", lambda r: f"{r.tasks_done}"),
        ("failed", lambda r: f"{r.tasks_failed}"),
        ("goodput/min", lambda r: f"{r.goodput_per_min:.1f}"),
        ("steps", lambda r: f"{r.steps}"),
        ("step p50 ms", lambda r: f"{r.p50_ms:.0f}"),
        ("step p99 ms", lambda r: f"{r.p99_ms:.0f}"),
        ("ttft p50 ms", lambda r: f"{r.ttft_p50_ms:.0f}"),
        ("preemptions", lambda r: f"{r.preemptions}"),
        ("recomputed tok", lambda r: f"{r.recomputed_tokens}"),
        ("recompute %", lambda r: f"{100 * r.recomputed_tokens / max(1, r.prefill_tokens):.1f}"),
        ("prefix hit %", lambda r: f"{100 * r.prefix_hit_rate:.1f}"),
    ]
    if any(r.kv_means for r in rows):
        cols.append(("kv mean %", lambda r: _opt(r.kv_fleet_mean, 100, ".1f")))
        cols.append(("kv skew pt", lambda r: _opt(r.kv_skew_points, 1, "+.1f")))
    width = max(14, *(len(c[0]) for c in cols))
    first = max(12, *(len(r.controller) + 2 for r in rows))
    lines = [f"{'run':<{first}}" + "".join(f"{c[0]:>{width + 1}}" for c in cols)]
    for r in rows:
        lines.append(f"{r.controller:<{first}}" + "".join(f"{fn(r):>{width + 1}}" for _, fn in cols))
    if len(rows) >= 2 and rows[0].goodput_per_min > 0:
        base, best = rows[0], rows[-1]
        lines.append(
            f"\n{best.controller} vs {base.controller}: goodput ×{best.goodput_per_min / base.goodput_per_min:.2f}, "
            f"preemptions {base.preemptions} → {best.preemptions}, "
            f"recomputed prefill tokens {base.recomputed_tokens} → {best.recomputed_tokens}"
        )
    for r in rows:
        skew = r.kv_skew_points
        if skew is not None:
            verdict = "ok" if skew <= KV_SKEW_TARGET_POINTS else "OVER"
            lines.append(
                f"kv balance {r.controller}: busiest replica {skew:+.1f} pt above the fleet mean "
                f"(target <= {KV_SKEW_TARGET_POINTS:g}): {verdict}"
            )
    return "\n".join(lines)


def _opt(v: float | None, scale: float, fmt: str) -> str:
    return "-" if v is None else format(v * scale, fmt)
