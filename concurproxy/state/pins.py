"""Agent → replica pins shared through Redis: keys with a TTL, changes by pub/sub.

The router's ``PinTable`` stays the source for routing (the request path never
waits on Redis to route); this keeps every instance's table in step:

* ``publish(agent, replica)`` (replica None = released) records the change in an
  outbox that coalesces per agent; a writer task flushes it in one pipeline:
  ``SET pin:<agent> <replica> PX pin_ttl`` (or ``DEL``) and one ``PUBLISH`` of
  the batch. While Redis is away the outbox is kept (bounded) and flushed on
  return.
* a subscriber applies the other instances' batches to the local table
  (``apply(agent, replica)``, set by the routing adapter) and, on every
  (re)subscription, reloads all live pins (``SCAN pin:*`` + ``MGET``), which is
  how a new or reconnected instance catches up.

Consistency: last writer wins, eventual (one pub/sub hop, sub-millisecond on a
LAN). Two instances routing the same agent in the same instant may pick two
replicas; the later pin wins everywhere and the earlier replica only loses
the prefix cache for that agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from concurproxy.state.client import FAILURES

if TYPE_CHECKING:
    from concurproxy.state.redis_state import RedisState

MAX_OUTBOX = 100_000
ApplyFn = Callable[[str, str | None], None]


class PinSync:
    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.apply: ApplyFn | None = None
        self.ttl_s = state.settings.pin_ttl_s
        self.channel = state.settings.key_prefix + "pins"
        self.received = 0
        self._outbox: dict[str, str | None] = {}
        self._moved: set[str] = set()
        self.release_here: Callable[[str], object] | None = None  # free an agent's local slot
        self._wake = asyncio.Event()

    def key(self, agent: str) -> str:
        return f"{self.state.settings.key_prefix}pin:{agent}"

    def publish(self, agent: str, replica: str | None) -> None:
        self._outbox.pop(agent, None)
        self._outbox[agent] = replica
        while len(self._outbox) > MAX_OUTBOX:
            self._outbox.pop(next(iter(self._outbox)))
        self._wake.set()

    def moved(self, agent: str) -> None:
        """This instance now holds ``agent``: the others free their local slot for it."""
        self._moved.add(agent)
        self._wake.set()

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._writer(), name="shared-pins-writer"),
            asyncio.create_task(self._subscriber(), name="shared-pins-subscriber"),
        ]

    async def flush(self) -> bool:
        st = self.state
        if not (self._outbox or self._moved) or not st.breaker.allow(st.clock()):
            return not (self._outbox or self._moved)
        batch, self._outbox = self._outbox, {}
        moved, self._moved = self._moved, set()
        ttl_ms = int(self.ttl_s * 1000)
        try:
            async with st.client.pipeline(transaction=False) as pipe:
                for agent, replica in batch.items():
                    if replica is None:
                        pipe.delete(self.key(agent))
                    else:
                        pipe.set(self.key(agent), replica, px=ttl_ms)
                lines = "\n".join([*(f"{a}\t{r or ''}" for a, r in batch.items()), *(f"{a}\t\tm" for a in moved)])
                pipe.publish(self.channel, f"{st.instance_id}\n{lines}")
                await pipe.execute()
        except FAILURES as exc:
            st.failed(exc)
            batch.update(self._outbox)  # newer changes win over the failed batch
            self._outbox = batch
            self._moved |= moved
            return False
        st.succeeded()
        return True

    async def _writer(self) -> None:
        while not self.state.stopped:
            await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(self.state.settings.retry_after_s)
                self._wake.set()

    def _on_message(self, data: str) -> None:
        sender, _, body = data.partition("\n")
        if sender == self.state.instance_id or self.apply is None:
            return
        for line in body.split("\n"):
            agent, replica, *flag = line.split("\t")
            if not agent:
                continue
            self.received += 1
            if flag:
                if self.release_here is not None:
                    self.release_here(agent)
            else:
                self.apply(agent, replica or None)

    async def _reload(self) -> None:
        client, prefix = self.state.client, self.key("")
        async for batch in _scan_batches(client, prefix + "*"):
            values = await client.mget(batch)
            for k, v in zip(batch, values, strict=True):
                if v is not None and self.apply is not None:
                    self.apply(k[len(prefix) :], v)

    async def _subscriber(self) -> None:
        st = self.state
        while not st.stopped:
            if not st.breaker.allow(st.clock()):
                await asyncio.sleep(st.settings.sync_interval_s)
                continue
            ps = st.client.pubsub(ignore_subscribe_messages=True)
            try:
                await ps.subscribe(self.channel)
                await self._reload()
                while not st.stopped:
                    msg = await ps.get_message(timeout=st.settings.sync_interval_s)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(msg["data"])
            except FAILURES as exc:
                st.failed(exc)
                await asyncio.sleep(st.settings.retry_after_s)
            finally:
                await ps.aclose()


async def _scan_batches(client, match: str, count: int = 1000):  # type: ignore[no-untyped-def]
    cursor = 0
    while True:
        cursor, keys = await client.scan(cursor, match=match, count=count)
        if keys:
            yield list(keys)
        if cursor == 0:
            return
