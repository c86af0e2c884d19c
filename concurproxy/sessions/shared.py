"""The fingerprint table shared through Redis (``state.backend: redis``): a fill-in, not the source.

*Design.* Each instance's `SessionTable` stays authoritative for what it has seen; Redis holds a
plain map ``<key_prefix>sess:<fingerprint hex>`` → agent id with the table's TTL (``SET … PX``),
so an agent whose steps land on several instances keeps one id.

* Writes: every key the resolver maps (a step's prompt key, an answer key) goes to an outbox that
  coalesces per key; a writer task flushes it in one pipeline of ``SET``. Off the request path;
  while Redis is away the outbox is kept (bounded, oldest dropped) and flushed on return.
* Reads: only when the local table misses (a step that would start a new agent), `fill` asks
  Redis for the step's candidate keys (answer, retry, prompt) in one ``MGET``: one round trip on
  the first step of every new agent and on a step whose previous step went through another
  instance; none for a step that continues an agent known here.
* A new step's own prompt key is published after that read (`SessionResolver.adopt`), so that it
  cannot overwrite, in Redis, the key of the agent the read is looking for.

*What is not shared.* The answer recorded on a prompt key (which turns a second, different answer
into a child agent) stays local: an instance that sees a duplicate step for the first time treats
its answer as the first one. Two instances may both start a new agent for two identical first
steps; each keeps its own, and the later write wins in Redis.

*Outage.* Every call goes through the shared state's breaker: a failure costs one socket timeout,
then `fill` answers at once (a local miss starts a new agent) until Redis is back; keys written
meanwhile are flushed then. Concurrency: one event loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from concurproxy.sessions.resolver import Resolved, SessionResolver
from concurproxy.state.client import FAILURES

if TYPE_CHECKING:
    from concurproxy.state.redis_state import RedisState

MAX_OUTBOX = 100_000


class SharedSessions:
    def __init__(self, state: RedisState, resolver: SessionResolver) -> None:
        self.state, self.resolver = state, resolver
        self.prefix = state.settings.key_prefix + "sess:"
        self.ttl_ms = int(resolver.table.ttl_s * 1000)
        self._outbox: dict[bytes, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.hits = self.misses = self.written = self.dropped = 0
        resolver.on_put = self.publish

    def key(self, fingerprint: bytes) -> str:
        return self.prefix + fingerprint.hex()

    def publish(self, fingerprint: bytes, agent: str) -> None:
        self._outbox.pop(fingerprint, None)  # the newest mapping of a key goes last
        self._outbox[fingerprint] = agent
        while len(self._outbox) > MAX_OUTBOX:
            self._outbox.pop(next(iter(self._outbox)))
            self.dropped += 1
        self._wake.set()

    async def fill(self, resolved: Resolved) -> Resolved:
        """For a ``new`` step: the agent Redis knows for one of its keys, else the new one (published)."""
        if resolved.source != "new" or resolved.keys is None:
            return resolved
        st, k = self.state, resolved.keys
        if not st.breaker.allow(st.clock()):
            return self.resolver.adopt(resolved, None)
        candidates = [c for c in (k.chain, k.prompt, k.previous) if c is not None]
        try:
            values = await st.client.mget([self.key(c) for c in candidates])
        except FAILURES as exc:
            st.failed(exc)
            return self.resolver.adopt(resolved, None)
        st.succeeded()
        agent = next((v for v in values if v), None)
        if agent is None:
            self.misses += 1
        else:
            self.hits += 1
        return self.resolver.adopt(resolved, agent)

    async def flush(self) -> bool:
        """Write the outbox in one pipeline; False (outbox kept) when Redis is away."""
        st = self.state
        if not self._outbox or not st.breaker.allow(st.clock()):
            return not self._outbox
        batch, self._outbox = self._outbox, {}
        try:
            async with st.client.pipeline(transaction=False) as pipe:
                for fingerprint, agent in batch.items():
                    pipe.set(self.key(fingerprint), agent, px=self.ttl_ms)
                await pipe.execute()
        except FAILURES as exc:
            st.failed(exc)
            batch.update(self._outbox)  # mappings made meanwhile win over the failed batch
            self._outbox = batch
            return False
        st.succeeded()
        self.written += len(batch)
        return True

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._writer(), name="shared-sessions-writer")
        return self._task

    async def stop(self) -> None:
        """Stop the writer after one last flush (best effort)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def _writer(self) -> None:
        while not self.state.stopped:
            await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(self.state.settings.retry_after_s)
                self._wake.set()

    def view(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "written": self.written, "dropped": self.dropped}
