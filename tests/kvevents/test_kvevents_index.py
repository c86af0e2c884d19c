"""The exact index: our keys recomputed from token_ids, removals, clears, sequence handling."""

from concurproxy.kvevents import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch, KvEventIndex
from concurproxy.routing.prefix import hash_tokens

TOK = list(range(1000, 1064))  # 64 tokens = 4 router blocks of 16
KEYS = hash_tokens(TOK, 16)


def batch(*events: object) -> KvEventBatch:
    return KvEventBatch(ts=0.0, events=tuple(events))  # type: ignore[arg-type]


def test_root_then_child_matches_router_keys() -> None:
    idx = KvEventIndex(block_tokens=16)
    idx.apply("r0", 0, batch(BlockStored((501, 502), None, tuple(TOK[:32]), 16)))
    idx.apply("r0", 1, batch(BlockStored((503,), 502, tuple(TOK[32:48]), 16)))
    assert idx.match(KEYS, 0.0) == {"r0": 3}
    idx.apply("r1", 0, batch(BlockStored((9,), None, tuple(TOK[:16]), 16, medium="GPU")))
    assert idx.match(KEYS, 0.0) == {"r0": 3, "r1": 1}
    assert idx.match(hash_tokens([7] * 32, 16), 0.0) == {}


def test_engine_block_spanning_several_router_blocks() -> None:
    idx = KvEventIndex(block_tokens=16)
    idx.apply("r0", None, batch(BlockStored((1, 2), None, tuple(TOK), 32)))
    assert idx.match(KEYS, 0.0) == {"r0": 4}
    idx.apply("r0", None, batch(BlockRemoved((2,))))
    assert idx.match(KEYS, 0.0) == {"r0": 2}


def test_removed_block_breaks_the_run_and_clear_empties() -> None:
    idx = KvEventIndex(block_tokens=16)
    idx.apply("r0", 0, batch(BlockStored((1, 2, 3, 4), None, tuple(TOK), 16)))
    idx.apply("r0", 1, batch(BlockRemoved((2,), "GPU")))
    assert idx.match(KEYS, 0.0) == {"r0": 1}
    idx.apply("r0", 2, batch(AllBlocksCleared()))
    assert idx.match(KEYS, 0.0) == {} and idx.blocks("r0") == 0 and idx.keys() == 0


def test_dropped_events_are_counted() -> None:
    idx = KvEventIndex(block_tokens=16)
    idx.apply(
        "r0",
        0,
        batch(
            BlockStored((1,), 999, tuple(TOK[:16]), 16),  # orphan: parent never seen
            BlockStored((2,), None, tuple(TOK[:16]), 16, medium="CPU"),
            BlockStored((3,), None, tuple(TOK[:16]), 16, group_idx=1),
            BlockStored((4,), None, tuple(TOK[:20]), 16),  # unaligned
            BlockStored((5,), None, tuple(TOK[:24]), 24),  # not a multiple of 16
        ),
    )
    assert idx.stats["r0"].dropped == {"orphan": 1, "other_tier_or_group": 2, "unaligned": 1, "block_size": 1}
    assert idx.match(KEYS, 0.0) == {}


def test_duplicate_store_and_shared_keys_are_refcounted() -> None:
    idx = KvEventIndex(block_tokens=16)
    idx.apply("r0", None, batch(BlockStored((1,), None, tuple(TOK[:16]), 16)))
    idx.apply("r0", None, batch(BlockStored((1,), None, tuple(TOK[:16]), 16)))  # duplicate
    # same tokens under another engine hash (a LoRA or salt changes the engine's hash, not ours)
    idx.apply("r0", None, batch(BlockStored((77,), None, tuple(TOK[:16]), 16)))
    idx.apply("r0", None, batch(BlockRemoved((1,))))
    assert idx.match(KEYS, 0.0) == {"r0": 1}  # still held through block 77
    idx.apply("r0", None, batch(BlockRemoved((77,))))
    assert idx.match(KEYS, 0.0) == {}


def test_sequence_duplicates_gaps_and_restarts() -> None:
    idx = KvEventIndex(block_tokens=16)
    store = batch(BlockStored((1,), None, tuple(TOK[:16]), 16))
    idx.apply("r0", 5, store)
    idx.apply("r0", 5, batch(BlockRemoved((1,))))  # duplicate seq: ignored
    assert idx.match(KEYS, 0.0) == {"r0": 1} and idx.stats["r0"].duplicates == 1
    idx.apply("r0", 9, batch())  # gap 6..8: forget the replica
    assert idx.match(KEYS, 0.0) == {} and idx.stats["r0"].gaps == 1
    idx.apply("r0", 10, store)
    idx.apply("r0", 0, batch())  # publisher restarted
    assert idx.match(KEYS, 0.0) == {} and idx.stats["r0"].restarts == 1


def test_bounded_per_replica() -> None:
    idx = KvEventIndex(block_tokens=16, max_blocks=100)
    for i in range(1000):
        idx.apply("r0", None, batch(BlockStored((i,), None, (i,) * 16, 16)))
    assert idx.blocks("r0") == 100 and idx.keys() == 100
