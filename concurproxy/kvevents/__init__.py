"""vLLM KV cache events: a defensive decoder, an exact prefix index, an async ZMQ subscriber.

``decode`` and ``index`` are pure; ``subscriber`` is the I/O shell (import it explicitly:
``from concurproxy.kvevents.subscriber import KvEventSubscriber``).
"""

from concurproxy.kvevents.decode import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvDecodeError,
    KvEvent,
    KvEventBatch,
    KvMessage,
    decode_frames,
    decode_payload,
)
from concurproxy.kvevents.index import KvEventIndex, ReplicaStats

__all__ = [
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "KvDecodeError",
    "KvEvent",
    "KvEventBatch",
    "KvEventIndex",
    "KvMessage",
    "ReplicaStats",
    "decode_frames",
    "decode_payload",
]
