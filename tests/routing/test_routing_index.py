import time
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.routing.index import PrefixIndex
from concurproxy.routing.prefix import hash_tokens


def chain(seed: int, n: int) -> list[int]:
    return hash_tokens([seed] * 4 + list(range(n * 4 - 4)), 4)


def test_match_longest_leading_run_per_replica() -> None:
    idx = PrefixIndex(1000)
    c = chain(1, 10)
    idx.record("a", c[:6], now=0.0)
    idx.record("b", c[:2], now=0.0)
    idx.record("c", chain(2, 10), now=0.0)
    assert idx.match(c, now=1.0) == {"a": 6, "b": 2}
    assert idx.match(c[:4], now=1.0) == {"a": 4, "b": 2}
    assert idx.match([], now=1.0) == {}


def test_lru_evicts_leaves_first_so_matches_stay_prefix_runs() -> None:
    idx = PrefixIndex(8)
    c = chain(1, 6)
    idx.record("a", c, now=0.0)
    idx.record("a", chain(2, 4), now=1.0)  # 10 entries > 8: two oldest (c's leaves) go
    assert idx.blocks("a") == 8
    assert idx.match(c, now=2.0) == {"a": 4}


def test_chain_longer_than_index_keeps_its_head() -> None:
    idx = PrefixIndex(5)
    c = chain(1, 9)
    idx.record("a", c, now=0.0)
    assert idx.match(c, now=0.0) == {"a": 5}


def test_max_age() -> None:
    idx = PrefixIndex(100, max_age_s=10.0)
    c = chain(1, 4)
    idx.record("a", c, now=0.0)
    idx.record("a", c[:2], now=8.0)
    assert idx.match(c, now=9.0) == {"a": 4}
    assert idx.match(c, now=15.0) == {"a": 2}
    assert idx.match(c, now=30.0) == {}


def test_forget_replica() -> None:
    idx = PrefixIndex(100)
    c = chain(1, 4)
    idx.record("a", c, 0.0)
    idx.record("b", c, 0.0)
    idx.forget_replica("a")
    assert idx.match(c, 0.0) == {"b": 4}


def test_bounded_under_a_million_distinct_prefixes_and_fast() -> None:
    cap = 20_000
    idx = PrefixIndex(cap)
    replicas = ["r0", "r1", "r2", "r3"]
    n = 250_000  # 250k chains x 4 blocks = 1M distinct block keys
    t0 = time.perf_counter()
    for i in range(n):
        k = i * 4
        idx.record(replicas[i & 3], [k + 1, k + 2, k + 3, k + 4], float(i))
    dt = time.perf_counter() - t0
    assert len(idx) == 4 * cap
    assert all(idx.blocks(r) == cap for r in replicas)
    assert dt < 20.0  # ~1.5 s measured; 1.5 µs per block recorded
    # the newest chains still match, the oldest are gone
    last = (n - 1) * 4
    assert idx.match([last + 1, last + 2, last + 3, last + 4], 0.0) == {"r3": 4}
    assert idx.match([1, 2, 3, 4], 0.0) == {}


def test_match_speed() -> None:
    idx = PrefixIndex(200_000)
    chains = [chain(s, 256) for s in range(8)]
    for s, c in enumerate(chains):
        idx.record(f"r{s % 4}", c, 0.0)
    t0 = time.perf_counter()
    for _ in range(2000):
        idx.match(chains[5], 0.0)
    per = (time.perf_counter() - t0) / 2000
    assert idx.match(chains[5], 0.0) == {"r1": 256}
    assert per < 1e-3  # ~10 µs measured for 4 replicas x 256 blocks


def _leading_run(held: Callable[[int], bool], hashes: list[int]) -> int:
    n = 0
    while n < len(hashes) and held(hashes[n]):
        n += 1
    return n


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(["r1", "r2"]), st.integers(0, 3), st.integers(0, 12)), max_size=30),
    max_blocks=st.integers(1, 20),
    max_age=st.sampled_from([None, 3.0]),
)
def test_match_equals_the_leading_run_scan(
    ops: list[tuple[str, int, int]], max_blocks: int, max_age: float | None
) -> None:
    """Chains share roots (a branch id picks one of four prompts); the fast paths (whole chain
    held, binary search) give the same answer as scanning the leading run key by key."""
    idx = PrefixIndex(max_blocks, max_age_s=max_age)
    chains = [hash_tokens(list(range(b * 100, b * 100 + 12)), 1) for b in range(2)]
    chains += [chains[0][:5] + hash_tokens(list(range(7, 14)), 1, parent=chains[0][4]) for _ in range(2)]
    for now, (replica, branch, length) in enumerate(ops):
        idx.record(replica, chains[branch][:length], float(now))
        t = float(now) + 1.0
        for chain in chains:
            for r in ("r1", "r2", "r3"):
                lru = idx._lru.get(r, {})
                held = lambda h: h in lru and (max_age is None or t - lru[h] <= max_age)  # noqa: B023, E731
                scan = _leading_run(held, chain)
                assert idx.match_one(r, chain, t) == scan
                assert idx.match(chain, t).get(r, 0) == scan
