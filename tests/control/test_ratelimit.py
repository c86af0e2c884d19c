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
    assert len(rl) <= 11


@given(st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps):
    rl = KeyedRateLimiter(rate=3.0, burst=5)
    now, admitted = 0.0, 0
    for g in gaps:
        now += g
        admitted += rl.allow("k", now) == 0.0
    assert admitted <= 5 + 3.0 * now + 1e-9
