"""KV headroom reservation (`KvReserve`): other steps keep room free for control steps, bounded, FIFO."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.config.budgets import FairnessConfig
from concurproxy.control.dispatch import DispatchParams, KvReserve
from concurproxy.control.types import PriorityClass, StepInfo

# capacity 10,000 KV tokens, 20% reserved: other steps may hold 8,000 while control steps are about
P = DispatchParams(kv_reserve=0.2, reserve_idle_s=5.0, reserve_max_hold_s=10.0)
CAP = 10_000


def step(prompt: int, out: int = 0, priority: PriorityClass = PriorityClass.normal) -> StepInfo:
    return StepInfo("t", "r", "a", "k", priority=priority, est_prompt_tokens=prompt, max_tokens=out)


CONTROL = step(300, 16, PriorityClass.high)


def test_footprint_is_prompt_plus_max_tokens_and_the_limit_is_capacity_less_the_reserve() -> None:
    r = KvReserve(P)
    assert r.footprint(step(5000, 128)) == 5128
    assert r.limit() is None  # capacity not known yet
    r.start(1, step(1), 0.0, CAP)
    assert r.limit() == 8000


def test_while_a_control_step_is_about_other_steps_keep_within_the_limit() -> None:
    r = KvReserve(P)
    assert r.start(1, CONTROL, 0.0, CAP)  # control steps always start
    assert r.start(2, step(5000, 128), 0.1, CAP)  # 5,128 <= 8,000
    assert not r.start(3, step(3000, 128), 0.2, CAP)  # 5,128 + 3,128 > 8,000: waits
    assert not r.start(4, step(100), 0.3, CAP)  # fits, but nobody passes the head (FIFO)
    assert (r.waiting(), r.held, r.in_flight_tokens()) == (2, 2, 5128)
    assert r.end(1, 1.0) == []  # the control step ending does not lift the reserve at once
    assert r.end(2, 2.0) == [3, 4]  # room again: both start, in arrival order
    assert r.in_flight_tokens() == 3228


def test_no_control_step_for_idle_s_lifts_the_reserve() -> None:
    r = KvReserve(P)
    r.start(1, CONTROL, 0.0, CAP)
    r.end(1, 1.0)
    r.start(2, step(7000), 1.5, CAP)
    assert not r.start(3, step(2000), 2.0, CAP)
    assert r.deadline() == 6.0  # the reserve lapses 5 s after the last control step
    assert r.expire(5.9) == []
    assert r.expire(6.0) == [3]
    assert r.forced == 0  # released because the reserve lapsed, not by the bound
    assert r.start(4, step(9000), 7.0, CAP)  # nothing is held while no control step is about
    assert r.in_flight_tokens() == 18_000


def test_a_step_bigger_than_the_limit_runs_alone_and_unknown_capacity_holds_nothing() -> None:
    r = KvReserve(P)
    r.start(1, CONTROL, 0.0, CAP)
    assert r.start(2, step(9500), 0.1, CAP)  # nothing else in flight: it runs (else it never could)
    assert not r.start(3, step(10), 0.2, CAP)
    assert r.end(2, 0.3) == [3]
    blind = KvReserve(P)
    blind.start(1, CONTROL, 0.0, None)
    assert blind.start(2, step(9000), 0.0, None) and blind.start(3, step(9000), 0.0, None)


def test_the_wait_is_bounded_and_a_waiter_that_gives_up_leaves_no_trace() -> None:
    r = KvReserve(P)
    r.start(1, CONTROL, 0.0, CAP)
    r.start(2, step(8000), 0.0, CAP)
    assert not r.start(3, step(5000), 1.0, CAP)
    assert not r.start(4, step(5000), 2.0, CAP)
    assert r.deadline() == 11.0  # a control step in flight: only the bound
    assert r.expire(11.0) == [3]
    assert (r.forced, r.waiting()) == (1, 1)
    assert r.end(4, 11.5) == []  # cancelled while held
    assert (r.waiting(), r.deadline(), r.in_flight_tokens()) == (0, None, 13_000)


def test_params_from_the_policy() -> None:
    d = DispatchParams.from_policy(FairnessConfig(kv_reserve=0.15, kv_reserve_idle_s=3, kv_reserve_max_hold_s=20))
    assert (d.kv_reserve, d.reserve_idle_s, d.reserve_max_hold_s, d.reserve_enabled) == (0.15, 3, 20, True)
    assert not DispatchParams.from_policy(FairnessConfig()).reserve_enabled  # off by default
    assert not DispatchParams.from_policy(FairnessConfig(kv_reserve=0.1, protect_priority=None)).reserve_enabled


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["control", "big", "small", "end", "tick"]), st.integers(0, 30)),
        max_size=60,
    )
)
def test_bounded_wait_exact_accounting_and_the_limit_holds_for_unforced_starts(ops: list[tuple[str, int]]) -> None:
    """Property, driving the reserve as the shell does (expire when the clock moves): no step waits
    reserve_max_hold_s; the footprint in flight is exactly that of the live started steps; and a step
    that starts while a control step runs, neither forced nor alone, keeps within the limit."""
    r, now, key = KvReserve(P), 0.0, 0
    live: dict[int, StepInfo] = {}
    started: set[int] = set()
    since: dict[int, float] = {}

    def started_now(keys: list[int], forced_before: int) -> None:
        started.update(keys)
        control_running = any(live[k] is CONTROL for k in started)
        if r.forced == forced_before and control_running and any(live[k] is not CONTROL for k in keys):
            others = [k for k in started if live[k] is not CONTROL]
            assert len(others) == 1 or r.in_flight_tokens() <= 8000

    for op, arg in ops:
        now += arg * 0.1
        f = r.forced
        started_now(r.expire(now), f)
        if op in ("control", "big", "small"):
            key += 1
            s = {"control": CONTROL, "big": step(6000, 128), "small": step(900, 64)}[op]
            live[key] = s
            f = r.forced
            if r.start(key, s, now, CAP):
                started_now([key], f)
            else:
                since[key] = now
        elif op == "end" and live:
            k = sorted(live)[arg % len(live)]
            del live[k]
            started.discard(k)
            f = r.forced
            started_now(r.end(k, now), f)
        for k, t in since.items():
            if k in live and k not in started:
                assert now - t < P.reserve_max_hold_s
        expect = sum(r.footprint(live[k]) for k in started if live[k].priority > PriorityClass.high)
        assert r.in_flight_tokens() == expect
    assert r.waiting() == len([k for k in live if k not in started])
