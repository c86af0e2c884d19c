"""FairnessSync / BudgetSync bookkeeping without Redis: what is pushed, absorbed, carried, dropped."""

from __future__ import annotations

from typing import Any

from concurproxy.config.budgets import FairnessConfig, RoleConfig
from concurproxy.control.budgets import Allow, BudgetEngine, BudgetLimits
from concurproxy.control.fairness.base import FairnessParams, FairQueue
from concurproxy.control.fairness.vtc import VTCPolicy
from concurproxy.control.types import StepInfo
from concurproxy.state.config import SharedStateSettings
from concurproxy.state.fleet_sync import BudgetSync, FairnessSync


class FakeState:
    def __init__(self) -> None:
        self.settings = SharedStateSettings(instance_id="t", leader_ttl_s=3.0)
        self.calls: list[tuple[list[str], list[Any]]] = []

    async def _record(self, keys: list[str], args: list[Any], client: Any) -> None:
        self.calls.append((keys, args))

    vtc_script = budget_script = _record


def charge(q: FairQueue[int], tenant: str, tokens: int) -> None:
    q.charge(StepInfo(tenant, "r", "ag", "t", est_prompt_tokens=0, max_tokens=0), tokens, 0, 0.0)


async def test_fairness_pushes_local_service_absorbs_the_rest_and_carries_a_failed_push() -> None:
    state = FakeState()
    sync = FairnessSync(state)  # type: ignore[arg-type]
    q = sync.track(lambda _r: FairQueue(VTCPolicy(FairnessParams())))("r0")
    assert isinstance(q, FairQueue)
    charge(q, "a", 10)
    assert await sync.enqueue(None) == 1
    assert state.calls[-1] == (["{cp}:vtc:r0"], [3_600_000, "a", 10.0])
    sync.failed()  # Redis away: the 10 are pushed with the next sync
    charge(q, "a", 5)
    await sync.enqueue(None)
    assert state.calls[-1][1] == [3_600_000, "a", 15.0]
    sync.apply([["a", "40", "b", "7"]], 2)  # others served a 25 more and b 7
    assert q.state.tenants.value == {"a": 15.0 + 25.0, "b": 7.0}
    await sync.enqueue(None)
    sync.apply([["a", "3"]], 2)  # Redis restarted empty: nothing negative is absorbed
    assert q.state.tenants.value["a"] == 40.0
    await sync.enqueue(None)
    sync.apply([["a", "5"]], 2)  # counted again from the new totals
    assert q.state.tenants.value["a"] == 42.0


async def test_budget_spends_made_while_redis_is_away_are_not_charged_later() -> None:
    state = FakeState()
    limits = BudgetLimits.from_policy({"default": RoleConfig(tokens_per_min=600)}, [], FairnessConfig())
    engine = BudgetEngine(limits)
    now = [0.0]
    sync = BudgetSync(engine, state, lambda: now[0])  # type: ignore[arg-type]
    step = StepInfo("t", "x", "ag", "", est_prompt_tokens=30, max_tokens=0)
    assert isinstance(engine.check(step, 0.0), Allow)
    assert await sync.enqueue(None) == 1
    keys, args = state.calls[-1]
    assert keys == ["{cp}:budget:r:t/default"] and args == [600_000, 600, 600 / 60_000, 30.0]
    sync.failed()
    assert isinstance(engine.check(step, 0.0), Allow)
    await sync.enqueue(None)
    assert state.calls[-1][1][-1] == 30.0  # the first 30 were dropped with the failed sync
    sync.apply([["500"]], 3)
    assert engine.fleet_share == 1 / 3
    assert engine.bucket_level("t", "default", 0.0) == 500 / 3
    now[0] = 1.0
    sync.apply([["500"]], 1)  # a peer missing from one heartbeat still counts for leader_ttl_s
    assert engine.fleet_share == 1 / 3
    now[0] = 4.0
    sync.apply([["500"]], 1)
    assert engine.fleet_share == 1.0
    assert sync.view()["budget_levels"] == {"t/default": 500.0}
