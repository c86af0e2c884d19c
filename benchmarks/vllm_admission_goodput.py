"""Goodput of AIMD admission against none on a real vLLM CPU engine, pooled over repeated pairs (issue 18).

    python -m benchmarks.vllm_admission_goodput --case agent-loop [--pairs 3] [--policies aimd,aimd-default]
    python -m benchmarks.vllm_admission_goodput --case decode-swarm [--pairs 3] [--agents 72 --concurrency 24]
        [--out DIR] [--engine-url URL]

Issue 18's targets for the real-vLLM tier, in realistic client mode (identity headers, never
``X-Agent-Done``; ``REAL_CLIENT`` in scripts/vllm/harness.py), one 12-block engine:

* ``agent-loop`` — (a): the tier's agent loop (``AGENT_LOOP``: 16 agents x 5 steps, contexts growing
  to 7 of the 12 blocks) on the ``medium`` model: at least 80% fewer preemptions and goodput at
  least 1.25x ``none``;
* ``decode-swarm`` — (b): the decode-bound swarm (``DECODE_SWARM``: 3 steps of 48 generated tokens
  over short contexts) on the ``tiny`` model, where recompute is cheap: goodput at least 0.95x
  ``none``. By default 72 agents, 24 at a time (a closed loop), so that an arm lasts long enough
  for the goodput probe (``aimd.probe``: epochs of >= 2 s) to act.

Makes the model (``make_tiny_model.py``) under ``--out`` unless it is there, starts one engine (12
blocks, pinned to core 0; or uses ``--engine-url``), then runs ``--pairs`` pairs: each pair is
``none`` and every controller of ``--policies`` (``aimd``: the tier's tuned AIMD, ``AIMD`` in the
harness; ``aimd-default``: the shipped defaults, ``admission: {controller: aimd}``; ``aimd-granular``: the
defaults with the one-agent goodput probe, ``aimd.probe.granular``), the order
reversed every other pair so that drift in a shared machine's load weighs on each alike, each arm
from a cold prefix cache. Prints every pair's table (engine counters, tasks, wall time, the proxy's
engine-idle-while-steps-waited seconds), then per controller: summed preemptions, tokens computed
and engine iterations, goodput pooled over its arms (tasks within deadline per minute of summed
wall clock), the ratio to ``none`` pooled and per pair (min-max: the spread), the machine's load
average around the arms, and whether each target is met. Writes every arm's counters and summary to
``--out/goodput-CASE.json``.

Wall-clock figures from a shared machine: compare ratios from one run, never across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from scripts.vllm.engines import REPO, find_vllm_python, make_model_dir, spawn_engines
from scripts.vllm.harness import (
    AGENT_LOOP,
    AIMD,
    DECODE_SWARM,
    Arm,
    admission_round,
    format_table,
    of,
    pooled_goodput,
)

CASES: dict[str, dict[str, Any]] = {
    "agent-loop": {"size": "medium", "workload": AGENT_LOOP, "target": 1.25, "preemption_cut": 0.8},
    "decode-swarm": {
        "size": "tiny",
        "workload": {**DECODE_SWARM, "agents": 72, "concurrency": 24},
        "target": 0.95,
        "preemption_cut": None,
    },
}
POLICIES: dict[str, dict[str, Any]] = {
    "none": {"controller": "none"},
    "aimd": {"controller": "aimd", "aimd": AIMD},
    "aimd-default": {"controller": "aimd"},
    "aimd-granular": {"controller": "aimd", "aimd": {"probe": {"granular": True}}},  # the one-agent probe
}


async def run_pairs(url: str, workload: dict[str, Any], controllers: list[str], pairs: int) -> list[Arm]:
    arms: list[Arm] = []
    for i in range(pairs):
        order = ["none", *controllers] if i % 2 == 0 else [*reversed(controllers), "none"]
        for controller in order:
            load = os.getloadavg()[0]
            await admission_round(url, workload, (controller,), POLICIES, arms)
            arms[-1].summary["load_avg_1m"] = [load, os.getloadavg()[0]]
        print(format_table(arms[-len(order) :]), flush=True)
        print(flush=True)
    return arms


def report(case: str, arms: list[Arm], controllers: list[str]) -> list[str]:
    spec = CASES[case]
    none = of(arms, "none")
    base = pooled_goodput(none)
    lines = [
        f"case {case} on {spec['size']}: {len(none)} pairs, workload {json.dumps(spec['workload'])}",
        "controller     preemptions  tokens computed  iterations  goodput pooled  x none  per pair (min-max)  load avg",
    ]
    verdicts = []
    for c in ["none", *controllers]:
        mine = of(arms, c)
        pre = sum(a.delta.preemptions for a in mine)
        ratios = [pooled_goodput([a]) / pooled_goodput([n]) for a, n in zip(mine, none, strict=True)]
        loads = [x for a in mine for x in a.summary["load_avg_1m"]]
        gp = pooled_goodput(mine)
        lines.append(
            f"{c:13s} {pre:12.0f} {sum(a.delta.computed_tokens for a in mine):16.0f} "
            f"{sum(a.delta.iterations for a in mine):11.0f} {gp:15.1f} {gp / base:7.2f}  "
            f"{min(ratios):.2f}-{max(ratios):.2f} {' ' * 9}{min(loads):.1f}-{max(loads):.1f}"
        )
        if c == "none":
            continue
        bare = sum(a.delta.preemptions for a in none)
        ok = gp / base >= spec["target"]
        text = f"{c}: goodput x{gp / base:.2f} (target >= {spec['target']}) {'met' if ok else 'NOT met'}"
        if spec["preemption_cut"] is not None:
            cut = 1 - pre / bare if bare else 0.0
            met = cut >= spec["preemption_cut"]
            verdict = "met" if met else "NOT met"
            text += f"; preemptions {bare:.0f} -> {pre:.0f} ({cut:.0%} fewer, target >= 80%) {verdict}"
        verdicts.append(text)
    return lines + verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.vllm_admission_goodput", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--case", choices=sorted(CASES), required=True)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--policies", default="aimd", help="comma-separated: aimd (the tier's), aimd-default, aimd-granular")
    p.add_argument("--agents", type=int, help="tasks in all (one agent each)")
    p.add_argument("--concurrency", type=int, help="agents at once (closed loop)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "vllm-goodput")
    p.add_argument("--engine-url", help="use this running engine (12 blocks, the case's model) instead of starting one")
    a = p.parse_args(argv)
    controllers = [c for c in a.policies.split(",") if c]
    if unknown := [c for c in controllers if c not in POLICIES or c == "none"]:
        p.error(f"unknown policies: {unknown}")
    spec = CASES[a.case]
    workload = {**spec["workload"]}
    if a.agents is not None:
        workload["agents"] = a.agents
    if a.concurrency is not None:
        workload["concurrency"] = a.concurrency
    spec["workload"] = workload
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if a.engine_url:
        arms = asyncio.run(run_pairs(a.engine_url, workload, controllers, a.pairs))
    else:
        py = find_vllm_python()
        if py is None:
            print("vLLM is not installed; run: bash scripts/vllm/install.sh", file=sys.stderr)
            return 2
        model = make_model_dir(py, a.out, spec["size"])
        with spawn_engines([(model, 12, "0")], log_dir=a.out, python=py, start_timeout_s=600) as engines:
            # the first request pays for lazy set-up (not in an arm); a 3-token prompt crashed the CPU
            # worker here (SIGILL), a 64-word one does not
            with httpx.Client() as c:
                warm = {"model": "tiny", "prompt": " ".join(["warm"] * 64), "max_tokens": 4}
                c.post(engines[0].url + "/v1/completions", json=warm)
            arms = asyncio.run(run_pairs(engines[0].url, workload, controllers, a.pairs))
    lines = report(a.case, arms, controllers)
    print("\n".join(lines))
    print(f"({time.monotonic() - t0:.0f} s in all)")
    doc = {
        "case": a.case,
        "workload": workload,
        "lines": lines,
        "arms": [
            {"name": x.name, "controller": x.controller, "delta": asdict(x.delta), "summary": x.summary,
             "admission": x.admission}
            for x in arms
        ],
    }  # fmt: skip
    (a.out / f"goodput-{a.case}.json").write_text(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
