"""One conformance suite run over every registered fairness policy (the WaitQueue contract)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.control.fairness import (
    FairnessParams,
    FairQueue,
    UnknownFairnessPolicy,
    default_registry,
)
from concurproxy.control.types import PriorityClass, StepInfo, WaitQueue

REGISTRY = default_registry(plugins=False)
NAMES = REGISTRY.names()


def step(tenant: str = "a", role: str = "r", prompt: int = 10, prio: int = 2) -> StepInfo:
    return StepInfo(tenant, role, "ag", "t", PriorityClass(prio), est_prompt_tokens=prompt, max_tokens=5)


def make(name: str) -> FairQueue[str]:
    q: FairQueue[str] = REGISTRY.queue(name, FairnessParams())
    _typed: WaitQueue[str] = q  # structural check (mypy)
    return q


def test_builtins_registered() -> None:
    assert {"fifo", "vtc"} <= set(NAMES)
    with pytest.raises(UnknownFairnessPolicy, match="known: fifo, vtc"):
        REGISTRY.create("nope", FairnessParams())
    with pytest.raises(ValueError, match="already registered"):
        REGISTRY.register("fifo", REGISTRY.create)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_basic_contract(name: str) -> None:
    q = make(name)
    assert len(q) == 0 and q.pop(0.0) is None and q.peek(0.0) is None
    q.push("x", step(), 0.0)
    q.push("y", step(tenant="b"), 0.0)
    with pytest.raises(ValueError):
        q.push("x", step(), 0.0)
    assert len(q) == 2
    assert q.remove("x") and not q.remove("x") and not q.remove("nope")
    assert len(q) == 1
    assert q.peek(0.0) == "y" and len(q) == 1
    q.charge(step(tenant="b"), 100, 100, 0.0)  # charging a queued flow keeps the queue valid
    assert q.pop(0.0) == "y" and len(q) == 0
    q.charge(step(tenant="b"), 10, 10, 1.0)  # charging after pop is fine
    q.charge(step(tenant="zzz"), 10, 10, 1.0)  # and for a flow never seen
    q.push("x", step(), 2.0)  # an item may be queued again after it left
    assert q.pop(2.0) == "x"


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.sampled_from("abc"),
            st.sampled_from(["p", "e", "m"]),
            st.integers(0, 9000),
            st.integers(0, 3),
        ),
        st.tuples(st.just("pop")),
        st.tuples(st.just("remove"), st.integers(0, 200)),
        st.tuples(st.just("charge"), st.sampled_from("abc"), st.integers(0, 500), st.integers(0, 500)),
        st.tuples(st.just("tick"), st.floats(0, 3)),
    ),
    max_size=120,
)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=120, deadline=None)
@given(ops=ops)
def test_every_item_leaves_exactly_once(name: str, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    q = make(name)
    now, n = 0.0, 0
    queued: set[str] = set()
    for o in ops:
        if o[0] == "push":
            n += 1
            q.push(f"i{n}", step(o[1], o[2], o[3], o[4]), now)
            queued.add(f"i{n}")
        elif o[0] == "pop":
            peeked = q.peek(now)
            got = q.pop(now)
            assert got == peeked
            if queued:
                assert got in queued
                queued.discard(got)  # type: ignore[arg-type]
            else:
                assert got is None
        elif o[0] == "remove":
            item = f"i{o[1]}"
            assert q.remove(item) == (item in queued)
            queued.discard(item)
        elif o[0] == "charge":
            q.charge(step(o[1]), o[2], o[3], now)
        else:
            now += o[1]
        assert len(q) == len(queued)
    while queued:
        got = q.pop(now)
        assert got in queued
        queued.discard(got)  # type: ignore[arg-type]
    assert q.pop(now) is None and len(q) == 0
