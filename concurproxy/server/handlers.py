"""The proxy's own small routes on the API listener: the model list (the union of the replicas'), health, readiness.

Admitted API steps are `pipeline.StepPipeline`'s; every other route is passed through
(`passthrough.PassThrough`); the admin routes are in `admin.py`.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from concurproxy.server.components import COMPONENTS


async def models(request: web.Request) -> web.Response:
    c = request.app[COMPONENTS]
    now = int(time.time())
    data = [{"id": m, "object": "model", "created": now, "owned_by": "concurproxy"} for m in c.pool.models()]
    return web.json_response({"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode())


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    c = request.app[COMPONENTS]
    replicas = [{"id": r.id, "healthy": r.healthy, "draining": r.draining, "error": r.last_error} for r in c.pool]
    if c.pool.any_available() and not c.shutting_down:
        return web.json_response({"status": "ready", "replicas": replicas})
    return web.json_response({"status": "not ready", "replicas": replicas}, status=503, headers={"Retry-After": "2"})


__all__ = ["health", "models", "ready"]
