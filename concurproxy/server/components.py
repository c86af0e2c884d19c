"""The parts one proxy instance is made of, built once from the policy and held in the app."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from concurproxy.config.models import Policy
from concurproxy.server.auth import TenantResolver
from concurproxy.server.forward import Forwarder
from concurproxy.server.hooks import AdmissionGate, BudgetGate, Router, StepContext, StepListener
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
    shutting_down: bool = False


COMPONENTS = web.AppKey("concurproxy.components", Components)
