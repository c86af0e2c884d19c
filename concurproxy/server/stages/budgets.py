"""Budget stage: reserve before the step, settle from the reported usage after it.

Adapter between the request path and `concurproxy.control.budgets.BudgetEngine`
(pure). A refused step raises an error (429/413 with the remaining-budget
headers, in the API's shape); a clamped output limit is written into the body
through the step's codec (``max_tokens``, ``max_output_tokens``, ...) and
announced in ``x-concurproxy-max-tokens-clamped``. Settlement happens once per
step in ``settle``, which the pipeline calls before any listener (so what the
listeners read, ``budget_charged``, is final): with the upstream's usage when
known, else with what was estimated as served, or a full refund when nothing
was served.
"""

from __future__ import annotations

from concurproxy.control.budgets import Allow, BudgetEngine, BudgetLimits, budget_headers
from concurproxy.errors import ProxyError
from concurproxy.server.step import StepContext, StepOutcome


class BudgetStage:
    def __init__(self, engine: BudgetEngine) -> None:
        self.engine = engine
        self._free: dict[tuple[str, str], bool] = {}  # (tenant, role) -> no rule applies

    def reconfigure(self, limits: BudgetLimits) -> None:
        self.engine.reconfigure(limits)
        self._free.clear()

    def _unlimited(self, tenant: str, role: str) -> bool:
        """True when no budget rule can apply to (tenant, role): the step skips the engine entirely."""
        key = (tenant, role)
        free = self._free.get(key)
        if free is None:
            lim = self.engine.limits
            rl = lim.role(lim.effective_role(role))
            free = (
                rl.tokens_per_min is None
                and rl.max_prompt_tokens is None
                and rl.max_output_tokens is None
                and rl.max_steps_per_task is None
                and tenant not in lim.tenant_tokens_per_min
            )
            if len(self._free) < 100_000:
                self._free[key] = free
        return free

    def check(self, ctx: StepContext, now: float) -> None:
        if self._unlimited(ctx.step.tenant, ctx.step.role):
            return
        decision = self.engine.check(ctx.step, now)
        headers = budget_headers(decision)
        if not isinstance(decision, Allow):
            retry = decision.retry_after_s
            headers.pop("Retry-After", None)  # ProxyError renders it from retry_after_s
            ctx.budget_denied = decision.reason.value
            raise ProxyError(
                decision.http_status,
                decision.reason.value,
                decision.message,
                retry_after_s=retry,
                headers={**ctx.extra_headers, **headers},
            )
        ctx.budget_reservation = decision.reservation
        ctx.extra_headers.update(headers)
        if decision.clamped_max_tokens is not None:
            ctx.codec.clamp_output(ctx.body, decision.clamped_max_tokens)
            ctx.body_modified = True

    def settle(self, ctx: StepContext, now: float) -> None:
        res = ctx.budget_reservation
        if res is None:
            return
        ctx.budget_reservation = None
        ctx.budget_charged = True
        if ctx.usage is not None:
            self.engine.settle(res, ctx.usage.prompt_tokens, ctx.usage.completion_tokens, now)
        elif ctx.outcome is StepOutcome.success:
            # An engine that reports no usage: charge the estimate (prompt + what was allowed).
            self.engine.settle(res, ctx.step.est_prompt_tokens, ctx.step.max_tokens, now)
        elif ctx.streamed_chunks:
            # A stream cut short before its usage chunk: one content chunk ≈ one token.
            self.engine.settle(res, ctx.step.est_prompt_tokens, ctx.streamed_chunks, now)
        else:
            self.engine.refund(res, now)
            ctx.budget_charged = False
