"""Priority scheduling (vLLM's ``--scheduling-policy priority``): queue order, preemption victim, numbers."""

from __future__ import annotations

import pytest

from concurproxy.worker.engine import Engine, RequestRejected
from concurproxy.worker.engine.request import StepResult
from tests.worker.test_worker_engine import assert_capacity, make


def run(e: Engine, now: float = 0.0, until: float | None = None) -> tuple[float, list[StepResult]]:
    results: list[StepResult] = []
    while e.has_work() and (until is None or now < until):
        res = e.step(now)
        now = res.end
        results.append(res)
        assert_capacity(e)
        assert res.prefill_tokens + res.decode_tokens <= e.config.max_num_batched_tokens
    return now, results


def first_tokens(results: list[StepResult]) -> list[str]:
    seen: list[str] = []
    for r in results:
        for o in r.outputs:
            if o.req_id not in seen:
                seen.append(o.req_id)
    return seen


def test_fcfs_refuses_a_non_zero_priority_like_vllm() -> None:
    e = make()
    e.add_request("zero", list(range(4)), max_tokens=1, priority=0)
    with pytest.raises(RequestRejected, match="Priority scheduling is not enabled"):
        e.add_request("one", list(range(4)), max_tokens=1, priority=1)
    assert "one" not in e.requests and e.num_waiting == 1


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("fcfs", ["bulk1", "bulk2", "urgent"]), ("priority", ["urgent", "bulk1", "bulk2"])],
)
def test_waiting_queue_order(policy: str, expected: list[str]) -> None:
    e = make(max_num_seqs=1, scheduling_policy=policy)
    prio = policy == "priority"
    e.add_request("bulk1", list(range(8)), max_tokens=2, priority=5 if prio else 0)
    e.add_request("bulk2", list(range(10, 18)), max_tokens=2, priority=5 if prio else 0)
    e.add_request("urgent", list(range(20, 28)), max_tokens=2, priority=0)
    _, results = run(e)
    assert first_tokens(results) == expected


def test_equal_priorities_keep_arrival_order() -> None:
    e = make(max_num_seqs=1, scheduling_policy="priority")
    for k, rid in enumerate(("a", "b", "c")):
        e.add_request(rid, list(range(10 * k, 10 * k + 8)), max_tokens=1, arrival=0.0, priority=3)
    _, results = run(e)
    assert first_tokens(results) == ["a", "b", "c"]


def _low_then_high(policy: str) -> tuple[Engine, list[StepResult]]:
    """6 blocks of 4: "low" (4 prompt tokens) runs first, "high" (8) joins; both grow until KV is full."""
    e = make(num_blocks=6, max_len=24, scheduling_policy=policy)
    prio = policy == "priority"
    e.add_request("low", list(range(4)), max_tokens=12, arrival=0.0, priority=1 if prio else 0)
    first = e.step(0.0)
    e.add_request("high", list(range(50, 58)), max_tokens=12, arrival=first.end, priority=0)
    _, results = run(e, first.end)
    return e, [first, *results]


def test_priority_preempts_the_lowest_priority_even_when_it_is_older_and_already_scheduled() -> None:
    e, results = _low_then_high("priority")
    preempted = [rid for r in results for rid in r.preempted]
    assert preempted and set(preempted) == {"low"}, "only the low-priority request is ever preempted"
    # The first preemption happens while "high" (running[1]) grows and "low" (running[0]) was
    # already given its decode token in that step: "low" gives it back, only "high" runs.
    step = next(r for r in results if r.preempted)
    assert step.num_scheduled == 1 and {o.req_id for o in step.outputs} == {"high"}
    outs = {o.req_id: o for r in results for o in r.outputs if o.finished}
    assert outs["high"].timing is not None and outs["high"].timing.num_preemptions == 0
    assert outs["low"].timing is not None and outs["low"].timing.num_preemptions >= 1
    assert outs["high"].timing.finished < outs["low"].timing.finished
    assert outs["low"].output_tokens == outs["high"].output_tokens == 12
    assert e.pool.num_used == 0


