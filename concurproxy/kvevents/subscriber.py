"""Async ZMQ subscriber: one replica's vLLM KV event stream into a :class:`KvEventIndex`.

A SUB socket connects to the engine's publisher (``tcp://host:5557``) and receives
``[topic, seq, payload]``. Each message is decoded and applied to the index with its
sequence number. On a gap, when the engine exposes a replay endpoint (ROUTER), the
subscriber first asks it for the missing batches (a DEALER sends ``[b"", start_seq]`` and
reads ``[b"", seq, payload]`` — vLLM 0.32: ``[b"", topic, seq, payload]`` — until ``seq == -1``)
and applies them in order, bounded by
``replay_timeout_s``; batches it cannot get make the index forget the replica (see
:mod:`concurproxy.kvevents.index`). Undecodable messages are counted, never fatal.

A subscriber that joins a publisher mid-stream (first seq > 0) asks the replay socket for
everything from seq 0. ``synced`` tells the router whether this replica's exact index is
usable: the task runs and the index holds the replica's *whole* history — it saw seq 0 (at
start, after a replay, or after a publisher restart) and no batch since was lost. A late
joiner without a full replay, or a gap that could not be filled, leaves it unsynced (the
router keeps using its approximate index for that replica) until the publisher restarts.

Lifecycle: ``async with KvEventSubscriber(...) as sub:`` (or ``start()`` / ``aclose()``) runs
a background task and always closes its sockets. Runs on the proxy's event loop;
``on_message`` (optional) is called after each applied batch, for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import zmq
import zmq.asyncio

from concurproxy.kvevents.decode import KvDecodeError, KvMessage, decode_frames, decode_payload
from concurproxy.kvevents.index import KvEventIndex

log = logging.getLogger(__name__)
END_SEQ = -1


@dataclass(slots=True)
class SubscriberStats:
    messages: int = 0
    decode_errors: int = 0
    gaps: int = 0
    replayed: int = 0
    replay_failures: int = 0


class KvEventSubscriber:
    def __init__(
        self,
        replica: str,
        endpoint: str,
        index: KvEventIndex,
        *,
        topic: bytes = b"",
        replay_endpoint: str | None = None,
        replay_timeout_s: float = 1.0,
        context: zmq.asyncio.Context | None = None,
        on_message: Callable[[str, KvMessage], None] | None = None,
    ) -> None:
        self.replica = replica
        self.endpoint = endpoint
        self.index = index
        self.topic = topic
        self.replay_endpoint = replay_endpoint
        self.replay_timeout_s = replay_timeout_s
        self.on_message = on_message
        self.stats = SubscriberStats()
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sub: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_seq: int | None = None
        self._complete = False  # the index holds every batch since seq 0

    @property
    def synced(self) -> bool:
        return self._task is not None and not self._task.done() and self._complete

    def start(self) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, self.topic)
        sub.connect(self.endpoint)
        self._sub = sub
        self._task = asyncio.create_task(self._run(sub), name=f"kv-events-{self.replica}")

    async def __aenter__(self) -> KvEventSubscriber:
        self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None

    async def _run(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sub.recv_multipart()
            try:
                msg = decode_frames(frames)
            except KvDecodeError as e:
                self.stats.decode_errors += 1
                log.debug("kv events from %s: %s", self.replica, e)
                continue
            last = self._last_seq
            late_join = last is None and msg.seq > 0
            if late_join or (last is not None and msg.seq > last + 1):
                self.stats.gaps += 0 if late_join else 1
                if self.replay_endpoint is not None:
                    await self._replay(0 if last is None else last + 1, msg.seq)
            self._apply(msg)

    def _apply(self, msg: KvMessage) -> None:
        last = self._last_seq
        if msg.seq == 0:
            self._complete = True  # from the start: first batch, or a publisher restart (the index clears)
        elif last is None or msg.seq > last + 1:
            self._complete = False  # batches before this one are lost
        self.index.apply(self.replica, msg.seq, msg.batch)
        if self._last_seq is None or msg.seq > self._last_seq or msg.seq == 0:
            self._last_seq = msg.seq
        self.stats.messages += 1
        if self.on_message is not None:
            self.on_message(self.replica, msg)

    async def _replay(self, start: int, stop: int) -> None:
        """Apply batches ``start <= seq < stop`` from the replay socket, in order."""
        assert self.replay_endpoint is not None
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        try:
            dealer.connect(self.replay_endpoint)
            await dealer.send_multipart([b"", start.to_bytes(8, "big", signed=True)])
            async with asyncio.timeout(self.replay_timeout_s):
                while True:
                    frames = await dealer.recv_multipart()
                    if len(frames) == 4:  # vLLM 0.32 puts the topic in: [b"", topic, seq, payload]
                        frames = [frames[0], frames[2], frames[3]]
                    if len(frames) != 3:
                        raise KvDecodeError("replay reply is not [b'', (topic,) seq, payload]")
                    seq = int.from_bytes(frames[1], "big", signed=True)
                    if seq == END_SEQ:
                        break
                    if start <= seq < stop:
                        self._apply(KvMessage(self.topic, seq, decode_payload(frames[2])))
                        self.stats.replayed += 1
        except (TimeoutError, KvDecodeError, zmq.ZMQError) as e:
            self.stats.replay_failures += 1
            log.info("kv events replay from %s failed: %s", self.replica, e)
        finally:
            dealer.close(linger=0)
