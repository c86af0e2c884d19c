"""Block pool: table tests and a hypothesis property over random operation sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.worker.engine import BlockPool, OutOfBlocks
from concurproxy.worker.engine.hashing import ROOT_HASH, block_hash, block_hashes


def test_allocate_free_and_lru_eviction_order() -> None:
    pool = BlockPool(4)
    a = pool.allocate(2)
    b = pool.allocate(2)
    assert pool.num_free == 0 and pool.usage() == 1.0
    with pytest.raises(OutOfBlocks):
        pool.allocate(1)
    pool.cache(a[0], 11)
    pool.cache(a[1], 12)
    pool.free(reversed(a))  # tail first: a[1] is evicted before a[0]
    assert pool.num_free == 2 and pool.lookup([11, 12]) == a
    (c,) = pool.allocate(1)
    assert c == a[1] and pool.evictions == 1
    assert pool.lookup([11, 12]) == [a[0]]
    pool.free(b)  # uncached blocks go to the head: reused before cached ones
    assert pool.allocate(2) == list(reversed(b))
    assert pool.lookup([11]) == [a[0]]  # the cached block survived
    pool.check()


def test_touch_takes_cached_free_blocks_out_of_the_free_queue() -> None:
    pool = BlockPool(3)
    (x,) = pool.allocate(1)
    pool.cache(x, 7)
    pool.free([x])
    assert pool.is_free(x)
    pool.touch(pool.lookup([7]))
    assert not pool.is_free(x) and pool.ref_count(x) == 1 and pool.num_free == 2
    pool.touch([x])  # shared by a second request
    pool.free([x])
    assert pool.ref_count(x) == 1
    pool.check()


def test_double_free_is_an_error() -> None:
    pool = BlockPool(2)
    (x,) = pool.allocate(1)
    pool.free([x])
    with pytest.raises(ValueError):
        pool.free([x])


def test_chained_hashes_depend_on_the_whole_prefix() -> None:
    a = block_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    b = block_hashes([0, 2, 3, 4, 5, 6, 7, 8], 4)
    assert len(a) == 2 and len(b) == 2  # partial last block has no hash
    assert a[0] != b[0] and a[1] != b[1]  # same second block, different parent
    assert a[0] == block_hash(ROOT_HASH, [1, 2, 3, 4])
    assert block_hashes([1, 2, 3, 4, 5, 6, 7, 8], 4) == a


ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(1, 4)),
        st.tuples(st.just("free"), st.integers(0, 20)),
        st.tuples(st.just("cache"), st.integers(0, 20), st.integers(0, 6)),
        st.tuples(st.just("hit"), st.lists(st.integers(0, 6), max_size=4)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(n_blocks=st.integers(1, 10), seq=ops)
def test_pool_invariants_hold_under_any_operation_sequence(n_blocks: int, seq: list[tuple]) -> None:
    pool = BlockPool(n_blocks)
    held: list[int] = []  # one entry per reference we hold
    for op in seq:
        if op[0] == "alloc":
            n = op[1]
            if n > pool.num_free:
                with pytest.raises(OutOfBlocks):
                    pool.allocate(n)
                continue
            before_in_use = {b for b in range(n_blocks) if pool.ref_count(b) > 0}
            got = pool.allocate(n)
            assert len(set(got)) == n and not (set(got) & before_in_use), "handed out a block in use"
            held += got
        elif op[0] == "free" and held:
            pool.free([held.pop(op[1] % len(held))])
        elif op[0] == "cache" and held:
            pool.cache(held[op[1] % len(held)], op[2])
        elif op[0] == "hit":
            hit = pool.lookup(op[1])
            for h, b in zip(op[1], hit, strict=False):
                assert pool.block_hash(b) == h, "a hit on a block that holds other content"
            pool.touch(hit)
            held += hit
        pool.check()
        assert pool.num_used == len(set(held)) <= n_blocks
        assert all(pool.ref_count(b) == held.count(b) for b in set(held))
