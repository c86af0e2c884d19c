"""The bundled worker's KV cache event publisher: vLLM's ``--kv-events-config`` ZMQ publisher.

``concurproxy worker --kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq",
"endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558", "topic": ""}'`` takes the same
JSON as vLLM. After each engine step that changed the prefix cache, one ``KVEventBatch`` goes
out on a PUB socket as ``[topic, seq, payload]`` (:mod:`concurproxy.kvevents.encode`), seq
counting from 0. With ``replay_endpoint``, a ROUTER socket answers ``[id, b"", start_seq]``
with every buffered batch from ``start_seq`` on as ``[id, b"", seq, payload]`` and then
``seq = -1`` — vLLM's replay protocol; the last ``buffer`` batches are kept.

With several replicas in one process, replica ``i`` binds the endpoint's port + ``i``.
Runs on the worker's event loop; sends never block (PUB drops for slow subscribers, as in vLLM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import zmq
import zmq.asyncio

from concurproxy.kvevents.decode import KvEvent
from concurproxy.kvevents.encode import encode_batch, frames

END_SEQ = -1


@dataclass(frozen=True, slots=True)
class KvEventsConfig:
    endpoint: str
    replay_endpoint: str | None = None
    topic: str = ""
    buffer: int = 10_000

    @classmethod
    def from_json(cls, text: str) -> KvEventsConfig | None:
        """vLLM's ``--kv-events-config``; None when events are not enabled. Raises ValueError."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("--kv-events-config must be a JSON object")
        if not doc.get("enable_kv_cache_events", False):
            return None
        if doc.get("publisher", "zmq") != "zmq":
            raise ValueError("only the zmq publisher is supported")
        return cls(
            endpoint=str(doc.get("endpoint", "tcp://*:5557")),
            replay_endpoint=doc.get("replay_endpoint") or None,
            topic=str(doc.get("topic", "")),
            buffer=int(doc.get("buffer_steps", 10_000)),
        )

    def for_replica(self, i: int) -> KvEventsConfig:
        if i == 0:
            return self
        return KvEventsConfig(
            _port_plus(self.endpoint, i),
            _port_plus(self.replay_endpoint, i) if self.replay_endpoint else None,
            self.topic,
            self.buffer,
        )


def _port_plus(endpoint: str, i: int) -> str:
    head, _, port = endpoint.rpartition(":")
    return f"{head}:{int(port) + i}"


class KvEventPublisher:
    def __init__(self, cfg: KvEventsConfig, context: zmq.asyncio.Context | None = None) -> None:
        self.cfg = cfg
        self._ctx = context or zmq.asyncio.Context.instance()
        self._topic = cfg.topic.encode()
        self._seq = 0
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=cfg.buffer)
        self._pub: zmq.asyncio.Socket | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._replay_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(self.cfg.endpoint)
        self._pub = pub
        if self.cfg.replay_endpoint:
            router = self._ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.bind(self.cfg.replay_endpoint)
            self._router = router
            self._replay_task = asyncio.create_task(self._serve_replay(router), name="kv-events-replay")

    async def stop(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        for sock in (self._pub, self._router):
            if sock is not None:
                sock.close(linger=0)
        self._pub = self._router = None

    def publish(self, ts: float, events: Sequence[KvEvent]) -> None:
        if self._pub is None or not events:
            return
        seq, payload = self._seq, encode_batch(ts, events)
        self._seq += 1
        self._buffer.append((seq, payload))
        with contextlib.suppress(zmq.Again):  # a full send queue drops, as vLLM's PUB does
            self._pub.send_multipart(frames(self._topic, seq, payload), flags=zmq.NOBLOCK)

    async def _serve_replay(self, router: zmq.asyncio.Socket) -> None:
        while True:
            msg = await router.recv_multipart()
            if len(msg) != 3 or len(msg[2]) != 8:
                continue  # not [identity, b"", start_seq]
            ident, start = msg[0], int.from_bytes(msg[2], "big", signed=True)
            for seq, payload in list(self._buffer):
                if seq >= start:
                    await router.send_multipart([ident, b"", seq.to_bytes(8, "big", signed=True), payload])
            await router.send_multipart([ident, b"", END_SEQ.to_bytes(8, "big", signed=True), b""])
