"""Approximate per-replica prefix index: which block keys were recently routed where.

Per replica, an LRU of block keys bounded by ``max_blocks`` (≈ the engine's KV capacity in
blocks, so eviction here roughly follows eviction there). Memory is
``O(replicas × max_blocks)`` entries whatever the traffic.

*Prefix closure.* ``record`` touches a chain's keys deepest-first, so every key is at least
as recent as any descendant recorded with it; LRU eviction therefore removes leaves before
their ancestors, and the set of held keys of any recorded chain is always a leading run.
That lets ``match`` binary-search the longest held run: ``O(replicas × log blocks)`` lookups.
Entries older than ``max_age_s`` (when set) count as absent; recency is monotone along a
chain for the same reason, so the binary search stays exact.

Not thread-safe: one event loop calls it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixIndex:
    def __init__(self, max_blocks: int, max_age_s: float | None = None) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be >= 1")
        self.max_blocks = max_blocks
        self.max_age_s = max_age_s
        self._lru: dict[str, OrderedDict[int, float]] = {}

    def record(self, replica: str, hashes: Sequence[int], now: float) -> None:
        """Mark ``hashes`` (a chain, root first) as resident on ``replica`` at ``now``."""
        if not hashes:
            return
        lru = self._lru.get(replica)
        if lru is None:
            lru = self._lru[replica] = OrderedDict()
        move = lru.move_to_end
        for h in reversed(hashes[: self.max_blocks] if len(hashes) > self.max_blocks else hashes):
            if h in lru:
                lru[h] = now
                move(h)
            else:
                lru[h] = now
        pop = lru.popitem
        while len(lru) > self.max_blocks:
            pop(last=False)

    def _held(self, lru: OrderedDict[int, float], h: int, now: float) -> bool:
        t = lru.get(h)
        if t is None:
            return False
        return self.max_age_s is None or now - t <= self.max_age_s

    def match_one(self, replica: str, hashes: Sequence[int], now: float) -> int:
        """Longest leading run of ``hashes`` held by ``replica`` (binary search, see module doc)."""
        lru = self._lru.get(replica)
        if not lru or not hashes:
            return 0
        return self._match(lru, hashes, now)

    def _match(self, lru: OrderedDict[int, float], hashes: Sequence[int], now: float) -> int:
        if self.max_age_s is None:  # held = present; the whole chain held is the usual answer
            if hashes[-1] in lru:
                return len(hashes)  # by prefix closure every ancestor is held too
            if hashes[0] not in lru:
                return 0
            lo, hi = 1, len(hashes) - 1  # invariant: hashes[:lo] held; answer <= hi
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if hashes[mid - 1] in lru:
                    lo = mid
                else:
                    hi = mid - 1
            return lo
        if not self._held(lru, hashes[0], now):
            return 0
        lo, hi = 1, len(hashes)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._held(lru, hashes[mid - 1], now):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def match(self, hashes: Sequence[int], now: float) -> dict[str, int]:
        """``{replica: matched leading blocks}`` for replicas holding at least the first block."""
        out: dict[str, int] = {}
        if not hashes:
            return out
        for replica, lru in self._lru.items():
            if lru:
                n = self._match(lru, hashes, now)
                if n:
                    out[replica] = n
        return out

    def forget_replica(self, replica: str) -> None:
        self._lru.pop(replica, None)

    def blocks(self, replica: str) -> int:
        lru = self._lru.get(replica)
        return len(lru) if lru is not None else 0

    def __len__(self) -> int:
        """Total entries over all replicas (the memory bound is ``replicas × max_blocks``)."""
        return sum(len(lru) for lru in self._lru.values())
