"""VTC counters shared by several instances: the ledger of local service and absorbing the others'."""

from __future__ import annotations

from types import MappingProxyType

from concurproxy.control.fairness.base import FairnessParams, FairQueue
from concurproxy.control.fairness.fifo import FifoPolicy
from concurproxy.control.fairness.vtc import VTCPolicy
from concurproxy.control.types import StepInfo

PARAMS = FairnessParams(input_weight=1, output_weight=2, tenant_weights=MappingProxyType({"a": 2.0}))


def step(tenant: str, agent: str) -> StepInfo:
    return StepInfo(tenant, "r", agent, "t", est_prompt_tokens=10, max_tokens=4)


def test_service_is_recorded_weighted_once_recording_is_on() -> None:
    q: FairQueue[int] = FairQueue(VTCPolicy(PARAMS))
    assert q.shares_counters
    q.charge(step("a", "x"), 10, 5, 0.0)  # before recording: counted locally only
    assert q.take_service() == {}
    q.charge(step("a", "x"), 10, 5, 0.0)  # 20 / weight 2
    q.charge(step("b", "y"), 4, 0, 0.0)
    assert q.take_service() == {"a": 10.0, "b": 4.0}
    assert q.take_service() == {}


def test_service_absorbed_from_other_instances_reorders_the_queue() -> None:
    q: FairQueue[int] = FairQueue(VTCPolicy(PARAMS))
    q.take_service()
    q.push(1, step("a", "x"), 0.0)
    q.push(2, step("b", "y"), 0.0)
    assert q.peek(0.0) == 1  # equal counters: first backlogged first
    q.absorb_service({"a": 100.0})  # tenant a was served elsewhere in the fleet
    assert q.peek(0.0) == 2
    assert q.take_service() == {}  # absorbed service is not pushed back


def test_a_policy_without_counters_shares_nothing() -> None:
    q: FairQueue[int] = FairQueue(FifoPolicy(PARAMS))
    assert not q.shares_counters
    q.absorb_service({"a": 1.0})
    assert q.take_service() == {}
