"""First-come first-served ``WaitQueue`` (the simplest ordering; fairness lives elsewhere)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from concurproxy.control.types import StepInfo

T = TypeVar("T")


class FifoQueue(Generic[T]):
    """Items leave in arrival order. ``remove`` is O(1) (an ordered dict keyed by item),
    so cancelled waiters cost nothing. Items must be hashable and unique while queued.
    ``charge`` is a no-op: FIFO keeps no service counters.

    Concurrency: single caller.
    """

    name = "fifo"

    def __init__(self) -> None:
        self._items: OrderedDict[T, None] = OrderedDict()

    def push(self, item: T, step: StepInfo, now: float) -> None:
        self._items[item] = None

    def pop(self, now: float) -> T | None:
        if not self._items:
            return None
        item, _ = self._items.popitem(last=False)
        return item

    def peek(self, now: float) -> T | None:
        return next(iter(self._items), None)

    def remove(self, item: T) -> bool:
        if item not in self._items:
            return False
        del self._items[item]
        return True

    def charge(self, step: StepInfo, prompt_tokens: int, output_tokens: int, now: float) -> None:
        return None

    def __len__(self) -> int:
        return len(self._items)
