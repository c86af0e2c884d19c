"""`concurproxy serve`: run the proxy from a policy file, flags and env overriding it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("--config", "-c", help="policy file (YAML); defaults apply without one")
    p.add_argument("--host", help="listen address (env CONCURPROXY_HOST)")
    p.add_argument("--port", type=int, help="listen port (env CONCURPROXY_PORT)")
    p.add_argument(
        "--upstream",
        action="append",
        metavar="URL",
        help="replica base URL; repeat once per replica (env CONCURPROXY_UPSTREAMS, comma-separated)",
    )
    p.add_argument("--admission", metavar="NAME", help="admission controller: aimd | static | none | a plugin")
    p.add_argument("--redis-url", help="share state across instances through Redis")
    p.set_defaults(run=_run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {
        "listen.host": args.host,
        "listen.port": args.port,
        "admission.controller": args.admission,
    }
    if args.upstream:
        out["upstreams"] = [{"url": u} for u in args.upstream]
    if args.redis_url:
        out["state"] = {"backend": "redis", "redis_url": args.redis_url}
    return out


def _run(args: argparse.Namespace) -> int:
    from concurproxy.config.load import ConfigError, load_policy

    try:
        policy = load_policy(args.config, overrides_from_args(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not policy.upstreams:
        print(
            "no upstreams: give --upstream URL (repeatable), CONCURPROXY_UPSTREAMS, or 'upstreams:' in the policy file",
            file=sys.stderr,
        )
        return 2
    from concurproxy.telemetry.logging import configure_logging

    configure_logging(policy.telemetry, stream=sys.stderr)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep the proxy runnable without it
        return asyncio.run(serve_forever(policy))
    return uvloop.run(serve_forever(policy))


async def serve_forever(policy) -> int:  # type: ignore[no-untyped-def]
    """Serve until SIGINT/SIGTERM, then drain: /ready turns 503, in-flight steps get the grace period."""
    from aiohttp import web

    from concurproxy.server.app import build_app, build_components

    components = build_components(policy)
    app = build_app(components)
    grace = policy.listen.shutdown_grace_s
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=grace)
    await runner.setup()
    site = web.TCPSite(runner, policy.listen.host, policy.listen.port, shutdown_timeout=grace, backlog=1024)
    await site.start()
    log = logging.getLogger("concurproxy")
    log.info(
        "concurproxy listening on http://%s:%s with %d upstream(s)",
        policy.listen.host,
        policy.listen.port,
        len(policy.upstreams),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining in-flight steps for up to %.0fs", grace)
    components.shutting_down = True
    await runner.cleanup()
    return 0
