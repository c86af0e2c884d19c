"""Assemble the aiohttp application from a policy, and run it.

`build_components` turns the validated policy into the proxy's parts;
`build_app` mounts the routes, each behind `front` (request id, error model), and the startup/shutdown
context (client session, health checks); `running_proxy` starts a whole proxy
on a port for tests, demos and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import aiohttp
from aiohttp import web, web_urldispatcher
from yarl import URL

from concurproxy.config.models import Policy
from concurproxy.errors import ProxyError
from concurproxy.server import admin, handlers
from concurproxy.server.api import CODECS, shape_for_path
from concurproxy.server.assembly import background_loops, build_components
from concurproxy.server.components import COMPONENTS, Components
from concurproxy.server.forward import Forwarder
from concurproxy.server.parse_errors import ProxyAppRunner
from concurproxy.server.passthrough import PassThrough
from concurproxy.server.pipeline import StepPipeline
from concurproxy.telemetry.logging import REQUEST_ID_HEADER, begin_request, request_id_var
from concurproxy.upstream.http1 import UpstreamPool

log = logging.getLogger("concurproxy.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    404: ("not_found", "unknown route {path}"),
    405: ("method_not_allowed", "{method} is not allowed on {path}"),
    413: ("request_too_large", "the request body is larger than the configured limit"),
}


def front(handler: Handler) -> Handler:
    """The request id and the error model around one route's handler.

    Applied per route at build time instead of as an aiohttp middleware: an app with any
    middleware runs two extra coroutines per request (the middleware and aiohttp's own
    ``current_app`` fixer) plus a handler-chain lookup. Unknown paths and methods reach the
    catch-all route (``other_routes``): passed through, or the same JSON errors.

    The id (the client's ``X-Request-Id`` when safe) is in the log context while the request is
    handled, error logs included, and echoed on every response (streams set it themselves, from
    the step's headers). Every failure leaves as JSON in the path's API shape (Anthropic's under
    /v1/messages, else OpenAI's: ``api/shapes.py``); never a traceback."""

    async def fronted(request: web.Request) -> web.StreamResponse:
        rid, token = begin_request(request)
        try:
            resp = await handler(request)
        except ProxyError as err:
            resp = shape_for_path(request.path).response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code, template = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
            http_error = ProxyError(exc.status, code, template.format(path=request.path, method=request.method))
            resp = shape_for_path(request.path).response(http_error)
            if "Allow" in exc.headers:  # a 405 must name the methods the path takes (RFC 9110)
                resp.headers["Allow"] = exc.headers["Allow"]
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            internal = ProxyError(500, "internal_error", "the proxy failed on this request; it was logged")
            resp = shape_for_path(request.path).response(internal)
        finally:
            request_id_var.reset(token)
        if not resp.prepared and REQUEST_ID_HEADER not in resp.headers:
            resp.headers[REQUEST_ID_HEADER] = rid
        return resp

    return fronted


PROXY_PATHS = frozenset({"/health", "/ready", "/metrics", "/admin", "/v1/models"})
PROXY_PREFIXES = ("/admin/", "/v1/agents/")


ADMITTED_PATHS = frozenset(codec.route for codec in CODECS)


def proxy_owned(path: str) -> bool:
    """The proxy's own routes: never passed through, on whichever listener serves them."""
    return path in PROXY_PATHS or path.startswith(PROXY_PREFIXES)


def other_routes(passthrough: PassThrough) -> Handler:
    """The API listener's catch-all: the engine's routes pass through; the proxy's own answer 404/405, and so
    does another method on an admitted API route (405, ``Allow: POST``: those routes take nothing else, as
    vLLM answers them too)."""

    async def route(request: web.Request) -> web.StreamResponse:
        if proxy_owned(request.path) or request.path in ADMITTED_PATHS:
            return await not_routed(request)
        return await passthrough.handle(request)

    return route


async def not_routed(request: web.Request) -> web.StreamResponse:
    """405 when another route serves this path with other methods, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


class NonPathTarget(web_urldispatcher.Resource):
    """Request targets that are not a path — only ``OPTIONS *`` (RFC 9110 §9.3.7) gets here.

    No route pattern can start without "/", so without this such a request got aiohttp's own
    text/plain 404. aiohttp's router indexes resources by path prefix and this one sits under
    the key "*", so it is only ever tried for that target: other requests pay nothing for it.
    """

    def __init__(self) -> None:
        super().__init__(name=None)

    def _match(self, path: str) -> dict[str, str] | None:
        return None if path.startswith("/") else {}

    @property
    def canonical(self) -> str:
        return "*"

    def raw_match(self, path: str) -> bool:
        return path == "*"

    def get_info(self) -> dict[str, str]:  # type: ignore[override]  # aiohttp types it with a private TypedDict
        return {}

    def url_for(self, *args: str, **kwargs: str) -> URL:
        raise NotImplementedError("not a path")

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("not a path")


def build_app(components: Components, admin_routes: bool = True, api_routes: bool = True) -> web.Application:
    """The proxy's app. With ``listen.admin_port`` set, the API and the admin routes
    (/admin/*, /metrics) are two apps on two listeners sharing the same components;
    the API app owns the start-up/shutdown context. No middleware: see `front`."""
    policy = components.policy
    app = web.Application(client_max_size=policy.listen.max_body_bytes)
    app[COMPONENTS] = components
    add_get, add_post = app.router.add_get, app.router.add_post
    add_get("/health", front(handlers.health))
    catch_all: Handler = not_routed
    if api_routes:
        pipeline = StepPipeline(components)
        for codec in CODECS:  # one step pipeline, one codec per admitted API
            add_post(codec.route, front(partial(pipeline.handle, codec=codec)))
        add_get("/v1/models", front(handlers.models))
        add_get("/ready", front(handlers.ready))
        app.router.add_delete("/v1/agents/{agent_id}", front(admin.release_agent))
        app.cleanup_ctx.append(_upstream_session)
        catch_all = other_routes(PassThrough(components))
    if admin_routes:
        add_get("/metrics", front(admin.metrics))
        add_get("/admin/state", front(admin.state))
        add_post("/admin/reload", front(admin.reload))
        add_post("/admin/replicas/{replica_id}/drain", front(admin.drain))
        add_post("/admin/replicas/{replica_id}/undrain", front(admin.undrain))
    # last: every other path or method ([\s\S], not ".": a decoded path may hold a newline, "/%0A")
    app.router.add_route("*", r"/{path:[\s\S]*}", front(catch_all))
    non_path = NonPathTarget()
    app.router.register_resource(non_path)
    non_path.add_route("*", front(not_routed))
    return app


def runner_options(policy: Policy) -> dict[str, object]:
    """Server options shared by every listener: cancel handlers of clients that left, header limits."""
    return {
        "handler_cancellation": True,
        "access_log": None,
        "shutdown_timeout": policy.listen.shutdown_grace_s,
        "max_line_size": policy.limits.max_header_bytes,
        "max_field_size": policy.limits.max_header_bytes,
        # After an error answer (e.g. 408 to a slow client) do not keep reading its unread body for
        # aiohttp's default 10 s: close after 1 s at most.
        "lingering_time": 1.0,
    }


def split_apps(components: Components) -> tuple[web.Application, web.Application | None]:
    """(API app, admin app or None when admin routes share the main listener)."""
    if components.policy.listen.admin_port is None:
        return build_app(components), None
    return build_app(components, admin_routes=False), build_app(components, api_routes=False)


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    c = app[COMPONENTS]
    connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=60, keepalive_timeout=60)
    session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
    c.session = session  # health checks, pressure polling: aiohttp; the hot path: our own client
    per_host = max((u.max_connections for u in c.policy.upstreams), default=1024)
    # The client sends Accept-Encoding: identity upstream, so bodies come back (and leave) uncompressed.
    http = UpstreamPool(max_per_host=per_host, connect_timeout_s=c.policy.timeouts.connect_s)
    c.forwarder = Forwarder.from_policy(http, c.pool, c.policy)
    await c.pool.check_once(session)
    c.pool.start(session)
    try:
        async with background_loops(c, session):
            yield
    finally:
        c.shutting_down = True
        await c.pool.stop()
        await session.close()
        await http.close()
        c.tracing.shutdown()


@asynccontextmanager
async def running_proxy(
    policy: Policy, components: Components | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Start a proxy on ``host:port`` (0 = a free port); yields its base URL.

    With ``listen.admin_port`` set, the admin listener starts too; its URL is
    ``components.admin_url``."""
    comps = components or build_components(policy)
    api, admin_app = split_apps(comps)
    runners: list[web.AppRunner] = []
    try:
        url = await _start(api, policy, host, port, runners)
        if admin_app is not None:
            comps.admin_url = await _start(
                admin_app, policy, policy.listen.admin_host or host, policy.listen.admin_port or 0, runners
            )
        yield url
    finally:
        for r in reversed(runners):
            await r.cleanup()


async def _start(app: web.Application, policy: Policy, host: str, port: int, runners: list[web.AppRunner]) -> str:
    runner = ProxyAppRunner(app, **runner_options(policy))  # type: ignore[arg-type]
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return f"http://{host}:{bound}"
