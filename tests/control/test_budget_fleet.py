"""Budgets shared by N instances (control/budgets/fleet.py): the consistency bound in virtual time."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from concurproxy.config.budgets import FairnessConfig, RoleConfig
from concurproxy.control.budgets import Allow, BudgetEngine, BudgetLimits, TokenBucket
from concurproxy.control.budgets.fleet import SpendLedger, apply_share
from concurproxy.control.types import StepInfo

TPM = 6000.0
RATE = TPM / 60
COST = 50
LIMITS = BudgetLimits.from_policy(
    {"default": RoleConfig(tokens_per_min=int(TPM))}, [], FairnessConfig(input_weight=1, output_weight=0)
)
STEP = StepInfo("t", "default", "a", "", est_prompt_tokens=COST, max_tokens=0)
KEY = ("t", "default")


@dataclass
class FleetBucket:
    """What the BUDGETS Lua script does to one key (state/scripts.py)."""

    level: float = TPM
    t: float = 0.0

    def sync(self, spent: float, now: float) -> float:
        self.level = min(TPM, self.level + max(0.0, now - self.t) * RATE) - spent
        self.t = now
        return self.level


def simulate(n: int, seed: int, seconds: float, hot_only: bool = False) -> tuple[float, float]:
    """n instances, syncs every 0.5 s out of phase, clients as greedy as the budget lets them.

    Returns (worst excess over one bucket's envelope C + r*t, total spent)."""
    rng = random.Random(seed)
    engines = [BudgetEngine(LIMITS) for _ in range(n)]
    for e in engines:
        e.share_with_fleet()
        e.fleet_share = 1 / n
    next_sync = [rng.uniform(0, 0.5) for _ in range(n)]
    fleet, spent, worst, now = FleetBucket(), 0.0, 0.0, 0.0
    while now < seconds:
        for e in engines[:1] if hot_only else engines:
            while isinstance(d := e.check(STEP, now), Allow):
                e.settle(d.reservation, COST, 0, now)
                spent += COST
        worst = max(worst, spent - (TPM + RATE * now))
        for i, e in enumerate(engines):
            if now >= next_sync[i]:
                next_sync[i] += 0.5
                assert e.ledger is not None
                level = fleet.sync(e.ledger.take().get(KEY, 0.0), now)
                e.apply_fleet_level(KEY, level, 1 / n, now)
        now += 0.02
    return worst, spent


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fleet_overshoot_stays_within_the_documented_bound_and_the_rate_is_exact(n: int, seed: int) -> None:
    seconds = 60.0
    worst, spent = simulate(n, seed, seconds)
    assert worst <= (n - 1) / n * TPM + n * COST  # the bound in fleet.py's docstring
    assert spent <= TPM + RATE * seconds + (n - 1) / n * TPM + n * COST
    assert spent >= 0.97 * (TPM + RATE * seconds)  # and the fleet is not starved


@pytest.mark.parametrize("n", [2, 3])
def test_one_hot_instance_still_gets_the_whole_rate(n: int) -> None:
    seconds = 60.0
    worst, spent = simulate(n, 7, seconds, hot_only=True)
    assert worst <= 0
    assert spent >= 0.97 * (TPM + RATE * seconds)


def test_unshared_instances_would_each_spend_a_whole_bucket() -> None:
    """The baseline the fleet sync fixes: n independent engines allow n buckets."""
    engines = [BudgetEngine(LIMITS) for _ in range(3)]
    spent = 0
    for e in engines:
        while isinstance(d := e.check(STEP, 0.0), Allow):
            e.settle(d.reservation, COST, 0, 0.0)
            spent += COST
    assert spent == 3 * TPM


def test_ledger_records_net_spends_and_share_resets_the_bucket() -> None:
    e = BudgetEngine(LIMITS)
    ledger = e.share_with_fleet()
    e.fleet_share = 0.5
    d = e.check(STEP, 0.0)
    assert isinstance(d, Allow)
    assert e.budgeted() == {KEY: int(TPM)}
    assert e.bucket_level("t", "default", 0.0) == TPM / 2 - COST  # a new bucket starts full at its share
    e.settle(d.reservation, 20, 0, 0.0)  # 30 back
    assert ledger.take() == {KEY: 20.0}
    d2 = e.check(STEP, 0.0)
    assert isinstance(d2, Allow)
    e.apply_fleet_level(KEY, 1000.0, 0.25, 1.0)  # the sync ran before d2's spend reached the ledger
    assert e.bucket_level("t", "default", 1.0) == 250.0 - COST
    assert e.refund(d2.reservation, 1.0)
    assert ledger.take() == {KEY: 0.0}


def test_apply_share_of_a_fleet_in_debt_is_a_local_debt_repaid_at_the_share_rate() -> None:
    b = TokenBucket.per_minute(TPM, 0.0)
    apply_share(b, TPM, -600.0, 1 / 3, pending=10.0, now=5.0)
    assert (b.capacity, b.rate, b.level, b.updated) == pytest.approx((TPM / 3, RATE / 3, -210.0, 5.0))
    b.refill(5.0 + 6.0)  # 6 s at r/3: the whole fleet debt is repaid in 600 / r = 6 s
    assert b.level == pytest.approx(-10.0)


def test_spend_ledger_take_resets() -> None:
    ledger = SpendLedger()
    ledger.add(KEY, 5)
    ledger.add(KEY, -2)
    assert ledger.pending(KEY) == 3
    assert ledger.take() == {KEY: 3}
    assert ledger.take() == {}
