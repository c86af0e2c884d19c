"""KV-event feed: the replicas' KV cache event streams into one exact prefix index for routing.

One :class:`~concurproxy.kvevents.subscriber.KvEventSubscriber` per replica whose upstream
entry has ``kv_events``; all feed one :class:`~concurproxy.kvevents.KvEventIndex`. For
``prefix-affinity`` the router's locator becomes ``LayeredLocator(exact, approx, is_exact)``:
a replica whose stream is complete and live (``synced``) is matched against what its engine
actually holds, the others against the router's approximate index of routed prefixes.

Built only when some upstream has ``kv_events`` at start-up (otherwise routing pays nothing
for it); replicas that join later (reload, discovery) are subscribed too, leaving ones are
unsubscribed and forgotten. Runs on the proxy's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from concurproxy.kvevents.index import KvEventIndex
from concurproxy.kvevents.subscriber import KvEventSubscriber
from concurproxy.routing import PrefixAffinityRouter
from concurproxy.routing.locator import LayeredLocator
from concurproxy.routing.types import Router
from concurproxy.upstream.replica import Replica


class KvEventFeed:
    def __init__(self, block_tokens: int, max_blocks: int) -> None:
        self.index = KvEventIndex(block_tokens, max_blocks)
        self._subs: dict[str, KvEventSubscriber] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def is_exact(self, replica_id: str) -> bool:
        sub = self._subs.get(replica_id)
        return sub is not None and sub.synced

    def layer(self, router: Router) -> bool:
        """Make ``router`` consult the exact index first; False when its policy keeps no prefixes."""
        if not isinstance(router, PrefixAffinityRouter):
            return False
        router.locator = LayeredLocator(self.index, router.index, self.is_exact)
        return True

    def add(self, replica: Replica) -> None:
        """Subscribe to ``replica``'s events (no-op without ``kv_events`` or when subscribed)."""
        src = replica.kv_events
        if src is None or replica.id in self._subs:
            return
        sub = KvEventSubscriber(
            replica.id, src.endpoint, self.index, topic=src.topic.encode(), replay_endpoint=src.replay_endpoint
        )
        sub.start()
        self._subs[replica.id] = sub

    def remove(self, replica_id: str) -> None:
        sub = self._subs.pop(replica_id, None)
        self.index.clear_replica(replica_id)
        if sub is not None:
            task = asyncio.create_task(sub.aclose(), name=f"kv-events-close-{replica_id}")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        for rid in list(self._subs):
            self.remove(rid)
        if self._closing:
            await asyncio.gather(*self._closing)

    def state(self) -> dict[str, Any]:
        """Per replica: synced, blocks held, batches, gaps, drops (for /admin/state)."""
        out: dict[str, Any] = {}
        for rid, sub in self._subs.items():
            st = self.index.stats.get(rid)
            out[rid] = {
                "endpoint": sub.endpoint,
                "synced": sub.synced,
                "blocks": self.index.blocks(rid),
                "messages": sub.stats.messages,
                "gaps": sub.stats.gaps,
                "replayed": sub.stats.replayed,
                "decode_errors": sub.stats.decode_errors,
                "dropped": dict(st.dropped) if st is not None else {},
            }
        return out
