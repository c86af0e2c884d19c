"""Render a registry in the Prometheus text or OpenMetrics format for an aiohttp handler.

Caveat found by the Prometheus proof test: with prometheus_client 0.26, the
OpenMetrics encoder negotiated with Prometheus 2.x (``escaping=underscores``)
rewrites ``:`` in sample names to ``_`` while the TYPE lines keep the colon, so
``vllm:``-style names never reach Prometheus intact. ``concurproxy_*`` names have
no colon and are unaffected; exporters of engine-style names should pass
``text_only=True``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def render(registry: CollectorRegistry, accept: str | None, text_only: bool = False) -> tuple[bytes, str]:
    """Return ``(body, content_type)``; OpenMetrics when the scraper's Accept header asks for it."""
    encoder, content_type = choose_encoder("" if text_only else accept or "")
    return encoder(registry), content_type


def metrics_handler(
    registry: CollectorRegistry, text_only: bool = False, before: Callable[[], None] | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving ``registry``.

    ``app.router.add_get("/metrics", metrics_handler(metrics.registry, before=metrics.refresh))``.
    ``before`` runs on the event loop (it may read loop-owned state); the encoding, which costs
    milliseconds for a large fleet, runs in a worker thread so streams are not stalled meanwhile
    (prometheus_client's collectors are thread-safe).
    """

    async def handle(request: web.Request) -> web.Response:
        if before is not None:
            before()
        body, content_type = await asyncio.to_thread(render, registry, request.headers.get("Accept"), text_only)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handle
