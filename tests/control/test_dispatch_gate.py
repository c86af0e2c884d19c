"""Cost-aware dispatch (`PrefillGate`): long prefills wait for control steps, one at a time, bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.config.budgets import FairnessConfig, Priority
from concurproxy.control.dispatch import DispatchParams, PrefillGate
from concurproxy.control.types import PriorityClass, StepInfo

P = DispatchParams(long_prefill_tokens=2048, protect_priority=PriorityClass.high, long_in_prefill=1, max_hold_s=1.0)


def step(prompt: int, resident: int = 0, priority: PriorityClass = PriorityClass.normal) -> StepInfo:
    return StepInfo("t", "r", "a", "k", priority=priority, est_prompt_tokens=prompt, resident_prefix_tokens=resident)


CONTROL = step(300, priority=PriorityClass.high)
LONG = step(12_000)


def test_long_means_uncached_tokens_above_the_threshold() -> None:
    assert P.is_long(step(4000))
    assert not P.is_long(step(4000, resident=3000))  # 1000 uncached: a prefix-cached step is short
    assert not P.is_long(step(2048))
    assert P.is_protected(CONTROL)
    assert not P.is_protected(step(300))  # normal priority: not a control step
    assert not P.is_protected(step(5000, priority=PriorityClass.critical))  # long steps are never protected


def test_a_long_step_waits_while_a_control_step_runs_and_starts_when_it_ends() -> None:
    g = PrefillGate(P)
    assert g.start(1, CONTROL, 0.0)
    assert not g.start(2, LONG, 0.1)
    assert g.start(3, step(1000), 0.1)  # short normal steps never wait
    assert g.first_token(1) == []  # a control step protects its whole step, not only its prefill
    assert g.end(1) == [2]
    assert (g.waiting(), g.held, g.forced) == (0, 1, 0)


def test_one_long_prefill_at_a_time_released_by_first_token() -> None:
    g = PrefillGate(P)
    assert g.start(1, LONG, 0.0)
    assert not g.start(2, LONG, 0.0)
    assert not g.start(3, LONG, 0.0)
    assert g.first_token(1) == [2]  # prefill done: the next long one starts, in arrival order
    assert g.end(2) == [3]  # a step that ends before a first token (non-streamed, error) ends its prefill too
    assert g.end(1) == []


def test_the_wait_is_bounded_by_max_hold() -> None:
    g = PrefillGate(P)
    g.start(1, CONTROL, 0.0)
    assert not g.start(2, LONG, 0.2)
    assert not g.start(3, LONG, 0.5)
    assert g.deadline() == 1.2
    assert g.expire(1.1) == []
    assert g.expire(1.2) == [2]  # starts although the control step still runs
    assert g.deadline() == 1.5
    assert g.expire(1.5) == [3]
    assert (g.waiting(), g.forced, g.deadline()) == (0, 2, None)


def test_a_waiter_that_gives_up_leaves_no_trace() -> None:
    g = PrefillGate(P)
    g.start(1, CONTROL, 0.0)
    g.start(2, LONG, 0.0)
    assert g.end(2) == []  # cancelled while held
    assert g.end(1) == []
    assert g.start(3, LONG, 2.0)


def test_params_from_the_policy() -> None:
    d = DispatchParams.from_policy(FairnessConfig())
    assert (d.long_prefill_tokens, d.protect_priority, d.long_in_prefill, d.max_hold_s) == (
        4096, PriorityClass.high, 1, 1.0
    )  # fmt: skip
    off = DispatchParams.from_policy(FairnessConfig(protect_priority=None, long_prefills_per_replica=0))
    assert not off.enabled
    assert DispatchParams.from_policy(FairnessConfig(protect_priority=Priority.critical)).protect_priority == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["control", "long", "short", "first", "end", "tick"]), st.integers(0, 7))))
def test_no_long_step_waits_past_the_bound_and_none_is_lost(ops: list[tuple[str, int]]) -> None:
    """Property: driving the gate as the shell does (expire when the clock moves), no held step
    waits max_hold_s, and the gate's waiting count is exactly the held steps still alive."""
    g, now, since, started = PrefillGate(P), 0.0, {}, set()
    live: set[int] = set()
    key = 0
    for op, arg in ops:
        now += arg * 0.1
        for k in g.expire(now):
            started.add(k)
        if op in ("control", "long", "short"):
            key += 1
            s = {"control": CONTROL, "long": LONG, "short": step(100)}[op]
            live.add(key)
            if g.start(key, s, now):
                started.add(key)
            else:
                since[key] = now
        elif live:
            k = sorted(live)[arg % len(live)]
            if op == "first" and k in started:
                started.update(g.first_token(k))
            elif op == "end":
                live.discard(k)
                started.discard(k)
                started.update(g.end(k))
        for k, t in since.items():
            if k in live and k not in started:
                assert now - t < P.max_hold_s
    assert g.waiting() == len([k for k in live if k not in started])
