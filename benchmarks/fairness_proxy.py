"""Fairness through the real proxy: a heavy and a light tenant on one bundled worker, per policy.

    python -m benchmarks.fairness_proxy [--duration 60] [--policies fifo,vtc,vtc+reserve+lptt+long@1024]
        [--time-scale 5]

Real processes on loopback ports: a fresh `concurproxy worker` (``--profile``, ``--time-scale``)
for every run, and `concurproxy serve` in front of it with a generated policy: two tenants of
equal weight (keys ``sk-heavy`` / ``sk-light``, stored hashed), AIMD admission, the fairness
policy under test and, for a variant ``NAME:SHARE``, ``window_share: SHARE`` for the light
tenant's role. Every run also sets ``admission.aimd.small_agent_tokens`` / ``small_agent_share``
(``--small-agent-tokens 0`` turns the small-agent lane off) and cost-aware dispatch with
``long_prefill_tokens: 2048``, ``max_prefill_hold_s: 1``. A variant ending in ``+prio`` (``vtc+prio``)
starts the worker with ``--scheduling-policy priority`` and opts the upstream in with
``priority_scheduling: true``: the engine queues each step by its priority class; ``+prio-preempt``
also passes ``--preempt-for-waiting`` (not a vLLM behaviour, see docs/worker.md). ``+reserve`` (or
``+reserve@R``) sets ``fairness.kv_reserve`` (``--kv-reserve``, default 0.25): the proxy keeps that share of
the engine's KV free for the light tenant's steps; ``+lptt`` (or ``+lptt@N``) starts the worker with vLLM's
``--long-prefill-token-threshold`` (``--lptt``, default 128). ``+long@N`` sets
``fairness.long_prefill_tokens`` (default 2048) of cost-aware dispatch. Modifiers combine; the default's
``vtc+reserve+lptt+long@1024`` is the measured setting to deploy in front of vLLM (README). ``default`` is the
shipped default policy with only the two tenants declared; ``default+lptt`` the same in front of a worker started
with the engine flag.
Each finished run also prints its rows to stderr. The load is two loadgen scenarios run at once, each
its own tenant:

* **heavy**: ``--heavy-agents`` closed-loop tasks, each one executor agent whose context grows
  from ~4k to ~12k tokens over 8 steps (1000-token tool results, 128-token replies, 0.3 s tool
  pauses) — more agents than the engine's KV cache holds, so admission has a queue;
* **light**: ``--light-agents`` long-lived control agents (role ``planner``, priority high)
  sending short steps (~30 new prompt tokens, 16-token replies) every 0.5 s.

Runs: the light tenant alone (its *unloaded* latency, through the same proxy), then heavy +
light under each variant. For each tenant: its share of weighted tokens (prompt×1 +
completion×2, steps that ended between ``--warmup`` and ``--duration``), weighted tokens/s,
steps, p50/p99 step latency (client-side, queue wait included), the p99 of the proxy's
admission wait (``x-concurproxy-queue-wait-ms``) and of the rest (*served*: routing, engine,
relay), the p99 time to first token minus that wait, and for the light tenant p99 / unloaded
p99; per run, the engine's own preemptions and mean queue time (its ``/metrics``, both tenants).
``--heavy-alone`` adds the heavy tenant's rate when it runs alone.

Bounded: each run lasts ``--duration`` seconds of new tasks plus at most ``--drain`` seconds.
Traffic goes only to 127.0.0.1. Timings are wall-clock on a shared machine: compare the rows
of one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.overhead import free_port, process
from concurproxy.worker.profile import load_profile
from loadgen.results import Results
from loadgen.runner import run_scenario
from loadgen.scenario import Scenario, parse_scenario
from loadgen.stats import percentile

KEYS = {"heavy": "sk-heavy", "light": "sk-light"}


def _closed(tenant: str, agents: int, seed: int, task: dict[str, Any], done_signal: bool = False) -> Scenario:
    return parse_scenario(
        {
            "name": tenant,
            "seed": seed,
            # realistic clients by default: identity headers, never X-Agent-Done (--done-signal sends it)
            "client": {"identity": "headers", "done_signal": done_signal},
            "arrivals": {"mode": "closed", "concurrency": agents},
            "duration_s": 3600,  # the bench bounds each run with its own duration
            "tenants": [{"name": tenant, "api_key": KEYS[tenant]}],
            "task": {"planner_steps": 0, "critic": False, "summary": False, **task},
        }
    )


def heavy_scenario(agents: int, seed: int, done_signal: bool = False) -> Scenario:
    executor = {"growth_tokens": 1000, "output_tokens": 128, "tool_pause_s": 0.3}
    task = {"system_prompt_tokens": 1000, "task_prompt_tokens": 3000, "branches": 1, "branch_steps": 8}
    return _closed("heavy", agents, seed, {**task, "roles": {"executor": executor}}, done_signal)


def light_scenario(agents: int, seed: int, done_signal: bool = False) -> Scenario:
    planner = {"growth_tokens": 30, "output_tokens": 16, "tool_pause_s": 0.5, "priority": "high"}
    task = {"system_prompt_tokens": 200, "task_prompt_tokens": 100, "planner_steps": 20, "branches": 0}
    return _closed("light", agents, seed, {**task, "roles": {"planner": planner}}, done_signal)


def default_policy_doc(upstream: str) -> dict[str, Any]:
    """The ``default`` variant: the shipped defaults, with only the two tenants (equal weight) declared."""
    return {
        "upstreams": [{"url": upstream, "name": "w0"}],
        "auth": {"allow_anonymous": False},
        "tenants": [
            {"name": name, "weight": 1, "key_sha256": [hashlib.sha256(key.encode()).hexdigest()]}
            for name, key in KEYS.items()
        ],
        "telemetry": {"log_level": "WARNING"},
    }


def policy_doc(
    upstream: str,
    fairness: str,
    light_share: float | None,
    small_agent_tokens: int = 0,
    small_agent_share: float = 0.1,
    priority_scheduling: bool = False,
    kv_reserve: float = 0.0,
    long_prefill_tokens: int = 2048,
) -> dict[str, Any]:
    planner: dict[str, Any] = {"priority": "high"}
    if light_share is not None:
        planner["window_share"] = light_share
    return {
        "upstreams": [{"url": upstream, "name": "w0", "priority_scheduling": priority_scheduling}],
        "auth": {"allow_anonymous": False},
        "tenants": [
            {"name": name, "weight": 1, "key_sha256": [hashlib.sha256(key.encode()).hexdigest()]}
            for name, key in KEYS.items()
        ],
        "roles": {"planner": planner},
        "admission": {"aimd": {"small_agent_tokens": small_agent_tokens, "small_agent_share": small_agent_share}},
        # long = uncached prompt above 2048 tokens (a heavy agent's first step, an evicted context); held at
        # dispatch while a light step runs, at most 1 s (5 s of the simulated engine at --time-scale 5)
        "fairness": {
            "policy": fairness,
            "long_prefill_tokens": long_prefill_tokens,
            "max_prefill_hold_s": 1.0,
            "kv_reserve": kv_reserve,  # room kept in the engine's KV for the light tenant's (priority high) steps
        },
        "telemetry": {"log_level": "WARNING"},
    }


@dataclass(frozen=True, slots=True)
class Variant:
    """One row of the comparison: ``POLICY[:SHARE][+MOD...]`` with MOD one of ``prio`` (engine-side priority
    scheduling), ``prio-preempt`` (and --preempt-for-waiting), ``reserve[@R]`` (fairness.kv_reserve = R, default
    --kv-reserve), ``lptt[@N]`` (worker --long-prefill-token-threshold = N, default --lptt)."""

    fairness: str
    light_share: float | None = None
    prio: bool = False
    preempt: bool = False
    kv_reserve: float = 0.0
    long_prefill_token_threshold: int = 0
    long_prefill_tokens: int = 2048  # the proxy's cost-aware dispatch threshold (fairness.long_prefill_tokens)


def parse_variant(variant: str, args: argparse.Namespace) -> Variant:
    base, *mods = variant.split("+")
    fairness, _, share = base.partition(":")
    named = dict(m.partition("@")[::2] for m in mods)  # "reserve@0.25" -> {"reserve": "0.25"}
    if set(named) - {"prio", "prio-preempt", "reserve", "lptt", "long"} or not fairness or named.get("long") == "":
        raise ValueError(
            f"bad variant {variant!r}: POLICY[:SHARE][+prio|+prio-preempt][+reserve[@SHARE]][+lptt[@TOKENS]]"
            "[+long@TOKENS]"
        )
    reserve, lptt = named.get("reserve"), named.get("lptt")
    if fairness == "default" and (share or set(named) - {"lptt"}):
        raise ValueError(f"bad variant {variant!r}: the default policy takes only +lptt[@TOKENS] (an engine flag)")
    return Variant(
        fairness=fairness,
        light_share=float(share) if share else None,
        prio="prio" in named or "prio-preempt" in named,
        preempt="prio-preempt" in named,
        kv_reserve=(float(reserve) if reserve else args.kv_reserve) if reserve is not None else 0.0,
        long_prefill_token_threshold=(int(lptt) if lptt else args.lptt) if lptt is not None else 0,
        long_prefill_tokens=int(named.get("long") or 2048),
    )


@dataclass(frozen=True, slots=True)
class TenantRow:
    tokens: float
    steps: int
    errors: int
    p50_s: float
    p99_s: float
    wait_p99_s: float  # the proxy's admission queue wait (x-concurproxy-queue-wait-ms), p99
    served_p99_s: float  # latency minus that wait (routing + engine + relay), p99
    ttft_p99_s: float  # time to the first streamed token minus that wait, p99 (engine queue + prefill)


@dataclass(frozen=True, slots=True)
class EngineRow:
    preemptions: float  # vllm:num_preemptions_total at the end of the run
    queue_mean_s: float  # vllm:request_queue_time_seconds sum / count (engine clock, both tenants)


def admission_line(metrics_text: str) -> str:
    """The proxy's admission decisions of a run, but the plain ones (admitted in-window / new): why steps
    waited and who lost a slot, e.g. ``paused/over-budget 12, queued/footprint 40``."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for smp in fam.samples:
            if smp.name == "concurproxy_admission_decisions_total" and smp.value:
                key = f"{smp.labels.get('decision')}/{smp.labels.get('reason')}"
                counts[key] = counts.get(key, 0.0) + smp.value
    plain = {"admitted/in-window", "admitted/new", "ended/success"}
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if k not in plain)


