"""Response headers that tell an agent what its budget has left (pure mapping)."""

from __future__ import annotations

import math

from concurproxy.control.budgets.decision import Allow, BudgetDecision

REMAINING_TOKENS = "x-concurproxy-budget-remaining-tokens"
REMAINING_STEPS = "x-concurproxy-budget-remaining-steps"
MAX_TOKENS_CLAMPED = "x-concurproxy-max-tokens-clamped"
RETRY_AFTER = "Retry-After"


def budget_headers(decision: BudgetDecision) -> dict[str, str]:
    """Headers for the response to a step (success or error).

    * remaining tokens / steps: only when a budget applies (after this step's reservation);
    * ``x-concurproxy-max-tokens-clamped``: the max_tokens the step was sent with, when clamped;
    * ``Retry-After``: whole seconds, rounded up, at least 1, on a Deny that can succeed later.
    """
    h: dict[str, str] = {}
    if decision.remaining_tokens is not None:
        h[REMAINING_TOKENS] = str(decision.remaining_tokens)
    if decision.remaining_steps is not None:
        h[REMAINING_STEPS] = str(max(0, decision.remaining_steps))
    if isinstance(decision, Allow):
        if decision.clamped_max_tokens is not None:
            h[MAX_TOKENS_CLAMPED] = str(decision.clamped_max_tokens)
    elif decision.retry_after_s is not None and math.isfinite(decision.retry_after_s):
        h[RETRY_AFTER] = str(max(1, math.ceil(decision.retry_after_s)))
    return h
