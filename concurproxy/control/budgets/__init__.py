"""Per-role / per-tenant token budgets and stopping discipline (pure core).

Entry point: `BudgetEngine(BudgetLimits.for_policy(policy))`,
then per step ``check`` → (``settle`` | ``refund``). See `engine` for the exact rules.
"""

from concurproxy.control.budgets.bucket import TokenBucket
from concurproxy.control.budgets.decision import Allow, BudgetDecision, BudgetReason, Deny, Reservation
from concurproxy.control.budgets.engine import BudgetEngine
from concurproxy.control.budgets.headers import (
    MAX_TOKENS_CLAMPED,
    REMAINING_STEPS,
    REMAINING_TOKENS,
    RETRY_AFTER,
    budget_headers,
)
from concurproxy.control.budgets.limits import DEFAULT_ROLE, BudgetLimits, RoleLimits

__all__ = [
    "DEFAULT_ROLE",
    "MAX_TOKENS_CLAMPED",
    "REMAINING_STEPS",
    "REMAINING_TOKENS",
    "RETRY_AFTER",
    "Allow",
    "BudgetDecision",
    "BudgetEngine",
    "BudgetLimits",
    "BudgetReason",
    "Deny",
    "Reservation",
    "RoleLimits",
    "TokenBucket",
    "budget_headers",
]