def engine_row(metrics_text: str) -> EngineRow:
    from prometheus_client.parser import text_string_to_metric_families

    values = {s.name: s.value for f in text_string_to_metric_families(metrics_text) for s in f.samples}
    count = values.get("vllm:request_queue_time_seconds_count", 0.0)
    queue_mean = values.get("vllm:request_queue_time_seconds_sum", 0.0) / count if count else float("nan")
    return EngineRow(values.get("vllm:num_preemptions_total", float("nan")), queue_mean)


def tenant_row(res: Results, warmup_s: float, until_s: float) -> TenantRow:
    window = [s for s in res.steps if warmup_s <= s.end_s <= until_s]
    ok = [s for s in window if s.ok]
    lat = [s.total_s for s in ok]
    return TenantRow(
        tokens=sum(s.prompt_tokens + 2 * s.completion_tokens for s in ok),
        steps=len(ok),
        errors=len(window) - len(ok),
        p50_s=percentile(lat, 50) or float("nan"),
        p99_s=percentile(lat, 99) or float("nan"),
        wait_p99_s=(percentile([s.queue_wait_ms or 0.0 for s in ok], 99) or 0.0) / 1e3,
        served_p99_s=percentile([s.total_s - (s.queue_wait_ms or 0.0) / 1e3 for s in ok], 99) or float("nan"),
        ttft_p99_s=percentile([s.ttft_s - (s.queue_wait_ms or 0.0) / 1e3 for s in ok if s.ttft_s is not None], 99)
        or float("nan"),
    )


