"""A min-priority queue over keys with O(log n) set / discard / peek (lazy deletion).

``set(key, prio)`` pushes a new heap entry and marks older entries of the key
stale; stale entries are skipped when they reach the top. The heap is rebuilt
from the live entries when it holds more than twice as many entries as keys,
so memory stays O(keys) and every operation is O(log n) amortised.

Entries compare by ``(prio, stamp)`` where ``stamp`` is unique, so keys never
need to be comparable and ties go to the key set earliest.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Prio = tuple[float, ...]


class KeyedHeap(Generic[K]):
    __slots__ = ("_cur", "_heap", "_stamp")

    def __init__(self) -> None:
        self._heap: list[tuple[Prio, int, K]] = []
        self._cur: dict[K, tuple[Prio, int]] = {}
        self._stamp = 0

    def __len__(self) -> int:
        return len(self._cur)

    def __contains__(self, key: object) -> bool:
        return key in self._cur

    def get(self, key: K) -> Prio | None:
        cur = self._cur.get(key)
        return None if cur is None else cur[0]

    def set(self, key: K, prio: Prio) -> None:
        self._stamp += 1
        self._cur[key] = (prio, self._stamp)
        heapq.heappush(self._heap, (prio, self._stamp, key))
        if len(self._heap) > 2 * len(self._cur) + 32:
            self._heap = [(p, s, k) for k, (p, s) in self._cur.items()]
            heapq.heapify(self._heap)

    def discard(self, key: K) -> None:
        self._cur.pop(key, None)
        if not self._cur:
            self._heap.clear()

    def peek(self) -> tuple[K, Prio] | None:
        """The key with the smallest priority (earliest set on ties), or None."""
        heap, cur = self._heap, self._cur
        while heap:
            prio, stamp, key = heap[0]
            live = cur.get(key)
            if live is not None and live[1] == stamp:
                return key, prio
            heapq.heappop(heap)
        return None
