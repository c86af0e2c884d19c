"""Encode KV cache events the way vLLM's ZMQ publisher does (the bundled worker publishes with it).

``encode_batch`` writes vLLM's ``array_like`` msgspec layout: a batch is
``[ts, [event, ...], data_parallel_rank]`` and each event an array whose first element is its
tag — ``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id,
medium]``, ``["BlockRemoved", block_hashes, medium]``, ``["AllBlocksCleared"]``.
``frames`` is the PUB message ``[topic, 8-byte big-endian seq, payload]``. The inverse of
:mod:`concurproxy.kvevents.decode` (round-trip tested). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from concurproxy.kvevents.decode import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent


def _event(ev: KvEvent) -> list[Any]:
    if isinstance(ev, BlockStored):
        return [
            "BlockStored",
            list(ev.block_hashes),
            ev.parent_block_hash,
            list(ev.token_ids),
            ev.block_size,
            ev.lora_id,
            ev.medium,
        ]
    if isinstance(ev, BlockRemoved):
        return ["BlockRemoved", list(ev.block_hashes), ev.medium]
    if isinstance(ev, AllBlocksCleared):
        return ["AllBlocksCleared"]
    raise TypeError(f"not a KV event: {ev!r}")


def encode_batch(ts: float, events: Iterable[KvEvent], data_parallel_rank: int | None = None) -> bytes:
    payload: bytes = msgpack.packb([ts, [_event(e) for e in events], data_parallel_rank], use_bin_type=True)
    return payload


def frames(topic: bytes, seq: int, payload: bytes) -> list[bytes]:
    return [topic, seq.to_bytes(8, "big", signed=True), payload]