async def _load(
    url: str, model: str, tenants: dict[str, Scenario], duration_s: float, drain_s: float
) -> dict[str, Results]:
    runs = [
        run_scenario(sc.model_copy(update={"drain_s": drain_s}), url, duration_s=duration_s, label=name, model=model)
        for name, sc in tenants.items()
    ]
    return dict(zip(tenants, await asyncio.gather(*runs), strict=True))


def run_once(
    args: argparse.Namespace, variant: str, tenants: dict[str, Scenario], workdir: Path
) -> tuple[dict[str, TenantRow], EngineRow]:
    """One run; ``variant`` is a fairness policy name, optionally ``:SHARE`` (the light role's window_share),
    optionally ``+prio`` (engine-side priority scheduling)."""
    v = parse_variant(variant, args)
    fairness, share, prio = v.fairness, v.light_share, v.prio
    wport, pport = free_port(), free_port()
    cfg = workdir / "policy.yaml"
    doc = (
        default_policy_doc(f"http://127.0.0.1:{wport}")
        if fairness == "default"
        else policy_doc(
            f"http://127.0.0.1:{wport}",
            fairness,
            share,
            args.small_agent_tokens,
            args.small_agent_share,
            prio,
            v.kv_reserve,
            v.long_prefill_tokens,
        )
    )
    cfg.write_text(yaml.safe_dump(doc))
    py = sys.executable
    worker = [py, "-m", "concurproxy", "worker", "--profile", args.profile, "--port", str(wport),
              "--time-scale", str(args.time_scale), "--seed", str(args.seed),
              "--scheduling-policy", "priority" if prio else "fcfs"]  # fmt: skip
    if v.preempt:
        worker.append("--preempt-for-waiting")
    if v.long_prefill_token_threshold:
        worker += ["--long-prefill-token-threshold", str(v.long_prefill_token_threshold)]
    proxy = [py, "-m", "concurproxy", "serve", "--config", str(cfg), "--port", str(pport)]
    with ExitStack() as stack:
        # up to 90 s each: a loaded shared box can take 20 s and more to start the proxy
        stack.enter_context(process(worker, f"http://127.0.0.1:{wport}/health", start_timeout_s=90))
        stack.enter_context(process(proxy, f"http://127.0.0.1:{pport}/ready", start_timeout_s=90))
        model = load_profile(args.profile).model.name
        results = asyncio.run(_load(f"http://127.0.0.1:{pport}", model, tenants, args.duration, args.drain))
        with urllib.request.urlopen(f"http://127.0.0.1:{wport}/metrics", timeout=10) as resp:  # loopback only
            engine = engine_row(resp.read().decode())
        with urllib.request.urlopen(f"http://127.0.0.1:{pport}/metrics", timeout=10) as resp:  # loopback only
            print(f"proxy admission under {variant}: {admission_line(resp.read().decode())}", flush=True)
    return {name: tenant_row(res, args.warmup, args.duration) for name, res in results.items()}, engine


