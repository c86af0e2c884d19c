"""Defensive decoder for vLLM KV cache events (``--kv-events-config``, ZMQ publisher).

Wire format (``vllm/distributed/kv_events.py``, checked against v0.8-v0.11 and the 0.28 structs):

* ZMQ PUB multipart: ``[topic, seq (8-byte big-endian), payload]``.
* payload = msgpack of ``KVEventBatch``: ``[ts, events, data_parallel_rank]`` (``array_like``;
  the rank is missing in old versions, nil when unset). A map ``{ts, events, ...}`` is accepted too.
* each event is a tagged msgspec struct, in one of two layouts:
  - legacy ``array_like``: ``["BlockStored", block_hashes, parent_block_hash, token_ids,
    block_size, lora_id, medium?, lora_name?, extra_keys?, group_idx?, ...]``,
    ``["BlockRemoved", block_hashes, medium?, group_idx?, ...]``, ``["AllBlocksCleared"]``;
  - newer map layout: ``{"type": "BlockStored", "block_hashes": ..., ...}`` (defaults omitted).
* a block hash is an int (low 64 bits of the digest, the default) or the digest as bytes.

Fields are added across versions: trailing extras are ignored, missing optional fields are
None. An event that cannot be understood is *skipped and counted* (``unknown`` for a tag we
do not know, ``malformed`` for wrong types); only a payload that is not a batch at all raises
:class:`KvDecodeError`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

EngineHash = int | bytes


class KvDecodeError(ValueError):
    """The frames or payload are not a KV event batch."""


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: tuple[EngineHash, ...]
    parent_block_hash: EngineHash | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    group_idx: int | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: tuple[EngineHash, ...]
    medium: str | None = None
    group_idx: int | None = None


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    pass


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class KvEventBatch:
    ts: float
    events: tuple[KvEvent, ...]
    data_parallel_rank: int | None = None
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> events skipped


@dataclass(frozen=True, slots=True)
class KvMessage:
    topic: bytes
    seq: int
    batch: KvEventBatch


_STORED_FIELDS = (
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
    "extra_keys",
    "group_idx",
)
_REMOVED_FIELDS = ("block_hashes", "medium", "group_idx")


class _Malformed(Exception):
    pass


def _hash(v: Any) -> EngineHash:
    if isinstance(v, bool) or not isinstance(v, int | bytes):
        raise _Malformed("block hash")
    return v


def _hashes(v: Any) -> tuple[EngineHash, ...]:
    if not isinstance(v, list | tuple):
        raise _Malformed("block_hashes")
    return tuple(_hash(h) for h in v)


def _opt_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Malformed("int field")
    return v


def _opt_str(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    raise _Malformed("str field")


def _fields(raw: Sequence[Any] | Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return {n: raw.get(n) for n in names}
    vals = list(raw[1:])  # raw[0] is the tag
    return {n: (vals[i] if i < len(vals) else None) for i, n in enumerate(names)}


def _event(raw: Any) -> KvEvent | str:
    """An event, or the reason it was skipped."""
    if isinstance(raw, Mapping):
        tag = raw.get("type")
    elif isinstance(raw, list | tuple) and raw:
        tag = raw[0]
    else:
        return "malformed"
    if isinstance(tag, bytes):
        tag = tag.decode("utf-8", "replace")
    try:
        if tag == "BlockStored":
            f = _fields(raw, _STORED_FIELDS)
            tokens = f["token_ids"]
            if not isinstance(tokens, list | tuple) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in tokens
            ):
                raise _Malformed("token_ids")
            size = _opt_int(f["block_size"])
            if size is None or size < 0:
                raise _Malformed("block_size")
            parent = f["parent_block_hash"]
            return BlockStored(
                block_hashes=_hashes(f["block_hashes"]),
                parent_block_hash=None if parent is None else _hash(parent),
                token_ids=tuple(tokens),
                block_size=size,
                lora_id=_opt_int(f["lora_id"]),
                medium=_opt_str(f["medium"]),
                lora_name=_opt_str(f["lora_name"]),
                group_idx=_opt_int(f["group_idx"]),
            )
        if tag == "BlockRemoved":
            f = _fields(raw, _REMOVED_FIELDS)
            return BlockRemoved(
                block_hashes=_hashes(f["block_hashes"]),
                medium=_opt_str(f["medium"]),
                group_idx=_opt_int(f["group_idx"]),
            )
        if tag == "AllBlocksCleared":
            return AllBlocksCleared()
    except _Malformed:
        return "malformed"
    return "unknown"


def decode_payload(payload: bytes) -> KvEventBatch:
    """Decode one msgpack ``KVEventBatch``; undecodable events are skipped and counted."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as e:  # ExtraData, FormatError, StackError, ...
        raise KvDecodeError(f"not msgpack: {e}") from None
    if isinstance(obj, Mapping):
        ts, events, rank = obj.get("ts"), obj.get("events"), obj.get("data_parallel_rank")
    elif isinstance(obj, list | tuple) and len(obj) >= 2:
        ts, events = obj[0], obj[1]
        rank = obj[2] if len(obj) > 2 else None
    else:
        raise KvDecodeError("payload is not a KVEventBatch")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not isinstance(events, list | tuple):
        raise KvDecodeError("KVEventBatch needs a numeric ts and a list of events")
    out: list[KvEvent] = []
    skipped: dict[str, int] = {}
    for raw in events:
        ev = _event(raw)
        if isinstance(ev, str):
            skipped[ev] = skipped.get(ev, 0) + 1
        else:
            out.append(ev)
    return KvEventBatch(
        ts=float(ts),
        events=tuple(out),
        data_parallel_rank=rank if isinstance(rank, int) and not isinstance(rank, bool) else None,
        skipped=skipped,
    )


def decode_frames(frames: Sequence[bytes]) -> KvMessage:
    """Decode a PUB message ``[topic, seq, payload]`` (``[seq, payload]`` from the replay socket)."""
    if len(frames) == 3:
        topic, seq_b, payload = frames
    elif len(frames) == 2:
        topic, (seq_b, payload) = b"", frames
    else:
        raise KvDecodeError(f"expected 2 or 3 frames, got {len(frames)}")
    if len(seq_b) != 8:
        raise KvDecodeError("sequence frame is not 8 bytes")
    return KvMessage(
        topic=bytes(topic),
        seq=int.from_bytes(seq_b, "big", signed=True),
        batch=decode_payload(bytes(payload)),
    )
