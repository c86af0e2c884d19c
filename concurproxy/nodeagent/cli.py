"""`concurproxy node-agent --engine-url URL --port N`: serve the pressure feed beside an engine."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurproxy.nodeagent.agent import NodeAgentConfig


def add_agent_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine-url", required=True, help="engine base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 to let a remote proxy read it)")
    p.add_argument("--port", type=int, default=9400, help="listen port (0 = any free port)")
    p.add_argument("--metrics-path", default="/metrics", help="engine Prometheus path")
    p.add_argument("--scrape-interval-ms", type=int, default=100, help="engine /metrics read period")
    p.add_argument("--gpu-interval-ms", type=int, default=1000, help="NVML read period")
    p.add_argument("--stale-after-ms", type=int, default=1000, help="engine data older than this is reported not ok")
    p.add_argument("--no-nvml", action="store_true", help="do not touch NVML (report it unavailable)")


def config_from_args(args: argparse.Namespace) -> NodeAgentConfig:
    from concurproxy.nodeagent.agent import NodeAgentConfig

    return NodeAgentConfig(
        engine_url=args.engine_url,
        metrics_path=args.metrics_path,
        scrape_interval_s=args.scrape_interval_ms / 1000,
        scrape_timeout_s=max(args.scrape_interval_ms / 1000, 1.0),
        gpu_interval_s=args.gpu_interval_ms / 1000,
        stale_after_s=args.stale_after_ms / 1000,
    )


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import sys

    from concurproxy.nodeagent.agent import run_node_agent

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with run_node_agent(
            args.engine_url, args.port, args.host, nvml=not args.no_nvml, config=config_from_args(args)
        ) as url:
            print(f"node agent: {url}/pressure (engine {args.engine_url})", file=sys.stderr, flush=True)
            await stop.wait()

    asyncio.run(main())
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("node-agent", help="serve a GPU node's pressure feed (engine metrics + NVML)")
    add_agent_arguments(p)
    p.set_defaults(run=_run)
