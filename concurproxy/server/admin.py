"""Operator endpoints: /metrics, /admin/state, drain/undrain a replica, and releasing an agent.

``/admin/*`` needs an admin key when ``auth.admin_key_sha256`` is set (a key
distinct from tenants' keys); without one they answer loopback callers only (403
for others), which suits local use and keeps a proxy bound to 0.0.0.0 closed.
``/metrics`` needs the key too when ``auth.metrics_require_admin_key`` is on.
``DELETE /v1/agents/{id}`` is a client call: the agent is scoped under the
caller's tenant, so one tenant cannot release another's agent.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import orjson
from aiohttp import web

from concurproxy.errors import ProxyError
from concurproxy.identity import _clean
from concurproxy.server.components import COMPONENTS, Components
from concurproxy.server.reload import reload_from_file
from concurproxy.telemetry.exposition import render


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status, content_type="application/json"
    )


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _require_admin(request: web.Request) -> Components:
    """The admin key when one is configured; without one (the default policy), callers on this host
    only: an operator's curl works out of the box, a proxy bound to a public address is not open."""
    c = request.app[COMPONENTS]
    if c.policy.auth.admin_key_sha256:
        if not c.tenants.is_admin(request.headers):
            raise ProxyError(401, "admin_key_required", "this endpoint needs the admin API key")
    elif not _loopback(request.remote):
        raise ProxyError(
            403,
            "admin_key_not_configured",
            "no admin key is configured (auth.admin_key_sha256): the admin endpoints answer local callers only",
        )
    return c


async def metrics(request: web.Request) -> web.Response:
    c = request.app[COMPONENTS]
    if c.policy.auth.metrics_require_admin_key and c.policy.auth.admin_key_sha256:  # the flag needs a key
        _require_admin(request)
    if c.metrics is None:
        raise ProxyError(404, "not_found", "metrics are disabled")
    c.metrics.refresh()  # gauges read from loop-owned state (admission windows) at scrape time
    body, content_type = await asyncio.to_thread(render, c.metrics.registry, request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def state(request: web.Request) -> web.Response:
    c = _require_admin(request)
    now = c.clock()
    replicas = []
    for r in c.pool:
        snap = c.latest_pressure(r.id)
        replicas.append(
            {
                "id": r.id,
                "url": r.base_url,
                "healthy": r.healthy,
                "draining": r.draining,
                "in_flight": r.in_flight,
                "models": list(r.models),
                "last_error": r.last_error,
                "pressure": None
                if snap is None
                else {
                    "ok": snap.ok,
                    "age_s": round(snap.age(now), 3),
                    "kv_usage": snap.kv_usage,
                    "running": snap.running,
                    "waiting": snap.waiting,
                    "preemptions_per_s": snap.preemptions_per_s,
                    "prefix_hit_rate": snap.prefix_hit_rate,
                    "prefill_iterations": snap.prefill_iterations,
                    "error": snap.error,
                },
            }
        )
    admission = c.admission.state()
    rs = c.reload_status
    return _json(
        {
            "policy": {
                "fingerprint": rs.fingerprint,
                "path": c.policy_path,
                "reloads": rs.reloads,
                "failed_reloads": rs.failures,
                "last_reload_error": rs.last_error,
            },
            "replicas": replicas,
            "panic_routing": {"active": c.pool.panic, "steps": c.pool.panic_steps},
            "admission": admission,
            "shared_state": c.shared_state.state() if c.shared_state is not None else {"backend": "memory"},
            "kv_events": c.kv_events.state() if c.kv_events is not None else None,
            "tokenizers": c.tokens.describe(),
            "sessions": _sessions(c),
            "discovery": c.discovery.state() if c.discovery is not None else None,
            "dispatch": c.dispatch.state() if c.dispatch is not None else None,
            "shutting_down": c.shutting_down,
        }
    )


def _sessions(c: Components) -> dict[str, object] | None:
    """Agents of steps that named none: how each was found, and the most recent inferred ones."""
    if c.sessions is None:
        return None
    out = c.sessions.resolver.state()
    if c.sessions.shared is not None:
        out["shared"] = c.sessions.shared.view()
    return out


async def reload(request: web.Request) -> web.Response:
    c = _require_admin(request)
    if c.policy_path is None:
        raise ProxyError(409, "no_policy_file", "this proxy was started without --config: nothing to reload")
    ok = reload_from_file(c, c.policy_path, c.policy_overrides)
    rs = c.reload_status
    if not ok:
        return _json(ProxyError(400, "invalid_policy", rs.last_error or "invalid policy").body(), status=400)
    return _json({"reloaded": True, "fingerprint": rs.fingerprint})


async def _set_drain(request: web.Request, draining: bool) -> web.Response:
    c = _require_admin(request)
    rid = request.match_info["replica_id"]
    replica = c.pool.get(rid)
    if replica is None:
        raise ProxyError(404, "replica_not_found", f"no replica named {rid!r}")
    replica.draining = draining
    return _json({"id": rid, "draining": draining, "in_flight": replica.in_flight})


async def drain(request: web.Request) -> web.Response:
    return await _set_drain(request, True)


async def undrain(request: web.Request) -> web.Response:
    return await _set_drain(request, False)


async def release_agent(request: web.Request) -> web.Response:
    c = request.app[COMPONENTS]
    tenant = c.tenants.resolve(request.headers)
    agent = _clean(request.match_info["agent_id"], "agent_id")
    scoped = f"{tenant}/{agent}"
    released = c.admission.release_agent(scoped)
    c.router.release(scoped)
    return _json({"id": agent, "object": "agent.released", "released": released})
