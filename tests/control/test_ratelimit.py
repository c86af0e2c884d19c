from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from concurproxy.control.ratelimit import KeyedRateLimiter


def test_burst_then_rate():
    rl = KeyedRateLimiter(rate=2.0, burst=3)
    assert [rl.allow("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.allow("k", 0.0) == 0.5  # next token in 1/2 s
    assert rl.allow("k", 0.5) == 0.0
    assert rl.allow("other", 0.5) == 0.0  # keys are independent


def test_idle_keys_are_pruned():
    rl = KeyedRateLimiter(rate=1.0, burst=1, max_keys=10)
    for i in range(100):
        rl.allow(f"k{i}", float(i))
    assert len(rl) <= 10


@given(st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps):
    rl = KeyedRateLimiter(rate=3.0, burst=5)
    now, admitted = 0.0, 0
    for g in gaps:
        now += g
        admitted += rl.allow("k", now) == 0.0
    assert admitted <= 5 + 3.0 * now + 1e-9


def test_memory_is_bounded_with_200k_keys_none_of_them_idle():
    """Issue 21 item 9: 200k addresses within one refill period (no bucket full, so the old
    prune freed nothing and the table grew without bound, each new key scanning all of it)."""
    rl = KeyedRateLimiter(rate=1.0, burst=5, max_keys=1000)
    for i in range(200_000):
        assert rl.allow(f"ip:{i}", 0.0) == 0.0  # a new key always starts with a full bucket
    assert len(rl) == 1000


class _CountingBuckets(OrderedDict[str, Any]):
    """The limiter's bucket table, counting every bucket it reads, writes, evicts or iterates over."""

    touched = 0

    def __getitem__(self, key: str) -> Any:
        self.touched += 1
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.touched += 1
        return super().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.touched += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.touched += 1
        super().__delitem__(key)

    def popitem(self, last: bool = True) -> tuple[str, Any]:
        self.touched += 1
        return super().popitem(last)

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        for kv in super().items():
            self.touched += 1
            yield kv


def _touched_per_new_key(table_size: int) -> float:
    rl = KeyedRateLimiter(rate=1.0, burst=5, max_keys=table_size)
    for i in range(table_size):  # fill the table to its cap
        rl.allow(f"old:{i}", 0.0)
    counting = _CountingBuckets(rl._buckets)
    counting.touched = 0  # copying the table in is not the limiter's work
    rl._buckets = counting
    for i in range(100):
        rl.allow(f"new:{i}", 0.0)
    return counting.touched / 100


def test_the_work_per_new_key_does_not_grow_with_the_table():
    small, large = _touched_per_new_key(100), _touched_per_new_key(20_000)
    assert large == small
    assert small <= 4  # a lookup, an insert, one eviction


def test_the_least_recently_used_key_is_evicted_and_comes_back_with_a_full_bucket():
    rl = KeyedRateLimiter(rate=1.0, burst=1, max_keys=2)
    assert rl.allow("a", 0.0) == 0.0
    assert rl.allow("b", 0.0) == 0.0
    assert rl.allow("a", 0.0) == 1.0  # throttled, and now the most recent
    assert rl.allow("c", 0.0) == 0.0  # evicts b, not a
    assert rl.allow("a", 0.0) == 1.0  # a kept its empty bucket
    assert rl.allow("b", 0.0) == 0.0  # b was forgotten: a full bucket again (evicts c)


class _Reference:
    """The token bucket per key with no table bound: what the limiter must do for every key it keeps."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> float:
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


@given(
    rate=st.floats(min_value=0.1, max_value=50),
    burst=st.integers(min_value=1, max_value=20),
    max_keys=st.integers(min_value=1, max_value=8),
    calls=st.lists(st.tuples(st.integers(0, 11), st.floats(min_value=0, max_value=2)), max_size=300),
)
def test_keys_that_stay_in_the_table_are_limited_exactly_as_without_a_bound(rate, burst, max_keys, calls):
    rl = KeyedRateLimiter(rate, burst, max_keys=max_keys)
    ref = _Reference(rate, float(burst))
    now = 0.0
    for key_no, gap in calls:
        now += gap
        key = f"k{key_no}"
        if key not in rl:  # new or forgotten: it starts again, as a first request would
            ref.buckets.pop(key, None)
        assert rl.allow(key, now) == ref.allow(key, now)
        assert len(rl) <= max_keys


def test_the_policy_sets_the_table_bound():
    from concurproxy.config.models import Policy
    from concurproxy.server.components import Components

    policy = Policy.model_validate({"limits": {"requests_per_s": 5, "rate_limit_max_keys": 7}})
    limiter = Components.make_rate_limiter(policy)
    assert limiter is not None and limiter.max_keys == 7
    assert Policy().limits.rate_limit_max_keys == 100_000  # the documented default
