"""One lane of waiting steps: FIFO, except that short steps may pass long prefills for a bounded time.

Rule (``choose``): let ``S`` be the oldest short step and ``L`` the oldest long
step (``est_prompt_tokens > long_prefill_tokens``). Serve ``S`` when it exists
and either ``L`` does not, ``S`` is older than ``L``, or ``L`` has waited less
than ``max_bypass_s``; otherwise serve ``L``. Hence a long step is passed over
by later short steps for at most ``max_bypass_s`` of waiting, after which it is
the lane's next step; with ``max_bypass_s = 0`` the lane is plain FIFO.

Removal is lazy (an entry is marked dead and skipped when it reaches the
front), so push / remove / pop are O(1) amortised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from concurproxy.control.types import StepInfo


@dataclass(slots=True, eq=False)
class Entry:
    item: Hashable
    step: StepInfo
    seq: int  # arrival order within the queue
    t_enq: float
    long: bool
    lane: tuple[int, str]  # (priority class, role)
    alive: bool = True


class Lane:
    __slots__ = ("_long", "_short", "live")

    def __init__(self) -> None:
        self._short: deque[Entry] = deque()
        self._long: deque[Entry] = deque()
        self.live = 0

    def add(self, e: Entry) -> None:
        (self._long if e.long else self._short).append(e)
        self.live += 1

    def kill(self, e: Entry) -> None:
        e.alive = False
        self.live -= 1

    @staticmethod
    def _head(q: deque[Entry]) -> Entry | None:
        while q and not q[0].alive:
            q.popleft()
        return q[0] if q else None

    def choose(self, now: float, max_bypass_s: float) -> Entry | None:
        s, lg = self._head(self._short), self._head(self._long)
        if s is not None and (lg is None or s.seq < lg.seq or now - lg.t_enq < max_bypass_s):
            return s
        return lg
