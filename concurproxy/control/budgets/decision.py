"""Budget decisions: typed reasons, the reservation an admitted step holds, Allow / Deny."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class BudgetReason(StrEnum):
    """Why a step was allowed, clamped or refused (the ``code`` of the error body)."""

    ok = "ok"
    max_tokens_clamped = "max_tokens_clamped"
    prompt_too_large = "prompt_too_large"  # est_prompt_tokens > role.max_prompt_tokens
    max_tokens_too_large = "max_tokens_too_large"  # over max_output_tokens, on_output_limit=reject
    max_steps_per_task = "max_steps_per_task"  # stopping discipline
    role_tokens_per_min = "role_tokens_per_min"  # (tenant, role) bucket empty
    tenant_tokens_per_min = "tenant_tokens_per_min"  # tenant bucket empty


BucketKey = tuple[str, str | None]  # (tenant, role); role None = the tenant-wide bucket
TaskKey = tuple[str, str, str]  # (tenant, task_id, effective role)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an allowed step holds until it is settled or refunded (exactly once)."""

    id: int
    tenant: str
    role: str  # the effective role (see BudgetLimits.effective_role)
    task: TaskKey | None  # None when the step has no task id or no step limit
    prompt_estimate: int
    output_estimate: int  # the (clamped) max_tokens
    cost: float  # weighted estimate taken from every bucket in ``buckets``
    buckets: tuple[BucketKey, ...]
    at: float


@dataclass(frozen=True, slots=True)
class Allow:
    reservation: Reservation
    clamped_max_tokens: int | None  # set when the step must be sent with this max_tokens
    remaining_tokens: int | None  # after this reservation; None = no token budget applies
    remaining_steps: int | None  # after this step; None = no step limit applies
    reason: BudgetReason = BudgetReason.ok
    allowed: Literal[True] = True


@dataclass(frozen=True, slots=True)
class Deny:
    reason: BudgetReason
    retry_after_s: float | None  # None: retrying the same step cannot succeed
    remaining_tokens: int | None
    remaining_steps: int | None
    http_status: int  # 429 (limits) or 413 (prompt too large)
    message: str
    allowed: Literal[False] = False


BudgetDecision = Allow | Deny
