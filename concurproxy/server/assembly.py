"""Build one proxy instance's parts from the validated policy, and run their background loops.

This is the only place that knows which core implements which stage of the
request path; each stage is an adapter in `server/stages/`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

from concurproxy.config.models import Policy
from concurproxy.decision import DecisionCore
from concurproxy.plugins.installed import Plugins
from concurproxy.routing import PrefixAffinityRouter
from concurproxy.server.admission.build import build_gate, build_shared_gate
from concurproxy.server.api import CODECS
from concurproxy.server.auth import TenantResolver
from concurproxy.server.components import Components
from concurproxy.server.membership import add_replica, remove_replica
from concurproxy.server.reload import fingerprint
from concurproxy.server.stages import shared as shared_stage
from concurproxy.server.stages.budgets import BudgetStage
from concurproxy.server.stages.dispatch import DispatchStage
from concurproxy.server.stages.kvevents import KvEventFeed
from concurproxy.server.stages.observe import StepMetrics, health_listener
from concurproxy.server.stages.routing import RoutingStage
from concurproxy.server.stages.sessions import SessionStage
from concurproxy.sessions import SessionResolver
from concurproxy.sessions.shared import SharedSessions
from concurproxy.signals.poller import PollTarget, PressurePoller
from concurproxy.state.responses import ResponseIds, SharedResponseIds
from concurproxy.telemetry.dispatch import prime_replica as prime_dispatch
from concurproxy.telemetry.dispatch import watch_dispatch
from concurproxy.telemetry.metrics import ProxyMetrics
from concurproxy.telemetry.pressure import pressure_hook
from concurproxy.telemetry.tracing import build_tracing
from concurproxy.tenancy.directory import TenantDirectory
from concurproxy.tokenizer import build_step_tokens
from concurproxy.upstream.discovery import DnsDiscovery, SystemResolver
from concurproxy.upstream.pool import ReplicaPool
from concurproxy.upstream.replica import Replica


def build_components(
    policy: Policy,
    registry: CollectorRegistry | None = None,
    span_exporter: SpanExporter | None = None,
    *,
    plugins: Plugins | None = None,
) -> Components:
    """``span_exporter`` replaces the OTLP exporter (tests pass an in-memory one); ``plugins`` the
    installed plugin registries. Raises ``PluginError`` (one line) for a plugin name that cannot be used."""
    plugins = plugins if plugins is not None else Plugins.load()
    plugins.check(policy)  # before anything starts: every unusable name at once, in the operator's words
    pool = ReplicaPool((Replica.from_config(u) for u in policy.upstreams), policy.health)
    tenants = TenantResolver(TenantDirectory.from_policy(policy.tenants, policy.auth))
    metrics = ProxyMetrics(registry if registry is not None else CollectorRegistry())
    tenant_names = [t.name for t in policy.tenants] + (["anonymous"] if policy.auth.allow_anonymous else [])
    metrics.prime(
        replicas=[r.id for r in pool],
        tenants=tenant_names,
        roles=[*policy.roles, "default"],
        routes=[codec.route for codec in CODECS],
    )
    pool.add_listener(health_listener(metrics))
    metrics.add_refresher(lambda: metrics.set_upstream_panic(pool.panic, pool.panic_steps))

    # The decision core, built once from the policy (the simulator builds the same: DecisionCore.from_policy).
    # Redis-shared state only where admission has windows to share (controller ``none`` shares nothing).
    shared = None
    if policy.state.backend == "redis" and policy.admission.controller != "none":
        shared = shared_stage.redis_state(policy)
    hooks = shared_stage.core_hooks(shared) if shared is not None else {}
    core = DecisionCore.from_policy(policy, plugins, **hooks)
    shared_gate = build_shared_gate(core, shared, metrics) if shared is not None else None
    admission = shared_gate if shared_gate is not None else build_gate(core, metrics)

    router = core.router
    # Block keys only for a policy that routes on prefixes; token counts for every policy.
    uses_prefix = isinstance(router, PrefixAffinityRouter)
    tokens = build_step_tokens(policy, policy.routing.block_tokens if uses_prefix else None)
    routing = RoutingStage(
        router,
        core.block_tokens,
        core.stale_after_s,
        snapshots=None,
        windows=admission.window_room,
        tokens=tokens,
    )
    components = Components(
        policy=policy,
        pool=pool,
        tenants=tenants,
        router=routing,
        admission=admission,
        metrics=metrics,
        plugins=plugins,
        tokens=tokens,
    )
    routing.snapshots = components.latest_pressure
    if core.dispatch is not None:
        components.dispatch = DispatchStage(
            core.dispatch, snapshots=components.latest_pressure, on_wait=metrics.dispatch_waited
        )
        watch_dispatch(metrics, components.dispatch, [r.id for r in pool])
    else:
        for r in pool:  # the dashboards' dispatch panels read 0, not "No data"
            prime_dispatch(metrics, None, r.id)
    discovered_kv = policy.discovery is not None and policy.discovery.kv_events_port is not None
    if discovered_kv or any(u.kv_events is not None for u in policy.upstreams):
        feed = KvEventFeed(policy.routing.block_tokens, policy.routing.index_max_blocks)
        if feed.layer(routing.router):  # exact prefixes where engines publish them
            components.kv_events = feed
    components.tracing = build_tracing(policy.telemetry, span_exporter)
    components.rate_limiter = components.make_rate_limiter(policy)
    components.reload_status.fingerprint = fingerprint(policy)
    budgets = BudgetStage(core.budgets)
    components.budgets = budgets  # settled by the pipeline before the listeners below
    components.listeners.extend(
        [components.calibration, routing, StepMetrics(metrics, policy.routing.block_tokens, core.fairness)]
    )
    components.response_ids = ResponseIds(policy.state.response_ids)
    if shared_gate is not None:  # state.backend: redis
        components.shared_state = shared_stage.attach(shared_gate, routing, metrics)
        shared_stage.share_budgets(budgets, components.shared_state, components.clock)
        components.listeners.append(shared_stage.SharedStateListener(shared_gate))
        components.response_ids = SharedResponseIds(components.shared_state, policy.state.response_ids)
    if policy.identity.infer != "off" or policy.identity.client_session_ids:
        resolver = SessionResolver(policy.identity, clock=components.clock)
        fill_in = None
        if components.shared_state is not None and policy.identity.shared:
            fill_in = SharedSessions(components.shared_state, resolver)
        components.sessions = SessionStage(resolver, fill_in)
    return components


@contextlib.asynccontextmanager
async def background_loops(c: Components, session: aiohttp.ClientSession) -> AsyncIterator[None]:
    """Pressure polling (feeding admission and metrics) and admission housekeeping, for the app's lifetime."""
    aimd = c.policy.admission.aimd
    gate = c.admission
    hook = pressure_hook(c.metrics, gate.on_pressure) if c.metrics is not None else gate.on_pressure

    targets = {r.id: PollTarget.from_url(r.pressure_url or r.metrics_url) for r in c.pool}
    poller = PressurePoller(
        session,
        targets,
        interval_s=aimd.interval_ms / 1000,
        stale_after_s=aimd.stale_after_ms / 1000,
        clock=c.clock,
        on_snapshot=hook,  # type: ignore[arg-type]  # returns the downstream's None
    )
    c.poller = poller
    if c.policy.discovery is not None:  # discovered replicas join before the first poll and request
        resolver = c.discovery_resolver or SystemResolver()
        c.discovery = DnsDiscovery(
            c.policy.discovery, resolver, lambda r: add_replica(c, r), lambda rid: remove_replica(c, rid)
        )
        await c.discovery.start()
    tick = asyncio.create_task(gate.run(), name="admission-tick")
    await poller.poll_once()  # first pressure before the first request: no needless queueing at start
    if c.kv_events is not None:
        for r in c.pool:
            c.kv_events.add(r)
    if c.shared_state is not None:
        await c.shared_state.start()  # first sync with the other instances before the first request
    await c.response_ids.start()
    shared_sessions = c.sessions.shared if c.sessions is not None else None
    if shared_sessions is not None:
        shared_sessions.start()
    async with poller:
        try:
            yield
        finally:
            if c.discovery is not None:
                await c.discovery.stop()
            if c.kv_events is not None:
                await c.kv_events.aclose()
            await c.response_ids.stop()  # (before the shared state closes its client)
            if shared_sessions is not None:
                await shared_sessions.stop()
            if c.shared_state is not None:
                await c.shared_state.stop()
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
