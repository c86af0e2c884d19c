"""The parts one proxy instance is made of, built once from the policy and held in the app."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from concurproxy.config.models import Policy
from concurproxy.control.types import PressureSnapshot, PriorityClass
from concurproxy.server.auth import TenantResolver
from concurproxy.server.forward import Forwarder
from concurproxy.server.hooks import AdmissionGate, BudgetGate, Router, StepContext, StepListener
from concurproxy.signals.poller import PressurePoller
from concurproxy.telemetry.metrics import ProxyMetrics
from concurproxy.telemetry.tracing import NoopTracing, Tracing
from concurproxy.upstream.pool import ReplicaPool


class NoBudgets:
    def check(self, ctx: StepContext, now: float) -> None:
        return None


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

    def role_priority(self, role: str) -> PriorityClass:
        cfg = self.policy.roles.get(role)
        return PriorityClass[cfg.priority.value] if cfg is not None else PriorityClass.normal

    def latest_pressure(self, replica_id: str) -> PressureSnapshot | None:
        return self.poller.latest(replica_id) if self.poller is not None else None


COMPONENTS = web.AppKey("concurproxy.components", Components)
