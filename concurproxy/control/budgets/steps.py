"""Per-task step counters (stopping discipline) with bounded memory.

A counter is keyed by ``(tenant, task_id, role)`` and remembers its last use.
Counters unused for ``ttl_s`` are dropped (the task is over); beyond
``max_tasks`` live counters the least recently used is dropped. Both happen
in `expire`, amortised O(1) per call: an ``OrderedDict`` kept in last-use
order, so expired entries are always at the front.

Dropping a counter forgets the steps already taken (fails open); size the TTL
longer than a task's longest pause.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from concurproxy.control.budgets.decision import TaskKey


@dataclass(slots=True)
class _Counter:
    steps: int
    last: float


class TaskStepCounters:
    def __init__(self, ttl_s: float, max_tasks: int) -> None:
        self.ttl_s = ttl_s
        self.max_tasks = max_tasks
        self._c: OrderedDict[TaskKey, _Counter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._c)

    def used(self, key: TaskKey) -> int:
        c = self._c.get(key)
        return c.steps if c is not None else 0

    def add(self, key: TaskKey, now: float) -> int:
        """Count one step; returns the steps used so far, this one included."""
        c = self._c.get(key)
        if c is None:
            c = self._c[key] = _Counter(0, now)
        c.steps += 1
        c.last = max(c.last, now)
        self._c.move_to_end(key)
        while len(self._c) > self.max_tasks:
            self._c.popitem(last=False)
        return c.steps

    def undo(self, key: TaskKey) -> None:
        """Give back one step (a refunded step was never served)."""
        c = self._c.get(key)
        if c is not None and c.steps > 0:
            c.steps -= 1

    def expire(self, now: float) -> int:
        """Drop counters idle for ``ttl_s`` and the oldest beyond ``max_tasks``; returns how many."""
        dropped = 0
        while self._c:
            key, c = next(iter(self._c.items()))
            if now - c.last >= self.ttl_s or len(self._c) > self.max_tasks:
                del self._c[key]
                dropped += 1
            else:
                break
        return dropped
