"""Per-role and per-tenant token budgets with reserve-at-admission / settle-from-usage.

Algorithm (one call of `check` per step, before admission):

1. ``role = limits.effective_role(step.role)`` (unknown roles share ``default``).
2. ``est_prompt_tokens > max_prompt_tokens`` → Deny 413 ``prompt_too_large``.
3. ``max_tokens > max_output_tokens`` (or max_tokens unset, 0) → clamp to the
   limit, or, with ``on_output_limit: reject`` and an explicit larger value,
   Deny 429 ``max_tokens_too_large``.
4. ``used_steps(tenant, task, role) >= max_steps_per_task`` → Deny 429
   ``max_steps_per_task`` (no Retry-After: the task has to stop or fold).
5. ``cost = est_prompt * input_weight + max_tokens' * output_weight`` must fit
   the (tenant, role) bucket and the tenant bucket (``TokenBucket.fits``);
   otherwise Deny 429 with ``Retry-After = max over short buckets of
   (min(cost, capacity) - level) / rate``.
6. Allow: take ``cost`` from each bucket, count the step, return a `Reservation`.

After the step, exactly one of:

* ``settle(res, prompt, output, now)``: ``actual = prompt*iw + output*ow``;
  each bucket gets ``cost - actual`` back (negative: it is charged the extra).
  A step that failed part-way settles with the usage actually served.
* ``refund(res, now)``: nothing was served; ``cost`` goes back and the step
  no longer counts against ``max_steps_per_task``.

Invariant (tested): at a fixed ``now`` a bucket's ``capacity - level`` equals the
settled actual cost of its steps plus the estimates of its open reservations.

Several instances (``state.backend: redis``): `share_with_fleet` makes every
bucket this instance's share of a fleet bucket; the engine records the net
tokens it takes in a `SpendLedger` and the sync applies the fleet's level with
`apply_fleet_level` (see `fleet` for the model and its consistency bound).

Concurrency: single-threaded owner (the event loop); settle/refund are
idempotent per reservation (a second call returns False and changes nothing).
Pure: no I/O, no clock; ``now`` is seconds on the caller's monotonic clock.
"""

from __future__ import annotations

import math

from concurproxy.control.budgets.bucket import TokenBucket
from concurproxy.control.budgets.decision import (
    Allow,
    BucketKey,
    BudgetDecision,
    BudgetReason,
    Deny,
    Reservation,
    TaskKey,
)
from concurproxy.control.budgets.fleet import SpendLedger, apply_share
from concurproxy.control.budgets.limits import BudgetLimits
from concurproxy.control.budgets.steps import TaskStepCounters
from concurproxy.control.types import StepInfo