def test_fcfs_preempts_the_newest_in_the_same_situation() -> None:
    _, results = _low_then_high("fcfs")
    preempted = [rid for r in results for rid in r.preempted]
    assert preempted and preempted[0] == "high"


def test_a_preempted_request_waits_behind_higher_priorities_not_at_the_front() -> None:
    e = make(num_blocks=6, max_len=24, scheduling_policy="priority")
    e.add_request("low", list(range(4)), max_tokens=12, arrival=0.0, priority=1)
    first = e.step(0.0)
    e.add_request("high", list(range(50, 58)), max_tokens=12, arrival=first.end, priority=0)
    e.add_request("later", list(range(70, 86)), max_tokens=1, arrival=first.end, priority=0)
    now = first.end
    while not (res := e.step(now)).preempted:
        now = res.end
    assert [r.req_id for r in e.waiting] == ["later", "low"]


def _light_ttft(policy: str) -> float:
    """KV held by 6 heavy requests (80 tokens each, 20 of 64 blocks) while a short light one arrives."""
    e = make(num_blocks=64, bs=4, budget=64, max_len=128, max_num_seqs=8, scheduling_policy=policy)
    heavy = 1 if policy == "priority" else 0
    for k in range(6):
        e.add_request(f"heavy{k}", list(range(100 * k, 100 * k + 40)), max_tokens=40, priority=heavy)
    now, _ = run(e, 0.0, until=0.5)
    e.add_request("light", list(range(900, 908)), max_tokens=2, arrival=now, priority=0)
    _, results = run(e, now)
    out = next(o for r in results for o in r.outputs if o.req_id == "light" and o.finished)
    assert out.timing is not None and out.timing.first_token is not None
    return out.timing.first_token - out.timing.arrival


def test_a_short_high_priority_request_skips_the_heavy_queue() -> None:
    fcfs, prio = _light_ttft("fcfs"), _light_ttft("priority")
    assert prio < 0.25 * fcfs, (fcfs, prio)


def _blocked_light(preempt_for_waiting: bool) -> tuple[Engine, list[StepResult]]:
    """Two heavy requests hold all 6 blocks and keep decoding inside them; a light one waits for blocks."""
    e = make(num_blocks=6, max_len=24, scheduling_policy="priority", preempt_for_waiting=preempt_for_waiting)
    e.add_request("heavy0", list(range(9)), max_tokens=5, arrival=0.0, priority=2)
    e.add_request("heavy1", list(range(20, 29)), max_tokens=5, arrival=0.001, priority=2)
    e.step(0.0)  # both admitted: 3 + 3 blocks, KV full
    e.add_request("light", list(range(50, 54)), max_tokens=1, arrival=e.busy_until, priority=1)
    return e, [e.step(e.busy_until)]


def test_vllm_behaviour_a_waiting_request_does_not_preempt() -> None:
    e, (res,) = _blocked_light(False)
    assert res.preempted == () and [r.req_id for r in e.waiting] == ["light"]


def test_preempt_for_waiting_takes_blocks_from_the_lowest_priority_only() -> None:
    e, (res,) = _blocked_light(True)
    # heavy1 (same priority, newer) is the victim; its decode token of this step is given back
    assert res.preempted == ("heavy1",)
    assert {o.req_id for o in res.outputs} == {"heavy0", "light"}
    assert [r.req_id for r in e.waiting] == ["heavy1"]
    assert_capacity(e)
    e2 = make(num_blocks=6, max_len=24, scheduling_policy="priority", preempt_for_waiting=True)
    e2.add_request("a", list(range(9)), max_tokens=5, priority=1)
    e2.add_request("b", list(range(20, 29)), max_tokens=5, arrival=0.001, priority=1)
    e2.step(0.0)
    e2.add_request("c", list(range(50, 54)), max_tokens=1, arrival=e2.busy_until, priority=1)
    assert e2.step(e2.busy_until).preempted == (), "an equal priority never displaces a running request"


def test_preempt_for_waiting_needs_the_priority_policy() -> None:
    with pytest.raises(ValueError, match="needs scheduling_policy priority"):
        make(preempt_for_waiting=True)
