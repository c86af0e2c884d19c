"""The common real client through the proxy vs direct: plain agent loops, no done signal (issue 18).

    python -m benchmarks.plain_loop [--loads 8x3,48x8] [--arms direct,none,aimd] [--identity headers,none]
        [--rounds 1] [--profile tiny]

Each agent is one chain of S steps that resends its whole growing history (the loadgen scenario
``plain-loop``), with no tool pause and never ``X-Agent-Done``; its prompt grows to about the
whole ``tiny`` cache (~900 tokens) over its S steps. Per load (N agents x S steps, all started at
once) and arm, a fresh bundled worker (``concurproxy worker --profile``) is started and the load
runs either straight at it (``direct``) or through ``concurproxy serve`` with admission ``none``
or ``aimd`` (the default policy otherwise). ``--identity headers`` sends X-Agent-Id/X-Task-Id/
X-Agent-Role (``none``: no identity at all: the proxy infers the agents from their histories).

Printed per run: wall time until the last agent finished, steps, errors, the engine's own
preemptions and prefix-hit rate (its ``/metrics``), and for proxied runs the proxy's
``concurproxy_admission_idle_waiting_seconds_total`` (no step running while steps waited) as a
share of the wall time, in all and per cause (see docs/admission.md, "work conservation"). Then,
per load and identity mode, each arm against ``direct`` and ``none``. Traffic only to 127.0.0.1; a
shared box is noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from benchmarks.overhead import free_port, process
from concurproxy.worker.profile import load_profile
from loadgen.runner import run_scenario
from loadgen.scenario import load_scenario

FINAL_CONTEXT = 900  # tokens an agent's prompt grows to (tiny: 1024 KV tokens, 1024 max_model_len)


@dataclass(frozen=True, slots=True)
class Run:
    load: str
    arm: str
    identity: str
    wall_s: float
    steps: int
    errors: int
    preemptions: float
    hit_rate: float
    idle_waiting_s: float | None
    idle_by_cause: dict[str, float] | None = None  # the idle-wait seconds per cause (proxied runs)


def _by_label(text: str, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in re.finditer(rf'^{re.escape(name)}{{[^}}]*{label}="([^"]*)"[^}}]*}} (\S+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def _metric(text: str, name: str) -> float:
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
        return str(resp.read().decode())


def run_one(load: str, arm: str, identity: str, profile: str, seed: int) -> Run:
    agents, steps = (int(x) for x in load.split("x"))
    growth = max(8, (FINAL_CONTEXT - 80) // steps - 32)
    sc = load_scenario("plain-loop")
    task = sc.task.model_copy(
        update={
            "branch_steps": sc.task.branch_steps.model_copy(update={"value": float(steps)}),
            "roles": sc.task.roles.model_copy(
                update={
                    "executor": sc.task.roles.executor.model_copy(
                        update={
                            "growth_tokens": sc.task.roles.executor.growth_tokens.model_copy(
                                update={"value": float(growth)}
                            )
                        }
                    )
                }
            ),
        }
    )
    sc = sc.model_copy(
        update={
            "task": task,
            "max_tasks": agents,
            "arrivals": sc.arrivals.model_copy(update={"concurrency": agents}),
            "client": sc.client.model_copy(update={"identity": identity, "done_signal": False}),
            "seed": seed,
        }
    )
    py = sys.executable
    wport = free_port()
    worker_url = f"http://127.0.0.1:{wport}"
    model = load_profile(profile).model.name
    with ExitStack() as stack:
        cmd = [py, "-m", "concurproxy", "worker", "--profile", profile, "--port", str(wport), "--seed", str(seed)]
        stack.enter_context(process(cmd, worker_url + "/health", start_timeout_s=90))
        target, proxy_url = worker_url, None
        if arm != "direct":
            pport = free_port()
            proxy_url = f"http://127.0.0.1:{pport}"
            serve = [
                py,
                "-m",
                "concurproxy",
                "serve",
                "--upstream",
                worker_url,
                "--port",
                str(pport),
                "--admission",
                arm,
            ]
            stack.enter_context(process(serve, proxy_url + "/ready", start_timeout_s=90))
            target = proxy_url
        before = _get(worker_url + "/metrics")
        t0 = time.perf_counter()
        res = asyncio.run(run_scenario(sc, target, model=model, label=f"{load} {arm} {identity}"))
        wall = time.perf_counter() - t0
        after = _get(worker_url + "/metrics")
        name = "concurproxy_admission_idle_waiting_seconds_total"
        causes = _by_label(_get(proxy_url + "/metrics"), name, "cause") if proxy_url else None
        idle = sum(causes.values()) if causes is not None else None
    summary = res.summary()["steps"]
    hits = _metric(after, "vllm:prefix_cache_hits_total") - _metric(before, "vllm:prefix_cache_hits_total")
    queries = _metric(after, "vllm:prefix_cache_queries_total") - _metric(before, "vllm:prefix_cache_queries_total")
    return Run(
        load,
        arm,
        identity,
        wall,
        int(summary["ok"]),
        int(summary["errors"]),
        _metric(after, "vllm:num_preemptions_total") - _metric(before, "vllm:num_preemptions_total"),
        hits / queries if queries else 0.0,
        idle,
        causes,
    )


def format_runs(runs: Sequence[Run]) -> str:
    lines = [
        f"{'load':>6} {'identity':>8} {'arm':>6} {'wall s':>7} {'steps':>5} {'errors':>6} {'preempt':>7} "
        f"{'hit %':>5} {'idle-wait %':>11}  idle-wait % by cause"
    ]
    for r in runs:
        idle = f"{100 * r.idle_waiting_s / r.wall_s:.2f}" if r.idle_waiting_s is not None else "-"
        causes = " ".join(f"{c} {100 * v / r.wall_s:.2f}" for c, v in sorted((r.idle_by_cause or {}).items()) if v > 0)
        lines.append(
            f"{r.load:>6} {r.identity:>8} {r.arm:>6} {r.wall_s:>7.2f} {r.steps:>5} {r.errors:>6} "
            f"{r.preemptions:>7.0f} {100 * r.hit_rate:>5.1f} {idle:>11}  {causes}"
        )
    by = {(r.load, r.identity, r.arm): r for r in runs}
    for (load, identity, arm), r in by.items():
        if arm == "direct":
            continue
        d, n = by.get((load, identity, "direct")), by.get((load, identity, "none"))
        parts = [f"{load} {identity} {arm}:"]
        if d is not None:
            parts.append(
                f"time x{r.wall_s / d.wall_s:.2f} direct's, preemptions {d.preemptions:.0f} -> {r.preemptions:.0f}"
            )
        if n is not None and arm != "none":
            parts.append(f"goodput x{n.wall_s / r.wall_s:.2f} none's")
        lines.append("  ".join(parts))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.plain_loop", description=__doc__.split("\n")[0])
    ap.add_argument("--loads", default="8x3,48x8", help="NxS: N agents of S steps each (default 8x3,48x8)")
    ap.add_argument("--arms", default="direct,none,aimd", help="direct, or an admission controller name")
    ap.add_argument("--identity", default="headers", help="headers and/or none (comma-separated)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--seed", type=int, default=18)
    args = ap.parse_args(argv)
    runs = []
    for _ in range(args.rounds):
        for load in args.loads.split(","):
            for identity in args.identity.split(","):
                for arm in args.arms.split(","):
                    r = run_one(load, arm, identity, args.profile, args.seed)
                    print(format_runs([r]).splitlines()[1], file=sys.stderr, flush=True)
                    runs.append(r)
    print(format_runs(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
