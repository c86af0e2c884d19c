"""The parts one proxy instance is made of, built once from the policy and held in the app."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from concurproxy.config.models import Policy
from concurproxy.control.ratelimit import KeyedRateLimiter
from concurproxy.control.types import PressureSnapshot, PriorityClass
from concurproxy.plugins.installed import Plugins
from concurproxy.server.auth import TenantResolver
from concurproxy.server.forward import Forwarder
from concurproxy.server.hooks import AdmissionGate, BudgetGate, NoBudgets, Router, StepListener
from concurproxy.server.stages.calibration import TokenCalibration
from concurproxy.server.stages.sessions import SessionStage
from concurproxy.signals.poller import PressurePoller
from concurproxy.state.responses import ResponseIds
from concurproxy.telemetry.metrics import ProxyMetrics
from concurproxy.telemetry.tracing import NoopTracing, Tracing
from concurproxy.tokenizer.step import StepTokens
from concurproxy.upstream.pool import ReplicaPool


@dataclass
class ReloadStatus:
    fingerprint: str = ""
    reloads: int = 0
    failures: int = 0
    last_error: str | None = None

    def record_ok(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.reloads += 1
        self.last_error = None

    def record_error(self, error: str) -> None:
        self.failures += 1
        self.last_error = error


@dataclass
class Components:
    policy: Policy
    pool: ReplicaPool
    tenants: TenantResolver
    router: Router
    admission: AdmissionGate
    budgets: BudgetGate = field(default_factory=NoBudgets)
    listeners: list[StepListener] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    session: aiohttp.ClientSession | None = None
    forwarder: Forwarder | None = None  # set on startup (needs the session)
    poller: PressurePoller | None = None  # set on startup
    metrics: ProxyMetrics | None = None
    tracing: Tracing | NoopTracing = field(default_factory=NoopTracing)
    shutting_down: bool = False
    active_steps: int = 0  # API requests being handled: steps (queued, upstream, streaming) and passed-through ones
    rate_limiter: KeyedRateLimiter | None = None
    calibration: TokenCalibration = field(default_factory=TokenCalibration)
    tokens: StepTokens = field(default_factory=lambda: StepTokens({}, None))  # a step's token count + prefix keys
    admin_url: str | None = None  # the admin listener's URL, when it has its own
    policy_path: str | None = None  # where the policy came from (reloads read it again)
    policy_overrides: dict[str, object] = field(default_factory=dict)  # command-line flags, re-applied on reload
    reload_status: ReloadStatus = field(default_factory=ReloadStatus)
    shared_state: Any = None  # concurproxy.state.redis_state.RedisState with state.backend: redis
    kv_events: Any = None  # concurproxy.server.stages.kvevents.KvEventFeed when an upstream publishes KV events
    discovery: Any = None  # concurproxy.upstream.discovery.DnsDiscovery with a `discovery:` section
    discovery_resolver: Any = None  # a discovery Resolver used instead of the OS's (tests)
    dispatch: Any = None  # concurproxy.server.stages.dispatch.DispatchStage (cost-aware dispatch), when enabled
    response_ids: ResponseIds = field(default_factory=ResponseIds)  # Responses id -> the replica storing it
    sessions: SessionStage | None = None  # agents of steps that name none (identity.infer, client session ids)
    plugins: Plugins | None = None  # the plugin registries the parts were built from (a reload checks names here)
    _caps: dict[str, PriorityClass] = field(default_factory=dict, repr=False)  # tenant -> max_priority
    _caps_of: Policy | None = field(default=None, repr=False)

    @staticmethod
    def make_rate_limiter(policy: Policy) -> KeyedRateLimiter | None:
        lim = policy.limits
        if not lim.requests_per_s:
            return None
        return KeyedRateLimiter(lim.requests_per_s, lim.burst, lim.rate_limit_max_keys)

    def role_priority(self, role: str) -> PriorityClass:
        cfg = self.policy.roles.get(role)
        return PriorityClass[cfg.priority.value] if cfg is not None else PriorityClass.normal

    def step_priority(self, tenant: str, role: str, claimed: PriorityClass | None) -> tuple[PriorityClass, bool]:
        """The step's class: its own claim (X-Priority), capped by the tenant's max_priority, else its role's.

        Returns the class and whether the claim was lowered to the cap.
        """
        if claimed is None:
            return self.role_priority(role), False
        if self._caps_of is not self.policy:  # rebuilt once per policy (reloads swap the object)
            self._caps = {t.name: PriorityClass[t.max_priority.value] for t in self.policy.tenants if t.max_priority}
            self._caps_of = self.policy
        cap = self._caps.get(tenant)
        if cap is not None and claimed < cap:  # lower value = more urgent
            return cap, True
        return claimed, False

    def latest_pressure(self, replica_id: str) -> PressureSnapshot | None:
        return self.poller.latest(replica_id) if self.poller is not None else None


COMPONENTS = web.AppKey("concurproxy.components", Components)
