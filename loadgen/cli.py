"""``concur-loadgen``: run / report / ab / validate / list.

Exit codes: 0 ok, 2 bad scenario or trace file, 3 unreachable target, 4 bad results file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadgen.ab import ab_table, run_ab
from loadgen.client import TargetUnreachable
from loadgen.generator import iter_tasks
from loadgen.report import write_report
from loadgen.results import Results, load_results
from loadgen.runner import run_scenario
from loadgen.scenario import Scenario, ScenarioError, bundled_scenarios, load_scenario, with_overrides
from loadgen.scrape import DEFAULT_SERIES
from loadgen.trace import TraceError


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="scenario YAML file, or a bundled name (see `concur-loadgen list`)")
    p.add_argument("--duration", type=float, help="seconds during which tasks start (overrides the scenario)")
    p.add_argument("--max-tasks", type=int, help="stop after this many tasks (overrides the scenario)")
    p.add_argument("--seed", type=int, help="workload seed (overrides the scenario)")
    p.add_argument("--scrape", action="append", default=[], metavar="URL", help="Prometheus URL to sample each second")
    p.add_argument("--series", action="append", metavar="GLOB", help="metric names to keep (default: a built-in set)")
    p.add_argument("--model", help="`model` field to send (overrides the scenario)")
    p.add_argument("--max-inflight", type=int, help="hard cap on concurrent requests (overrides the scenario)")
    p.add_argument("--run-tag", help="task id prefix (default: random per run)")
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress")
    c = p.add_argument_group("client mode (overrides the scenario's `client`)")
    c.add_argument("--api", choices=["chat", "responses", "messages"], help="wire API of every step")
    c.add_argument("--identity", choices=["headers", "none"], help="send X-Agent-Id/X-Task-Id/… or only the key")
    c.add_argument(
        "--done-signal", action=argparse.BooleanOptionalAction, help="send X-Agent-Done on each agent's last step"
    )
    c.add_argument(
        "--responses-chain",
        action=argparse.BooleanOptionalAction,
        help="(--api responses) send later steps as previous_response_id + new input",
    )
    c.add_argument("--agents", type=int, help="closed loop of N concurrent tasks, N in all (plain-loop: N agents)")
    c.add_argument("--steps", type=int, help="steps per agent branch (task.branch_steps)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="concur-loadgen", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a scenario against one target")
    _run_args(run)
    run.add_argument("--target", required=True, help="base URL of the proxy or an OpenAI-compatible server")
    run.add_argument("--out", default="results.json", help="results JSON (default: results.json)")
    run.add_argument("--label", default="", help="name of this run in reports")
    run.add_argument("--html", help="also write an HTML report")
    ab = sub.add_parser("ab", help="the same seeded workload against two targets")
    _run_args(ab)
    ab.add_argument("--target-a", required=True)
    ab.add_argument("--target-b", required=True)
    ab.add_argument("--out-a", default="results-a.json")
    ab.add_argument("--out-b", default="results-b.json")
    ab.add_argument("--html", help="also write an HTML report of both runs")
    rep = sub.add_parser("report", help="turn result files into HTML / PNG")
    rep.add_argument("results", nargs="+")
    rep.add_argument("--html", help="self-contained HTML page")
    rep.add_argument("--png", help="all plots in one PNG")
    val = sub.add_parser("validate", help="check a scenario file and show what it generates")
    val.add_argument("scenario")
    val.add_argument("--tasks", type=int, default=3, help="how many tasks to preview")
    sub.add_parser("list", help="list the bundled scenarios")
    return ap


def _summary_table(r: Results, out: Console) -> None:
    s = r.summary()
    t, st = s["tasks"], s["steps"]
    tab = Table(title=f"{r.label} — {r.meta.scenario} ({s['elapsed_s']:.0f} s)")
    tab.add_column("metric")
    tab.add_column("value", justify="right")
    rows = [
        ("tasks ok / failed / cancelled", f"{t['completed']} / {t['failed']} / {t['cancelled']}"),
        ("goodput (tasks in deadline / min)", t["goodput_per_min"]),
        ("task latency p50 / p99 (s)", f"{t['latency_s']['p50']} / {t['latency_s']['p99']}"),
        ("steps ok / s", st["steps_per_s"]),
        ("step latency p50 / p99 (ms)", f"{st['latency_ms']['p50']} / {st['latency_ms']['p99']}"),
        ("TTFT p50 / p99 (ms)", f"{st['ttft_ms']['p50']} / {st['ttft_ms']['p99']}"),
        ("queue wait p50 / p99 (ms)", f"{st['queue_wait_ms']['p50']} / {st['queue_wait_ms']['p99']}"),
        ("prompt / completion tokens", f"{st['prompt_tokens']} / {st['completion_tokens']}"),
        ("errors (429s)", f"{st['errors']} ({st['http_429']})"),
    ]
    for k, v in rows:
        tab.add_row(k, str(v))
    out.print(tab)


def _cell(v: object) -> str:
    return "–" if v is None else str(v)


def _ab_print(a: Results, b: Results, out: Console) -> None:
    tab = Table(title="A/B (ratio = B / A)")
    for c in ("metric", "A", "B", "B/A"):
        tab.add_column(c, justify="right")
    for name, va, vb, ratio in ab_table(a, b):
        tab.add_row(name, _cell(va), _cell(vb), "–" if ratio is None else f"{ratio:.2f}x")
    out.print(f"A = {a.meta.target}\nB = {b.meta.target}")
    out.print(tab)


def _kw(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "duration_s": args.duration,
        "max_tasks": args.max_tasks,
        "seed": args.seed,
        "scrape": args.scrape,
        "series": args.series or DEFAULT_SERIES,
        "progress": not args.quiet,
        "model": args.model,
        "max_inflight": args.max_inflight,
        "run_tag": args.run_tag,
    }


def _overridden(sc: Scenario, args: argparse.Namespace) -> Scenario:
    client = {
        "api": args.api,
        "identity": args.identity,
        "done_signal": args.done_signal,
        "responses_chain": args.responses_chain,
    }
    return with_overrides(sc, client=client, agents=args.agents, steps=args.steps)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, err = Console(), Console(stderr=True)
    try:
        if args.cmd == "list":
            for name, path in bundled_scenarios().items():
                sc = load_scenario(path)
                out.print(f"[bold]{name}[/bold]: {sc.description}")
            return 0
        if args.cmd == "report":
            runs = [load_results(p) for p in args.results]
            write_report(runs, args.html, args.png)
            for r in runs:
                _summary_table(r, out)
            return 0
        sc = load_scenario(args.scenario)
        if args.cmd == "validate":
            out.print(f"{args.scenario}: valid ({sc.name})")
            for plan in iter_tasks(sc, max_tasks=args.tasks):
                sizes = [s.est_prompt_tokens for s in plan.steps()]
                out.print(
                    f"  {plan.task_id} tenant={plan.tenant} steps={plan.n_steps} "
                    f"prompt tokens {min(sizes, default=0)}..{max(sizes, default=0)}"
                )
            return 0
        sc = _overridden(sc, args)
        if args.cmd == "run":
            res = asyncio.run(run_scenario(sc, args.target, label=args.label, **_kw(args)))
            res.save(args.out)
            if args.html:
                write_report([res], args.html)
            _summary_table(res, out)
            out.print(f"results → {args.out}")
            return 0
        a, b = asyncio.run(run_ab(sc, args.target_a, args.target_b, **_kw(args)))
        a.save(args.out_a)
        b.save(args.out_b)
        if args.html:
            write_report([a, b], args.html)
        _ab_print(a, b, out)
        return 0
    except (ScenarioError, TraceError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        return 2
    except TargetUnreachable as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        return 3
    except ValueError as e:
        if args.cmd != "report":
            raise
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        return 4


if __name__ == "__main__":
    sys.exit(main())
