"""Which replica stores each Responses answer: id → (replica, tenant, agent, task), bounded.

vLLM keeps stored responses in the replica's own memory, so a step with
``previous_response_id``, and ``GET``/``DELETE /v1/responses/{id}`` or
``/cancel``, must reach the replica that created the response. The pipeline
remembers each answered Responses step here; the Responses codec and the
pass-through routes look the id up. The entry also carries the step's agent
and task, so a ``previous_response_id`` chain stays one agent (the first
step's) when the client sends no identity of its own.

Bounds: an LRU of ``state.response_ids`` entries (default 100 000: ~30 MB at
the worst, far more than the responses an engine keeps in memory); the
oldest id is forgotten first, after which its follow-ups are relayed to any
replica and the engine answers for itself.

Shared (``state.backend: redis``, `SharedResponseIds`): the same pattern as
shared pins (``pins.py``). A remembered id is written off the request path by
a writer task (an outbox that coalesces, flushed in one pipeline:
``SET resp:<id> … PX response_id_ttl_s``); a lookup that misses locally reads
Redis once (``GET``, through the circuit breaker: while Redis is away a miss
stays a miss) and keeps the answer locally. Consistency: an id is readable by
the other instances one flush after its answer ended (sub-millisecond on a
LAN); a client that continues a response faster than that through another
instance is relayed to any replica. Concurrency: one event loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple

from concurproxy.state.client import FAILURES

if TYPE_CHECKING:
    from concurproxy.state.redis_state import RedisState

DEFAULT_MAX_ENTRIES = 100_000
MAX_ID_CHARS = 256  # ids come from the engine; longer ones are not remembered (no unbounded keys)
MAX_OUTBOX = 100_000


class ResponseEntry(NamedTuple):
    replica: str
    tenant: str
    agent_id: str  # as the client named it (the tenant is apart)
    task_id: str

    def encode(self) -> str:
        return "\t".join(self)

    @classmethod
    def decode(cls, text: str) -> ResponseEntry | None:
        parts = text.split("\t")
        return cls(*parts) if len(parts) == 4 else None


class ResponseIds:
    """In-process map (the default backend)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, ResponseEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, response_id: str, entry: ResponseEntry) -> None:
        if len(response_id) > MAX_ID_CHARS:
            return
        self._keep(response_id, entry)

    def _keep(self, response_id: str, entry: ResponseEntry) -> None:
        entries = self._entries
        entries[response_id] = entry
        entries.move_to_end(response_id)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def get(self, response_id: str) -> ResponseEntry | None:
        entry = self._entries.get(response_id)
        if entry is not None:
            self._entries.move_to_end(response_id)
        return entry

    async def lookup(self, response_id: str) -> ResponseEntry | None:
        """Where ``response_id`` is stored, when this proxy (or, shared, any instance) saw it made."""
        return self.get(response_id)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class SharedResponseIds(ResponseIds):
    """The map shared through Redis (``state.backend: redis``); see the module doc."""

    def __init__(self, state: RedisState, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        super().__init__(max_entries)
        self.state = state
        self.reads = self.remote_hits = 0
        self._outbox: dict[str, ResponseEntry] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def key(self, response_id: str) -> str:
        return f"{self.state.settings.key_prefix}resp:{response_id}"

    def remember(self, response_id: str, entry: ResponseEntry) -> None:
        if len(response_id) > MAX_ID_CHARS:
            return
        self._keep(response_id, entry)
        self._outbox[response_id] = entry
        while len(self._outbox) > MAX_OUTBOX:
            self._outbox.pop(next(iter(self._outbox)))
        self._wake.set()

    async def lookup(self, response_id: str) -> ResponseEntry | None:
        entry = self.get(response_id)
        st = self.state
        if entry is not None or len(response_id) > MAX_ID_CHARS or not st.breaker.allow(st.clock()):
            return entry
        self.reads += 1
        try:
            raw = await st.client.get(self.key(response_id))
        except FAILURES as exc:
            st.failed(exc)
            return None
        st.succeeded()
        entry = ResponseEntry.decode(raw) if isinstance(raw, str) else None
        if entry is not None:
            self.remote_hits += 1
            self._keep(response_id, entry)
        return entry

    async def flush(self) -> bool:
        st = self.state
        if not self._outbox or not st.breaker.allow(st.clock()):
            return not self._outbox
        batch, self._outbox = self._outbox, {}
        ttl_ms = int(st.settings.response_id_ttl_s * 1000)
        try:
            async with st.client.pipeline(transaction=False) as pipe:
                for rid, entry in batch.items():
                    pipe.set(self.key(rid), entry.encode(), px=ttl_ms)
                await pipe.execute()
        except FAILURES as exc:
            st.failed(exc)
            batch.update(self._outbox)  # newer entries win over the failed batch
            self._outbox = batch
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

    async def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="shared-response-ids-writer")

    async def stop(self) -> None:
        if self._task is None:
            return
        await self.flush()  # what is pending reaches the other instances before this one goes
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
