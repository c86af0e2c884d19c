"""`concurproxy worker …` — run simulated replicas, launch vLLM, or print a thrash curve.

concurproxy worker --profile tiny --port 8000 [--replicas 3] [--time-scale 10] [--seed 0]
concurproxy worker --engine vllm -- <vllm serve args>
concurproxy worker thrash-curve --profile tiny [--agents 1,2,4,8] [--duration 60]
concurproxy worker profiles
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurproxy.worker.agents import AgentSpec

EPILOG = """actions (after the options):
  thrash-curve [--profile P] [--agents 1,2,4] [--duration S] [--steps N] [--task-tokens N]
               [--system-tokens N] [--tool-tokens N] [--output-tokens N] [--tool-pause S] [--seed N]
               [--url URL [--metrics-url URL] [--model M]]
      closed-loop agents against the engine in virtual time (or over HTTP against a running
      worker or proxy with --url); prints a table per agent count
  profiles    list the built-in profiles with their KV capacity
  -- ARGS     with --engine vllm: arguments passed to vLLM's OpenAI server
"""


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from concurproxy.worker.engine import OutputLengths
    from concurproxy.worker.fleet import run_fleet
    from concurproxy.worker.kvpublish import KvEventsConfig
    from concurproxy.worker.profile import ProfileError, load_profile, with_scheduler_overrides

    try:
        profile = with_scheduler_overrides(
            load_profile(args.profile), args.max_num_batched_tokens, args.long_prefill_token_threshold
        )
        kv_events = KvEventsConfig.from_json(args.kv_events_config) if args.kv_events_config else None
    except (ProfileError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.preempt_for_waiting and args.scheduling_policy != "priority":
        print("--preempt-for-waiting needs --scheduling-policy priority", file=sys.stderr)
        return 2

    async def main() -> None:
        async with run_fleet(
            profile,
            args.replicas,
            host=args.host,
            port=args.port,
            time_scale=args.time_scale,
            seed=args.seed,
            model_name=args.served_model_name,
            output_lengths=OutputLengths(args.output_lengths, args.mean_output_tokens, args.seed),
            legacy_metric_names=args.legacy_metric_names,
            kv_events=kv_events,
            scheduling_policy=args.scheduling_policy,
            preempt_for_waiting=args.preempt_for_waiting,
        ) as workers:
            cfg = workers[0].engine.config
            print(
                f"concurworker {profile.name}: {cfg.num_blocks} blocks x {cfg.block_size} tokens "
                f"({cfg.capacity_tokens} KV tokens), model {workers[0].served_model}, "
                f"time scale {args.time_scale}, scheduling {args.scheduling_policy}, max_num_batched_tokens "
                f"{cfg.max_num_batched_tokens}, long_prefill_token_threshold {cfg.long_prefill_token_threshold}",
                flush=True,
            )
            for w in workers:
                print(f"  listening on {w.url}", flush=True)
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def _vllm(args: argparse.Namespace, vllm_args: list[str]) -> int:
    try:
        from concurproxy.engines.vllm_launcher import run_vllm
    except ImportError as exc:
        print(
            f"--engine vllm needs concurproxy.engines.vllm_launcher, which is not available: {exc}",
            file=sys.stderr,
        )
        return 2
    return int(run_vllm(vllm_args, args.host, args.port, args.node_agent_port))


def _profiles(rest: list[str]) -> int:
    from concurproxy.worker.profile import builtin_profiles, load_profile

    for name in builtin_profiles():
        p = load_profile(name)
        cfg = p.engine_config()
        print(
            f"{name:16} {cfg.num_blocks:>7} blocks x {cfg.block_size} = {cfg.capacity_tokens:>8} KV tokens  "
            f"max_model_len {cfg.max_model_len:>6}  {p.description}"
        )
    return 0


def _thrash(rest: list[str]) -> int:
    from concurproxy.worker.profile import ProfileError, load_profile
    from concurproxy.worker.thrash import format_table, preset_for, run_closed_loop

    p = argparse.ArgumentParser(
        prog="concurproxy worker thrash-curve",
        description="closed-loop agents vs the simulated engine, in virtual time",
    )
    p.add_argument("--profile", default="tiny")
    p.add_argument("--agents", help="comma-separated agent counts (default: the profile's preset)")
    p.add_argument("--duration", type=float, help="seconds per point (virtual; wall with --url)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", help="run the agents over HTTP against this server instead (wall-clock time)")
    p.add_argument("--metrics-url", help="with --url: where to read vLLM metrics (default URL/metrics)")
    p.add_argument("--model", default="default", help="with --url: the model name to send")
    for flag, typ in (
        ("steps", int),
        ("system-tokens", int),
        ("task-tokens", int),
        ("tool-tokens", int),
        ("output-tokens", int),
        ("tool-pause", float),
    ):
        p.add_argument(f"--{flag}", type=typ)
    a = p.parse_args(rest)
    try:
        profile = load_profile(a.profile)
    except ProfileError as exc:
        print(exc, file=sys.stderr)
        return 2
    cfg = profile.engine_config(seed=a.seed)
    spec, counts, duration = preset_for(profile.name, cfg.capacity_tokens, cfg.max_model_len)
    overrides = {
        "steps": a.steps,
        "system_tokens": a.system_tokens,
        "task_tokens": a.task_tokens,
        "tool_tokens": a.tool_tokens,
        "output_tokens": a.output_tokens,
        "tool_pause_s": a.tool_pause,
    }
    from concurproxy.worker.agents import AgentSpec

    spec = AgentSpec(
        **{
            **{f: getattr(spec, f) for f in overrides},
            **{k: v for k, v in overrides.items() if v is not None},
        }
    )
    if a.agents:
        counts = tuple(int(x) for x in a.agents.split(","))
    duration = a.duration or duration
    if a.url:
        return _thrash_live(a, spec, counts, a.duration or 20.0)
    print(
        f"profile {profile.name}: {cfg.num_blocks} blocks x {cfg.block_size} = "
        f"{cfg.capacity_tokens} KV tokens; {duration:g} virtual s per point"
    )
    print(
        f"agent task: {spec.steps} steps, context {spec.system_tokens + spec.task_tokens} -> "
        f"{spec.final_context()} tokens (+{spec.tool_tokens} tool, +{spec.output_tokens} output per step), "
        f"tool pause {spec.tool_pause_s:g}s"
    )
    points = []
    for n in counts:
        try:
            points.append(run_closed_loop(cfg, spec, n, duration, a.seed))
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
    print(format_table(points))
    best = max(points, key=lambda q: q.output_tok_s)
    last = points[-1]
    if last is not best:
        print(
            f"peak {best.output_tok_s:.0f} out tok/s at {best.agents} agents; at {last.agents} agents "
            f"{last.output_tok_s:.0f} ({last.output_tok_s / best.output_tok_s - 1:+.0%}), prefill work "
            f"x{last.prefill_tok_s / max(best.prefill_tok_s, 1e-9):.1f}, hit rate "
            f"{best.prefix_hit_rate:.0%} -> {last.prefix_hit_rate:.0%}"
        )
    return 0


def _thrash_live(a: argparse.Namespace, spec: AgentSpec, counts: tuple[int, ...], duration: float) -> int:
    import asyncio

    import aiohttp

    from concurproxy.worker.live import LivePoint, format_live_table, run_live

    print(
        f"live against {a.url}: {duration:g} s per point; agent task {spec.steps} steps, context "
        f"{spec.system_tokens + spec.task_tokens} -> {spec.final_context()} tokens"
    )

    async def main() -> list[LivePoint]:
        points: list[LivePoint] = []
        async with aiohttp.ClientSession() as session:
            for i, n in enumerate(counts):
                points.append(
                    await run_live(
                        session,
                        a.url,
                        spec,
                        n,
                        duration,
                        a.seed,
                        a.model,
                        a.metrics_url,
                        first_task=1_000_000 * i,
                    )
                )
        return points

    print(format_live_table(asyncio.run(main())))
    return 0


def _run(args: argparse.Namespace) -> int:
    rest: list[str] = list(args.rest)
    if rest and rest[0] == "--":
        if args.engine != "vllm":
            print("arguments after -- are for --engine vllm", file=sys.stderr)
            return 2
        return _vllm(args, rest[1:])
    if args.engine == "vllm":
        return _vllm(args, rest)
    if rest and rest[0] == "thrash-curve":
        return _thrash(rest[1:])
    if rest and rest[0] == "profiles":
        return _profiles(rest[1:])
    if rest:
        print(f"unknown worker action {rest[0]!r} (see --help)", file=sys.stderr)
        return 2
    return _serve(args)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "worker",
        help="simulated vLLM-like engine (or real vLLM with --engine vllm)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", default="tiny", help="built-in profile name or a YAML file (default: tiny)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="first port; replica i listens on port+i")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-scale", type=float, default=1.0, help="run the engine clock X times faster than wall")
    p.add_argument("--served-model-name", help="model name to serve (default: the profile's)")
    p.add_argument(
        "--output-lengths",
        choices=("max_tokens", "uniform", "exponential"),
        default="max_tokens",
        help="generated length: max_tokens (default) or a seeded draw up to it; ignore_eos forces max",
    )
    p.add_argument("--mean-output-tokens", type=float, default=128.0, help="mean of exponential lengths")
    p.add_argument(
        "--legacy-metric-names",
        action="store_true",
        help="also export vllm:gpu_cache_usage_perc and vllm:gpu_prefix_cache_* (vLLM before ~0.12)",
    )
    p.add_argument(
        "--kv-events-config",
        help="publish KV cache events like vLLM (same JSON), e.g. "
        '\'{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:5557"}\'; '
        "replica i binds port+i",
    )
    p.add_argument(
        "--scheduling-policy",
        choices=("fcfs", "priority"),
        default="fcfs",
        help="as vLLM: fcfs (default; a request's non-zero 'priority' is a 400) or priority (waiting queue by "
        "(priority, arrival), lower first; KV pressure preempts the lowest-priority running request)",
    )
    p.add_argument(
        "--preempt-for-waiting",
        action="store_true",
        help="with --scheduling-policy priority, NOT a vLLM behaviour (its open proposal vllm#40004): a waiting "
        "request that finds no free KV blocks preempts running requests of strictly lower priority",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        help="as vLLM: the per-step token budget (prefill chunks + decodes; default: the profile's)",
    )
    p.add_argument(
        "--long-prefill-token-threshold",
        type=int,
        help="as vLLM: no request gets more than this many new tokens in one step (default: the profile's, 0 = off)",
    )
    p.add_argument("--engine", choices=("sim", "vllm"), default="sim")
    p.add_argument("--node-agent-port", type=int, help="with --engine vllm: port of the node agent beside it")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=_run)