class BudgetEngine:
    def __init__(self, limits: BudgetLimits) -> None:
        self.limits = limits
        self._buckets: dict[BucketKey, TokenBucket] = {}
        self._steps = TaskStepCounters(limits.task_ttl_s, limits.max_tracked_tasks)
        self._open: dict[int, Reservation] = {}
        self._next_id = 0
        self.fleet_share = 1.0  # this instance's share of each bucket (1/live instances); 1 alone
        self.ledger: SpendLedger | None = None  # net tokens taken per bucket, when shared

    # -- policy reload -------------------------------------------------------------------------
    def reconfigure(self, limits: BudgetLimits) -> None:
        """Apply a reloaded policy keeping bucket levels (capped) and step counters."""
        self.limits = limits
        self._steps.ttl_s = limits.task_ttl_s
        self._steps.max_tasks = limits.max_tracked_tasks
        for key in list(self._buckets):
            tpm = self._tokens_per_min(key)
            if tpm is None:
                del self._buckets[key]
            else:
                self._buckets[key].resize(tpm * self.fleet_share)

    # -- introspection -------------------------------------------------------------------------
    @property
    def open_reservations(self) -> int:
        return len(self._open)

    @property
    def tracked_tasks(self) -> int:
        return len(self._steps)

    def bucket_level(self, tenant: str, role: str | None, now: float) -> float | None:
        """Current level of a bucket (``role=None``: the tenant bucket); None if unbudgeted."""
        key: BucketKey = (tenant, None if role is None else self.limits.effective_role(role))
        b = self._bucket(key, now)
        return None if b is None else b.level

    # -- the decision --------------------------------------------------------------------------
    def check(self, step: StepInfo, now: float) -> BudgetDecision:
        lim = self.limits
        self._steps.expire(now)
        role = lim.effective_role(step.role)
        rl = lim.role(role)
        keys: tuple[BucketKey, BucketKey] = ((step.tenant, role), (step.tenant, None))
        buckets = [(k, b) for k in keys if (b := self._bucket(k, now)) is not None]
        task: TaskKey | None = None
        used = 0
        if rl.max_steps_per_task is not None and step.task_id:
            task = (step.tenant, step.task_id, role)
            used = self._steps.used(task)
        steps_left = None if task is None or rl.max_steps_per_task is None else rl.max_steps_per_task - used

        def deny(reason: BudgetReason, status: int, msg: str, retry: float | None = None) -> Deny:
            return Deny(reason, retry, _remaining(buckets), steps_left, status, msg)

        if rl.max_prompt_tokens is not None and step.est_prompt_tokens > rl.max_prompt_tokens:
            return deny(
                BudgetReason.prompt_too_large,
                413,
                f"prompt of ~{step.est_prompt_tokens} tokens exceeds role '{role}' max_prompt_tokens="
                f"{rl.max_prompt_tokens}; fold or summarise the context",
            )
        max_tokens = step.max_tokens
        clamped: int | None = None
        if rl.max_output_tokens is not None and (max_tokens <= 0 or max_tokens > rl.max_output_tokens):
            if rl.reject_over_output_limit and max_tokens > 0:
                return deny(
                    BudgetReason.max_tokens_too_large,
                    429,
                    f"max_tokens={max_tokens} exceeds role '{role}' max_output_tokens={rl.max_output_tokens}",
                )
            clamped = max_tokens = rl.max_output_tokens
        if steps_left is not None and steps_left <= 0:
            return deny(
                BudgetReason.max_steps_per_task,
                429,
                f"task '{step.task_id}' used its {rl.max_steps_per_task} steps for role '{role}'",
            )
        cost = lim.cost(step.est_prompt_tokens, max(0, max_tokens))
        short = [(k, b) for k, b in buckets if not b.fits(cost)]
        if short:
            key, worst = max(short, key=lambda kb: kb[1].wait_s(cost))
            if key[1] is None:
                reason, who = BudgetReason.tenant_tokens_per_min, f"tenant '{step.tenant}'"
            else:
                reason, who = BudgetReason.role_tokens_per_min, f"role '{role}'"
            msg = f"{who} token budget exhausted (step needs ~{cost:g})"
            return deny(reason, 429, msg, worst.wait_s(cost))
        for k, b in buckets:
            b.take(cost)
            if self.ledger is not None:
                self.ledger.add(k, cost)
        if task is not None:
            self._steps.add(task, now)
            steps_left = None if steps_left is None else steps_left - 1
        self._next_id += 1
        res = Reservation(
            id=self._next_id,
            tenant=step.tenant,
            role=role,
            task=task,
            prompt_estimate=step.est_prompt_tokens,
            output_estimate=max(0, max_tokens),
            cost=cost,
            buckets=tuple(k for k, _ in buckets),
            at=now,
        )
        self._open[res.id] = res
        reason = BudgetReason.ok if clamped is None else BudgetReason.max_tokens_clamped
        return Allow(res, clamped, _remaining(buckets), steps_left, reason)

    def settle(self, reservation: Reservation, prompt_tokens: int, output_tokens: int, now: float) -> bool:
        """Replace the reserved estimate by the reported usage. False if already settled/refunded."""
        if self._open.pop(reservation.id, None) is None:
            return False
        actual = self.limits.cost(max(0, prompt_tokens), max(0, output_tokens))
        self._return(reservation, reservation.cost - actual, now)
        return True

    def refund(self, reservation: Reservation, now: float) -> bool:
        """The step was not served at all: give back its tokens and its step."""
        if self._open.pop(reservation.id, None) is None:
            return False
        self._return(reservation, reservation.cost, now)
        if reservation.task is not None:
            self._steps.undo(reservation.task)
        return True

    # -- shared with other instances -----------------------------------------------------------
    def share_with_fleet(self) -> SpendLedger:
        """Record net spends per bucket from now on (for the fleet sync); returns the ledger."""
        if self.ledger is None:
            self.ledger = SpendLedger()
        return self.ledger

    def budgeted(self) -> dict[BucketKey, int]:
        """Every bucket this instance has used, with its fleet ``tokens_per_min``."""
        return {k: tpm for k in self._buckets if (tpm := self._tokens_per_min(k)) is not None}

    def apply_fleet_level(self, key: BucketKey, fleet_level: float, share: float, now: float) -> None:
        """Reset ``key``'s bucket to ``share`` of the fleet bucket's level (after a sync)."""
        b, tpm = self._buckets.get(key), self._tokens_per_min(key)
        if b is None or tpm is None:
            return
        pending = self.ledger.pending(key) if self.ledger is not None else 0.0
        apply_share(b, tpm, fleet_level, share, pending, now)

    # -- internals -----------------------------------------------------------------------------
    def _return(self, res: Reservation, amount: float, now: float) -> None:
        for key in res.buckets:
            b = self._buckets.get(key)
            if b is None:  # budget removed by a reload
                continue
            if self.ledger is not None:
                self.ledger.add(key, -amount)
            b.refill(now)
            if amount >= 0:
                b.give(amount)
            else:
                b.take(-amount)

    def _tokens_per_min(self, key: BucketKey) -> int | None:
        tenant, role = key
        if role is None:
            return self.limits.tenant_tokens_per_min.get(tenant)
        return self.limits.role(role).tokens_per_min

    def _bucket(self, key: BucketKey, now: float) -> TokenBucket | None:
        b = self._buckets.get(key)
        if b is None:
            tpm = self._tokens_per_min(key)
            if tpm is None:
                return None
            b = self._buckets[key] = TokenBucket.per_minute(tpm * self.fleet_share, now)
        b.refill(now)
        return b


def _remaining(buckets: list[tuple[BucketKey, TokenBucket]]) -> int | None:
    if not buckets:
        return None
    return max(0, math.floor(min(b.level for _, b in buckets)))
