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

from concurproxy.admission.service import AdmissionService
from concurproxy.config.models import Policy
from concurproxy.control.admission.shares import WindowShares
from concurproxy.control.budgets import BudgetEngine, BudgetLimits
from concurproxy.control.dispatch import DispatchParams
from concurproxy.control.fairness.base import FairnessParams
from concurproxy.control.types import PressureSnapshot
from concurproxy.plugins.installed import Plugins
from concurproxy.routing import PrefixAffinityRouter, build_router
from concurproxy.server.api import CODECS
from concurproxy.server.auth import TenantResolver
from concurproxy.server.components import Components
from concurproxy.server.hooks import NoAdmission
from concurproxy.server.membership import add_replica, remove_replica
from concurproxy.server.reload import fingerprint
from concurproxy.server.stages import shared as shared_stage
from concurproxy.server.stages.admission import AdmissionStage
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
from concurproxy.telemetry.admission import AdmissionMetricsListener, watch_admission
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

    admission_stage: AdmissionStage | None = None
    params = FairnessParams.from_policy(policy.fairness, policy.tenants)
    if policy.admission.controller == "none":
        admission: NoAdmission | AdmissionStage = NoAdmission()
    else:
        fair = plugins.fairness
        queue_maker = lambda _replica: fair.queue(policy.fairness.policy, params)  # noqa: E731
        shared = shared_stage.redis_state(policy) if policy.state.backend == "redis" else None
        service = AdmissionService(
            policy.admission,
            registry=plugins.controllers,
            queue_maker=queue_maker,
            listeners=[AdmissionMetricsListener(metrics)],
            core=shared_stage.shared_admission_core(policy.admission, shared, queue_maker) if shared else None,
        )
        service.set_shares(WindowShares.from_roles(policy.roles))
        service.set_tenant_weights(params.weight)
        watch_admission(metrics, service)  # type: ignore[arg-type]  # structural: core.state(now)
        admission = admission_stage = (
            AdmissionStage(service) if shared is None else shared_stage.SharedAdmissionStage(service, shared)
        )

    aimd = policy.admission.aimd
    router = build_router(policy.routing, plugins.scorers, policies=plugins.routers)
    # Block keys only for a policy that routes on prefixes; token counts for every policy.
    uses_prefix = isinstance(router, PrefixAffinityRouter)
    tokens = build_step_tokens(policy, policy.routing.block_tokens if uses_prefix else None)
    routing = RoutingStage(
        router,
        policy.routing.block_tokens,
        aimd.stale_after_ms / 1000,
        snapshots=None,
        windows=admission_stage.window_room if admission_stage is not None else None,
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
    dispatch_params = DispatchParams.from_policy(policy.fairness)
    if admission_stage is not None and dispatch_params.enabled:
        components.dispatch = DispatchStage(
            dispatch_params, snapshots=components.latest_pressure, on_wait=metrics.dispatch_waited
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
    budgets = BudgetStage(BudgetEngine(BudgetLimits.for_policy(policy)))
    components.budgets = budgets  # settled by the pipeline before the listeners below
    components.listeners.extend(
        [components.calibration, routing, StepMetrics(metrics, policy.routing.block_tokens, params)]
    )
    components.response_ids = ResponseIds(policy.state.response_ids)
    if isinstance(admission_stage, shared_stage.SharedAdmissionStage):  # state.backend: redis
        components.shared_state = shared_stage.attach(admission_stage, routing, metrics)
        shared_stage.share_budgets(budgets, components.shared_state, components.clock)
        components.listeners.append(shared_stage.SharedStateListener(admission_stage))
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
    service = c.admission.service if isinstance(c.admission, AdmissionStage) else None

    def on_snapshot(replica: str, snap: PressureSnapshot) -> None:
        if service is not None:
            service.on_pressure(replica, snap)

    hook = pressure_hook(c.metrics, on_snapshot) if c.metrics is not None else on_snapshot

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
    tick = asyncio.create_task(service.run(), name="admission-tick") if service is not None else None
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
            if tick is not None:
                tick.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tick