def _unloaded_line(unloaded: TenantRow) -> str:
    return (
        f"light tenant unloaded: p50 {unloaded.p50_s * 1e3:.0f} ms  p99 {unloaded.p99_s * 1e3:.0f} ms"
        f"  ({unloaded.steps} steps)"
    )


def format_rows(
    unloaded: TenantRow,
    alone: TenantRow | None,
    runs: dict[str, dict[str, TenantRow]],
    span: float,
    engines: dict[str, EngineRow] | None = None,
) -> str:
    lines = [_unloaded_line(unloaded)]
    if alone is not None:
        lines.append(f"heavy tenant alone: {alone.tokens / span:,.0f} weighted tok/s ({alone.steps} steps)")
    w = max([8, *(len(p) + 2 for p in runs)])
    head = f"{'policy':<{w}}{'tenant':<8}{'token share':>12}{'tok/s':>10}{'steps':>7}{'errors':>7}"
    lines.append(
        head + f"{'p50 ms':>9}{'p99 ms':>9}{'p99 queue':>11}{'p99 served':>12}{'p99 ttft':>10}{'p99/unloaded':>14}"
    )
    for policy, rows in runs.items():
        total = sum(r.tokens for r in rows.values()) or 1.0
        for tenant, r in rows.items():
            ratio = f"{r.p99_s / unloaded.p99_s:>14.2f}" if tenant == "light" else f"{'':>14}"
            lines.append(
                f"{policy:<{w}}{tenant:<8}{r.tokens / total:>12.3f}{r.tokens / span:>10,.0f}{r.steps:>7}{r.errors:>7}"
                f"{r.p50_s * 1e3:>9.0f}{r.p99_s * 1e3:>9.0f}{r.wait_p99_s * 1e3:>11.0f}"
                f"{r.served_p99_s * 1e3:>12.0f}{r.ttft_p99_s * 1e3:>10.0f}{ratio}"
            )
    for policy, eng in (engines or {}).items():
        lines.append(
            f"engine under {policy}: {eng.preemptions:.0f} preemptions, mean queue time {eng.queue_mean_s * 1e3:.0f} ms"
            " (engine clock)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fairness_proxy", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--policies",
        default="fifo,vtc,vtc+reserve+lptt+long@1024",
        help="fairness policies to compare (``default``: the shipped default policy, only the tenants declared); "
        "NAME:SHARE also gives the light role that window_share; modifiers "
        "+prio, +prio-preempt, +reserve[@R], +lptt[@N], +long@N (see the module doc). Default "
        "fifo,vtc,vtc+reserve+lptt+long@1024: the last is the setting to deploy (kv_reserve 0.25, the engine's "
        "--long-prefill-token-threshold 128, long_prefill_tokens 1024), which meets the 2x target",
    )
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load per run (default 60)")
    ap.add_argument("--warmup", type=float, default=8.0, help="steps ending before this are not counted")
    ap.add_argument("--drain", type=float, default=5.0, help="seconds for running tasks after the end")
    ap.add_argument("--profile", default="qwen3-32b-h100", help="bundled worker profile")
    ap.add_argument("--time-scale", type=float, default=5.0, help="worker clock speed-up (default 5)")
    ap.add_argument("--heavy-agents", type=int, default=12)
    ap.add_argument("--light-agents", type=int, default=4)
    ap.add_argument("--heavy-alone", action="store_true", help="also run the heavy tenant alone (its capacity)")
    ap.add_argument(
        "--small-agent-tokens",
        type=int,
        default=2048,
        help="admission.aimd.small_agent_tokens of every run (0: off; default 2048, above a light agent's footprint)",
    )
    ap.add_argument(
        "--small-agent-share",
        type=float,
        default=0.15,
        help="admission.aimd.small_agent_share (default 0.15: the 4 light agents' ~1k-token footprints)",
    )
    ap.add_argument(
        "--kv-reserve",
        type=float,
        default=0.25,
        help="fairness.kv_reserve of a +reserve variant (default 0.25; the 4 light agents' contexts are <= 13%% of "
        "the engine's 37k KV tokens, and 0.25 measured better than 0.15)",
    )
    ap.add_argument(
        "--lptt",
        type=int,
        default=128,
        help="the worker's --long-prefill-token-threshold in a +lptt variant (default 128)",
    )
    ap.add_argument(
        "--unloaded-after",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the light tenant alone again after the variants and take the lower p99 as the unloaded "
        "baseline (a shared box's load only inflates it; default on)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--done-signal", action="store_true", help="clients send X-Agent-Done on a task's last step (most never do)"
    )
    args = ap.parse_args(argv)
    heavy = heavy_scenario(args.heavy_agents, args.seed, args.done_signal)
    light = light_scenario(args.light_agents, args.seed, args.done_signal)
    span = args.duration - args.warmup
    with tempfile.TemporaryDirectory(prefix="concurproxy-fairness-") as d:
        work = Path(d)
        base = "default" if "default" in args.policies.split(",") else "vtc"
        unloaded = run_once(args, base, {"light": light}, work)[0]["light"]
        print(_unloaded_line(unloaded), file=sys.stderr, flush=True)
        alone = run_once(args, base, {"heavy": heavy}, work)[0]["heavy"] if args.heavy_alone else None
        done = {}
        for p in args.policies.split(","):
            t0 = time.monotonic()
            done[p] = run_once(args, p, {"heavy": heavy, "light": light}, work)
            rows, eng = done[p]
            print(f"{p}: run took {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            print(format_rows(unloaded, None, {p: rows}, span, {p: eng}), file=sys.stderr, flush=True)
        if args.unloaded_after:  # a second unloaded run: the lower p99 is the baseline (noise only inflates it)
            again = run_once(args, base, {"light": light}, work)[0]["light"]
            print(_unloaded_line(again) + " (after)", file=sys.stderr, flush=True)
            unloaded = min(unloaded, again, key=lambda r: r.p99_s)
    runs = {p: rows for p, (rows, _) in done.items()}
    print(format_rows(unloaded, alone, runs, span, {p: eng for p, (_, eng) in done.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
