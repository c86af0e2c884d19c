"""Demo: the proxy in front of real vLLM CPU engines, side by side with the bare engine.

    python -m scripts.vllm.demo [--size large] [--agents 24] [--blocks 12] [--out results/vllm-demo]
    bash scripts/vllm/demo.sh …                # installs the vLLM venv first if needed

1. finds the vLLM interpreter (``$CONCURPROXY_VLLM_PYTHON`` or ``.venv-vllm/``; see install.sh);
2. makes a random Llama + BPE tokenizer locally (``--size large``: 6 layers, hidden 1024, a size
   up from the test tier's ``medium``; its text is random — the model exists to load the
   engine, not to say anything);
3. starts two engines through ``concurproxy worker --engine vllm`` with ``--blocks`` KV blocks;
4. admission: the tier's seeded agent loop (``AGENT_LOOP`` with ``--agents`` 24, 5 steps, long private
   contexts) through the proxy in front of engine 0, arms ``none``, ``aimd``, ``aimd``, ``none``
   (cold prefix cache each time; goodput pooled per controller);
5. routing: a 4-agent workload over both engines with ``round-robin`` then ``prefix-affinity``;
6. prints both tables (engine counters from /metrics + task outcomes) and writes loadgen
   reports (HTML + PNG) and each run's results JSON into ``--out``.

Engines are always stopped, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from concurproxy.server.app import running_proxy
from loadgen.report import write_report
from scripts.vllm.engines import (
    REPO,
    find_vllm_python,
    make_model_dir,
    spawn_engines,
    vllm_importable,
    where_vllm_python,
)
from scripts.vllm.harness import (
    AGENT_LOOP,
    ROUTE,
    Arm,
    admission_round,
    agent_swarm,
    format_table,
    of,
    policy_for,
    pooled_goodput,
    pooled_line,
    run_arm,
)


def _binds(n_engines: int) -> list[str | None]:
    """Split the cores: engine i gets its own k cores (vLLM pins its worker threads)."""
    cores = os.cpu_count() or 1
    if cores < n_engines:
        return [None] * n_engines
    k = max(1, min(4, (cores - 2) // n_engines))
    return [f"{i * k}" if k == 1 else f"{i * k}-{i * k + k - 1}" for i in range(n_engines)]


async def _admission(url: str, agents: int) -> list[Arm]:
    return await admission_round(url, {**AGENT_LOOP, "agents": agents})


async def _routing(urls: list[str]) -> list[Arm]:
    arms = []
    for name in ("round-robin", "prefix-affinity"):
        policy = policy_for(urls, admission={"controller": "none"}, routing={"policy": name})
        async with running_proxy(policy) as proxy:
            arms.append(await run_arm(name, agent_swarm(**ROUTE), proxy, urls))
    return arms


def _save(arms: list[Arm], out: Path, stem: str, title: str) -> None:
    for a in arms:
        a.results.save(out / f"{stem}-{a.name}.results.json")
    write_report([a.results for a in arms], out / f"{stem}.html", out / f"{stem}.png")
    summary = {a.name: {"counters": _counters(a), "tasks": a.summary["tasks"]} for a in arms}
    doc: dict[str, Any] = {"title": title, "arms": summary}
    if any(a.controller for a in arms):
        doc["pooled_goodput_per_min"] = {c: pooled_goodput(of(arms, c)) for c in ("none", "aimd")}
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")


def _counters(a: Arm) -> dict[str, float]:
    d = a.delta
    return {"preemptions": d.preemptions, "prefix_queries": d.prefix_queries, "prefix_hits": d.prefix_hits,
            "prompt_tokens": d.prompt_tokens, "generation_tokens": d.generation_tokens,
            "computed_tokens": d.computed_tokens}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.vllm.demo", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--size", choices=("tiny", "small", "medium", "large"), default="large",
        help="locally made model (default large; the test tier's is medium)",
    )  # fmt: skip
    p.add_argument("--blocks", type=int, default=12, help="KV blocks of 128 tokens per engine (default 12)")
    p.add_argument("--agents", type=int, default=24, help="agents in the admission workload (default 24)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "vllm-demo")
    p.add_argument("--no-routing", action="store_true", help="one engine, admission comparison only")
    a = p.parse_args(argv)

    py = find_vllm_python()
    why = "no interpreter at " + where_vllm_python() if py is None else vllm_importable(py)
    if py is None or why:
        print(f"vLLM is not usable ({why}); run: bash scripts/vllm/install.sh", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    model = make_model_dir(py, a.out, a.size)
    n = 1 if a.no_routing else 2
    print(f"starting {n} vLLM engine(s): model {model.name}, {a.blocks} blocks x 128 tokens", flush=True)
    specs = [(model, a.blocks, b) for b in _binds(n)]
    with spawn_engines(specs, log_dir=a.out, python=py, start_timeout_s=600) as engines:
        urls = [e.url for e in engines]
        print(f"engines healthy in {max(e.started_s for e in engines):.0f} s: {', '.join(urls)}", flush=True)
        adm = asyncio.run(_admission(urls[0], a.agents))
        steps, out = AGENT_LOOP["steps"], AGENT_LOOP["output_tokens"]
        print(f"\nadmission — {a.agents} agents x {steps} steps ({out} tokens out) on one {a.blocks}-block engine\n")
        print(format_table(adm) + "\n" + pooled_line(adm))
        _save(adm, a.out, "admission", "admission: none vs aimd (arms none, aimd, aimd, none)")
        if not a.no_routing:
            rt = asyncio.run(_routing(urls))
            print(f"\nrouting — {ROUTE['agents']} agents x {ROUTE['steps']} steps over two engines\n")
            print(format_table(rt))
            _save(rt, a.out, "routing", "routing: round-robin vs prefix-affinity")
    print(f"\nreports: {a.out}/admission.html" + ("" if a.no_routing else f", {a.out}/routing.html"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
