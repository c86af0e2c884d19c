"""How fast new agents are admitted on one replica: the Retry-After a refused or timed-out step is
told, and whether admission has stalled (the anti-starvation lane's trigger).

Pure: ``now`` is passed in; single caller (the replica's window).
"""

from __future__ import annotations


class AdmissionPace:
    __slots__ = ("_gap_s", "_last", "max_wait_s", "stall_s")

    def __init__(self, max_wait_s: float, stall_s: float) -> None:
        self.max_wait_s = max_wait_s  # Retry-After never says more (``max_queue_wait_s``)
        self.stall_s = stall_s  # no new agent for this long: stalled (``starvation_timeout_s``)
        self._last: float | None = None  # when the newest new agent was admitted
        self._gap_s: float | None = None  # mean gap between new-agent admissions (EWMA, 0.2 for the newest)

    def admitted(self, now: float) -> None:
        """A new agent took a slot."""
        if self._last is not None:
            gap = max(0.0, now - self._last)
            self._gap_s = gap if self._gap_s is None else 0.8 * self._gap_s + 0.2 * gap
        self._last = now

    def stalled(self, now: float, since: float) -> bool:
        """A waiter since ``since`` has seen no new agent admitted for ``stall_s``."""
        ref = since if self._last is None else max(since, self._last)
        return now - ref >= self.stall_s

    def retry_after_s(self, position: int) -> float:
        """Seconds a client should wait before retrying: position × mean gap between
        new-agent admissions here, within [1, max_wait_s]."""
        gap = self._gap_s if self._gap_s else 1.0
        return min(self.max_wait_s, max(1.0, position * gap))
