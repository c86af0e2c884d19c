"""``concurproxy simulate`` (one run) and ``concurproxy simulate sweep`` (what-if grid)."""

from __future__ import annotations

import argparse
from typing import Any


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a fleet behind the proxy's decision core (virtual time)",
        description="Discrete-event simulation: the proxy's budgets, routing and admission "
        "against simulated engines. No sockets, no sleeps.",
    )
    p.add_argument("--fleet", help="fleet YAML (replicas by worker profile and count)")
    p.add_argument("--policy", help="policy YAML (policies/*.yaml)")
    p.add_argument("--scenario", help="loadgen scenario YAML or bundled name")
    p.add_argument("--duration", type=float, default=None, help="stop starting tasks after S virtual seconds")
    p.add_argument("--drain", type=float, default=None, help="then let tasks finish this long")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--engine",
        choices=("fast", "exact"),
        default="fast",
        help="fast: exact fast-forward of decode runs (default); exact: one call per iteration",
    )
    p.add_argument("--out", default=None, help="write results JSON (loadgen format + 'fleet')")
    p.add_argument("--label", default="")
    p.set_defaults(run=_run_one)
    ssub = p.add_subparsers(dest="simulate_command", metavar="{sweep}")
    s = ssub.add_parser("sweep", help="replicas × policies × load: table + plot")
    s.add_argument("--fleet", required=True, dest="sweep_fleet")
    s.add_argument("--policy", required=True, dest="sweep_policy", help="comma-separated policy files")
    s.add_argument("--scenario", required=True, dest="sweep_scenario")
    s.add_argument("--replicas", required=True, help="comma-separated replica counts, e.g. 4,8,16")
    s.add_argument(
        "--rate", default=None, help="comma-separated loads: task arrivals/s (open loop) or concurrency (closed loop)"
    )
    s.add_argument(
        "--controller",
        default=None,
        help="comma-separated admission controllers to try with each policy (overrides the file's)",
    )
    s.add_argument("--duration", type=float, default=None, dest="sweep_duration")
    s.add_argument("--drain", type=float, default=None, dest="sweep_drain")
    s.add_argument("--seed", type=int, default=None, dest="sweep_seed")
    s.add_argument("--target-p99", type=float, default=None, help="p99 step latency target (s)")
    s.add_argument("--plot", default="simulate-sweep.png", help="PNG path")
    s.set_defaults(run=_run_sweep)


def _run_one(args: argparse.Namespace) -> int:
    import json

    from concurproxy.config import load_policy
    from concurproxy.simulate.fleet import load_fleet
    from concurproxy.simulate.sim import SimOptions, simulate
    from loadgen.scenario import load_scenario

    missing = [f"--{n}" for n in ("fleet", "policy", "scenario") if not getattr(args, n)]
    if missing:
        raise SystemExit(f"concurproxy simulate: missing {', '.join(missing)}")
    sc = load_scenario(args.scenario)
    fleet = load_fleet(args.fleet, seed=args.seed if args.seed is not None else sc.seed)
    opt = SimOptions(duration_s=args.duration, drain_s=args.drain, seed=args.seed, engine=args.engine, label=args.label)
    rep = simulate(fleet, load_policy(args.policy), sc, opt)
    f = rep.fleet
    print(
        f"fleet {fleet.name}: {f.replicas} replicas {f.profiles}; {f.sim_seconds:.0f} s simulated in "
        f"{f.wall_seconds:.1f} s ({f.sim_speed:.0f}x), {f.engine_steps} engine iterations"
    )
    print(f"tasks {f.tasks}  goodput {f.goodput_per_min:.1f}/min")
    print(
        f"output {f.output_tok_s:.0f} tok/s (per replica mean {f.output_tok_s_per_replica['mean']:.0f}, "
        f"min {f.output_tok_s_per_replica['min']:.0f}, max {f.output_tok_s_per_replica['max']:.0f})"
    )
    print(
        f"preemptions {f.preemptions}  recomputed tokens {f.recomputed_tokens}  "
        f"prefix hit {f.prefix_hit_rate:.1%}  KV {json.dumps({k: round(v, 3) for k, v in f.kv_usage.items()})}"
    )
    for role, pc in f.step_latency_s_by_role.items():
        w = f.queue_wait_s_by_role.get(role, {})
        print(
            f"  {role:>10}: step p50 {_s(pc.get('p50'))} p99 {_s(pc.get('p99'))}   "
            f"admission wait p50 {_s(w.get('p50'))} p99 {_s(w.get('p99'))}  (n={int(pc.get('n') or 0)})"
        )
    print(f"admission {f.admission}")
    if args.out:
        rep.save(args.out)
        print(f"wrote {args.out} (render with: concur-loadgen report {args.out})")
    return 0


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def _run_sweep(args: argparse.Namespace) -> int:
    from concurproxy.simulate.fleet import load_fleet
    from concurproxy.simulate.sim import SimOptions
    from concurproxy.simulate.sweep import format_table, plot, run_sweep
    from loadgen.scenario import load_scenario

    sc = load_scenario(args.sweep_scenario)
    fleet = load_fleet(args.sweep_fleet, seed=args.sweep_seed if args.sweep_seed is not None else sc.seed)
    loads: list[float | None] = list(_floats(args.rate)) if args.rate else [None]
    replicas = [int(x) for x in args.replicas.split(",") if x.strip()]
    policies = [x.strip() for x in args.sweep_policy.split(",") if x.strip()]
    opt = SimOptions(duration_s=args.sweep_duration, drain_s=args.sweep_drain, seed=args.sweep_seed)
    ctls: list[str | None] = [c.strip() for c in args.controller.split(",")] if args.controller else [None]
    cells = run_sweep(fleet, policies, sc, replicas, loads, opt, ctls)
    print(format_table(cells, args.target_p99))
    plot(cells, args.plot, args.target_p99)
    print(f"plot: {args.plot}")
    return 0
