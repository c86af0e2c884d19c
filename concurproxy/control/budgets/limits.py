"""Frozen internal budget limits, built once from the validated policy.

The policy's pydantic models (``concurproxy.config.budgets``) are the external
schema; this is what the engine reads on the hot path: plain frozen
dataclasses, weights resolved, unknown roles mapped to the ``default`` role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from concurproxy.config.budgets import BudgetsConfig, FairnessConfig, RoleConfig, TenantConfig

if TYPE_CHECKING:
    from concurproxy.config.models import Policy

DEFAULT_ROLE = "default"


@dataclass(frozen=True, slots=True)
class RoleLimits:
    tokens_per_min: int | None = None
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    reject_over_output_limit: bool = False  # on_output_limit == "reject"
    max_steps_per_task: int | None = None

    @classmethod
    def from_config(cls, cfg: RoleConfig) -> RoleLimits:
        return cls(
            tokens_per_min=cfg.tokens_per_min,
            max_prompt_tokens=cfg.max_prompt_tokens,
            max_output_tokens=cfg.max_output_tokens,
            reject_over_output_limit=cfg.on_output_limit == "reject",
            max_steps_per_task=cfg.max_steps_per_task,
        )


_NO_LIMITS = RoleLimits()


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Everything `BudgetEngine` enforces.

    ``cost = prompt_tokens * input_weight + output_tokens * output_weight`` is the
    unit of every ``tokens_per_min`` (role and tenant), the same weights VTC uses.
    """

    roles: Mapping[str, RoleLimits] = field(default_factory=lambda: MappingProxyType({}))
    tenant_tokens_per_min: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    input_weight: float = 1.0
    output_weight: float = 2.0
    task_ttl_s: float = BudgetsConfig().task_ttl_s  # step counters forgotten this long after a task's last step
    max_tracked_tasks: int = BudgetsConfig().max_tracked_tasks  # memory bound: oldest counters dropped beyond

    @classmethod
    def for_policy(cls, policy: Policy) -> BudgetLimits:
        return cls.from_policy(policy.roles, policy.tenants, policy.fairness, policy.budgets)

    @classmethod
    def from_policy(
        cls,
        roles: Mapping[str, RoleConfig],
        tenants: Sequence[TenantConfig],
        fairness: FairnessConfig,
        budgets: BudgetsConfig | None = None,
    ) -> BudgetLimits:
        tunables = budgets or BudgetsConfig()
        return cls(
            roles=MappingProxyType({name: RoleLimits.from_config(r) for name, r in roles.items()}),
            tenant_tokens_per_min=MappingProxyType(
                {t.name: t.tokens_per_min for t in tenants if t.tokens_per_min is not None}
            ),
            input_weight=fairness.input_weight,
            output_weight=fairness.output_weight,
            task_ttl_s=tunables.task_ttl_s,
            max_tracked_tasks=tunables.max_tracked_tasks,
        )

    def effective_role(self, role: str) -> str:
        """The role whose limits apply: itself when configured, else ``default``.

        Unknown roles share the ``default`` role's limits *and buckets*, so a
        client cannot escape its role budget by inventing new role names.
        """
        return role if role in self.roles else DEFAULT_ROLE

    def role(self, effective_role: str) -> RoleLimits:
        return self.roles.get(effective_role, _NO_LIMITS)

    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return prompt_tokens * self.input_weight + output_tokens * self.output_weight
