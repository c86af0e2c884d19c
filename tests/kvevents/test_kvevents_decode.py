"""Decoder against hand-built payloads of the shapes vLLM versions put on the wire."""

import msgpack
import pytest

from concurproxy.kvevents import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvDecodeError,
    decode_frames,
    decode_payload,
)

TOK = list(range(100, 132))
U64 = 0xFFFFFFFFFFFFFFFF


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_v08_legacy_arrays_without_rank_or_medium() -> None:
    b = decode_payload(pack([1.5, [["BlockStored", [11, 12], None, TOK, 16, None]]]))
    assert b.ts == 1.5 and b.data_parallel_rank is None and not b.skipped
    assert b.events == (BlockStored((11, 12), None, tuple(TOK), 16),)


def test_v010_arrays_with_medium_rank_removed_and_cleared() -> None:
    payload = pack(
        [
            2.0,
            [
                ["BlockStored", [U64], 11, TOK[:16], 16, None, "GPU"],
                ["BlockRemoved", [11], "GPU"],
                ["AllBlocksCleared"],
            ],
            0,
        ]
    )
    b = decode_payload(payload)
    assert b.data_parallel_rank == 0
    assert b.events == (
        BlockStored((U64,), 11, tuple(TOK[:16]), 16, None, "GPU"),
        BlockRemoved((11,), "GPU"),
        AllBlocksCleared(),
    )


def test_newer_arrays_with_trailing_fields_we_do_not_know() -> None:
    ev = [
        "BlockStored",
        [1],
        None,
        TOK[:16],
        16,
        3,
        "GPU",
        "adapter",
        [["salt"]],
        0,
        "full_attention",
        None,
        "LOCAL",
        "future-field",
    ]
    rm = ["BlockRemoved", [1], "GPU", 0, "LOCAL", "x"]
    b = decode_payload(pack([3.0, [ev, rm], 1]))
    assert b.events[0] == BlockStored((1,), None, tuple(TOK[:16]), 16, 3, "GPU", "adapter", 0)
    assert b.events[1] == BlockRemoved((1,), "GPU", 0)


def test_map_layout_events_and_bytes_hashes() -> None:
    digest = bytes(range(32))
    ev = {
        "type": "BlockStored",
        "block_hashes": [digest],
        "parent_block_hash": None,
        "token_ids": TOK[:16],
        "block_size": 16,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
        "group_idx": 0,
    }
    b = decode_payload(
        pack([4.0, [ev, {"type": "BlockRemoved", "block_hashes": [digest]}, {"type": "AllBlocksCleared"}], 0])
    )
    assert b.events == (
        BlockStored((digest,), None, tuple(TOK[:16]), 16, None, "GPU", None, 0),
        BlockRemoved((digest,)),
        AllBlocksCleared(),
    )


def test_map_batch() -> None:
    b = decode_payload(pack({"ts": 5, "events": [["AllBlocksCleared"]], "data_parallel_rank": 2}))
    assert (b.ts, b.events, b.data_parallel_rank) == (5.0, (AllBlocksCleared(),), 2)


def test_unknown_and_malformed_events_are_skipped_and_counted() -> None:
    events = [
        ["BlockMigrated", [1], "peer"],
        ["BlockStored", "nope", None, TOK[:16], 16],
        ["BlockStored", [1], None, ["x"], 16],
        {"type": "BlockStored", "block_hashes": [1], "token_ids": TOK[:16]},  # no block_size
        [],
        42,
        ["AllBlocksCleared"],
    ]
    b = decode_payload(pack([6.0, events]))
    assert b.events == (AllBlocksCleared(),)
    assert b.skipped == {"unknown": 1, "malformed": 5}


@pytest.mark.parametrize("payload", [b"\xc1garbage", pack(7), pack([1.0]), pack(["x", []]), pack([1.0, 3]), b""])
def test_not_a_batch_raises(payload: bytes) -> None:
    with pytest.raises(KvDecodeError):
        decode_payload(payload)


def test_frames() -> None:
    payload = pack([1.0, [["AllBlocksCleared"]], 0])
    m = decode_frames([b"kv", (7).to_bytes(8, "big"), payload])
    assert (m.topic, m.seq, m.batch.events) == (b"kv", 7, (AllBlocksCleared(),))
    assert decode_frames([(8).to_bytes(8, "big"), payload]).seq == 8  # replay socket shape
    with pytest.raises(KvDecodeError):
        decode_frames([b"kv", b"\x00", payload])
    with pytest.raises(KvDecodeError):
        decode_frames([payload])
