"""Agent → replica pins with a TTL and a bounded table.

A pin says "this agent's prefix is hot on that replica". It expires ``ttl_s`` after the
agent's last step (a tool pause longer than that loses the pin; the prefix index may still
bring the agent back). The table holds at most ``max_pins`` agents; beyond that the least
recently used pin is dropped. Per-replica pin counts are kept exact, so first placement can
bound pins per replica (bounded-load consistent hashing).

Entries are kept in last-use order and the TTL is uniform, so expired pins are always at the
front: :meth:`expire` pops them in amortised O(1). It also keeps a lower bound of the front pin's
last use (pins are only refreshed forward and new ones start at ``now``), so a call that has
nothing to expire is one comparison. Not thread-safe: one event loop calls it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Pin:
    replica: str
    last_used: float


class PinTable:
    def __init__(self, ttl_s: float, max_pins: int = 1_000_000) -> None:
        if ttl_s <= 0 or max_pins < 1:
            raise ValueError("ttl_s must be > 0 and max_pins >= 1")
        self.ttl_s = ttl_s
        self.max_pins = max_pins
        self._pins: OrderedDict[str, Pin] = OrderedDict()
        self._counts: dict[str, int] = {}
        self._oldest = float("inf")  # <= the front pin's last_used (a lower bound; inf when none was seen)

    def _drop(self, agent: str) -> Pin | None:
        pin = self._pins.pop(agent, None)
        if pin is not None:
            left = self._counts[pin.replica] - 1
            if left:
                self._counts[pin.replica] = left
            else:
                del self._counts[pin.replica]
        return pin

    def expire(self, now: float) -> int:
        """Drop pins idle longer than the TTL; returns how many went."""
        horizon = now - self.ttl_s
        if self._oldest >= horizon:  # the front pin is at least this recent: nothing to expire
            return 0
        gone = 0
        pins = self._pins
        while pins:
            agent, pin = next(iter(pins.items()))
            if pin.last_used >= horizon:
                self._oldest = pin.last_used
                return gone
            self._drop(agent)
            gone += 1
        self._oldest = float("inf")
        return gone

    def get(self, agent: str, now: float) -> str | None:
        """The agent's pinned replica, or None (never pinned, expired or evicted)."""
        pin = self._pins.get(agent)
        if pin is None:
            return None
        if now - pin.last_used > self.ttl_s:
            self._drop(agent)
            return None
        return pin.replica

    def set(self, agent: str, replica: str, now: float) -> None:
        """Pin (or refresh the pin of) ``agent`` to ``replica`` at ``now``."""
        pin = self._pins.get(agent)
        if pin is not None:
            if pin.replica == replica:
                if now > pin.last_used:
                    pin.last_used = now
                self._pins.move_to_end(agent)
                return
            self._drop(agent)
        self._pins[agent] = Pin(replica, now)
        if now < self._oldest:
            self._oldest = now
        self._counts[replica] = self._counts.get(replica, 0) + 1
        while len(self._pins) > self.max_pins:
            self._drop(next(iter(self._pins)))

    def touch(self, agent: str, replica: str, now: float) -> None:
        """Refresh the pin iff ``agent`` is still pinned to ``replica`` (``get`` then ``set``, in one call)."""
        pin = self._pins.get(agent)
        if pin is None:
            return
        if now - pin.last_used > self.ttl_s:
            self._drop(agent)
            return
        if pin.replica != replica:
            return
        if now > pin.last_used:
            pin.last_used = now
        self._pins.move_to_end(agent)

    def release(self, agent: str) -> None:
        self._drop(agent)

    def count(self, replica: str) -> int:
        return self._counts.get(replica, 0)

    def __len__(self) -> int:
        return len(self._pins)
