"""Assemble the aiohttp application from a policy, and run it.

`build_components` turns the validated policy into the proxy's parts;
`build_app` mounts the routes, the error middleware and the startup/shutdown
context (client session, health checks); `running_proxy` starts a whole proxy
on a port for tests, demos and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from concurproxy.config.models import Policy
from concurproxy.errors import ProxyError
from concurproxy.server import admin, handlers
from concurproxy.server.assembly import background_loops, build_components
from concurproxy.server.components import COMPONENTS, Components
from concurproxy.server.forward import Forwarder
from concurproxy.telemetry.logging import install_request_id

log = logging.getLogger("concurproxy.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    404: ("not_found", "unknown route {path}"),
    405: ("method_not_allowed", "{method} is not allowed on {path}"),
    413: ("request_too_large", "the request body is larger than the configured limit"),
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as OpenAI-shaped JSON; never a traceback."""
    try:
        return await handler(request)
    except ProxyError as err:
        return err.to_response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, template = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        return ProxyError(exc.status, code, template.format(path=request.path, method=request.method)).to_response()
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return ProxyError(500, "internal_error", "the proxy failed on this request; it was logged").to_response()


def build_app(components: Components) -> web.Application:
    policy = components.policy
    app = web.Application(client_max_size=policy.listen.max_body_bytes, middlewares=[error_middleware])
    app[COMPONENTS] = components
    install_request_id(app)  # X-Request-Id in, echoed out, and in every log line of the request
    completions = handlers.CompletionHandler(components)
    app.router.add_post(handlers.CHAT, completions.chat)
    app.router.add_post(handlers.COMPLETIONS, completions.completions)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ready", handlers.ready)
    app.router.add_get("/metrics", admin.metrics)
    app.router.add_delete("/v1/agents/{agent_id}", admin.release_agent)
    app.router.add_get("/admin/state", admin.state)
    app.router.add_post("/admin/replicas/{replica_id}/drain", admin.drain)
    app.router.add_post("/admin/replicas/{replica_id}/undrain", admin.undrain)
    app.cleanup_ctx.append(_upstream_session)
    return app


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    c = app[COMPONENTS]
    limit = sum(1024 for _ in c.pool) or 1024
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=60, keepalive_timeout=60)
    # auto_decompress stays on: we never forward Content-Encoding, so bodies leave as plain bytes.
    # No auto headers: each one costs per request and the engine ignores them.
    session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
    c.session = session
    c.forwarder = Forwarder(session, c.pool, c.policy.timeouts)
    await c.pool.check_once(session)
    c.pool.start(session)
    try:
        async with background_loops(c, session):
            yield
    finally:
        c.shutting_down = True
        await c.pool.stop()
        await session.close()
        c.tracing.shutdown()


@asynccontextmanager
async def running_proxy(
    policy: Policy, components: Components | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Start a proxy on ``host:port`` (0 = a free port); yields its base URL."""
    comps = components or build_components(policy)
    runner = web.AppRunner(build_app(comps), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets if site._server else ()  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()
