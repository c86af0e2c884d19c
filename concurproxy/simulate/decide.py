"""The proxy's decision core, built from a policy exactly as the proxy builds it.

Budgets (``BudgetEngine``), routing (``build_router`` with the policy's
scorers), admission (``AdmissionCore`` with the policy's window controller
from the registry and its fairness queue from the fairness registry) and
tenant resolution (``TenantDirectory``). The simulation calls these objects
and nothing else to decide; it only carries out their decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

from concurproxy.config.models import Policy
from concurproxy.control.admission import AdmissionCore
from concurproxy.control.admission.shares import WindowShares
from concurproxy.control.budgets import BudgetEngine, BudgetLimits
from concurproxy.control.fairness import FairnessParams, default_registry
from concurproxy.control.types import PriorityClass
from concurproxy.routing import Router, build_router
from concurproxy.tenancy.directory import TenantDirectory


@dataclass(slots=True)
class DecisionCore:
    policy: Policy
    budgets: BudgetEngine
    router: Router
    admission: AdmissionCore
    tenants: TenantDirectory
    stale_after_s: float
    block_tokens: int
    _tenant_cache: dict[str, str | None]

    @classmethod
    def from_policy(cls, policy: Policy) -> DecisionCore:
        params = FairnessParams.from_policy(policy.fairness, policy.tenants)
        registry = default_registry(plugins=False)
        registry.create(policy.fairness.policy, params)  # fail fast on an unknown name
        admission = AdmissionCore(
            policy.admission,
            queue_maker=lambda _replica: registry.queue(policy.fairness.policy, params),
        )
        admission.set_shares(WindowShares.from_roles(policy.roles), 0.0)
        return cls(
            policy=policy,
            budgets=BudgetEngine(BudgetLimits.for_policy(policy)),
            router=build_router(policy.routing),
            admission=admission,
            tenants=TenantDirectory.from_policy(policy.tenants, policy.auth, env={}),
            stale_after_s=policy.admission.aimd.stale_after_ms / 1000.0,
            block_tokens=policy.routing.block_tokens,
            _tenant_cache={},
        )

    def tenant(self, api_key: str) -> str | None:
        """The tenant of a key (None: the proxy would answer 401)."""
        if api_key not in self._tenant_cache:
            self._tenant_cache[api_key] = self.tenants.lookup(api_key)
        return self._tenant_cache[api_key]


def priority_of(name: str) -> PriorityClass:
    try:
        return PriorityClass[name]
    except KeyError:
        return PriorityClass.normal
