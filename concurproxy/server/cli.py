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

    overrides = overrides_from_args(args)
    try:
        policy = load_policy(args.config, overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not policy.upstreams and policy.discovery is None:
        print(
            "no upstreams: give --upstream URL (repeatable), CONCURPROXY_UPSTREAMS, or 'upstreams:' / "
            "'discovery:' in the policy file",
            file=sys.stderr,
        )
        return 2
    from concurproxy.plugins import PluginError
    from concurproxy.plugins.installed import Plugins

    plugins = Plugins.load()
    try:
        plugins.check(policy)  # one line and exit 2, not a traceback from deep in the assembly
    except PluginError as exc:
        print(f"{args.config or '(defaults)'}: {exc}", file=sys.stderr)
        return 2
    from concurproxy.telemetry.logging import configure_logging

    configure_logging(policy.telemetry, stream=sys.stderr)
    from concurproxy.server.logfilter import install_parser_error_filter

    install_parser_error_filter()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep the proxy runnable without it
        return asyncio.run(serve_forever(policy, args.config, overrides, plugins))
    return uvloop.run(serve_forever(policy, args.config, overrides, plugins))


async def serve_forever(policy, path: str | None = None, overrides: dict | None = None, plugins=None) -> int:  # type: ignore[no-untyped-def,type-arg]
    """Serve until SIGINT/SIGTERM, then drain: /ready and new steps get 503, in-flight steps get the grace
    period. SIGHUP (or a change of the policy file's mtime) reloads the policy."""
    from concurproxy.server.app import running_proxy
    from concurproxy.server.assembly import build_components
    from concurproxy.server.reload import reload_from_file

    log = logging.getLogger("concurproxy")
    components = build_components(policy, plugins=plugins)
    components.policy_path = path
    components.policy_overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        if path is not None:
            reload_from_file(components, path, components.policy_overrides)

    loop.add_signal_handler(signal.SIGHUP, reload)
    host, port = policy.listen.host, policy.listen.port
    async with running_proxy(policy, components, host=host, port=port) as url:
        log.info(
            "concurproxy listening on %s (admin: %s) with %d upstream(s)",
            url,
            components.admin_url or url,
            len(components.pool),
        )
        watcher = asyncio.create_task(_watch_file(path, reload, stop)) if path else None
        await stop.wait()
        grace = policy.listen.shutdown_grace_s
        log.info("shutting down: draining %d in-flight step(s) for up to %.0fs", components.active_steps, grace)
        components.shutting_down = True  # /ready and new steps answer 503 while we still listen
        if watcher is not None:
            watcher.cancel()
        await _drain(components, grace)
    return 0


async def _drain(components, grace_s: float, poll_s: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """Keep listening while steps are in flight (up to ``grace_s``), so load balancers see /ready turn
    503 and new steps get 503 + Retry-After instead of refused connections; then the runner's cleanup
    closes the sockets."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while components.active_steps > 0 and loop.time() < deadline:  # noqa: ASYNC110 - shutdown only, 20 Hz
        await asyncio.sleep(poll_s)


async def _watch_file(path: str, reload, stop: asyncio.Event, interval_s: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    """Reload when the policy file's mtime changes (editors, ConfigMap updates)."""
    import os

    def mtime() -> float | None:
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None

    last = mtime()
    while not stop.is_set():
        await asyncio.sleep(interval_s)
        now = mtime()
        if now is not None and now != last:
            last = now
            reload()
