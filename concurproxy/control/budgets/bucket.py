"""A token bucket over weighted tokens, refilled continuously from an injected clock.

Formula: ``level(t) = min(capacity, level(t0) + (t - t0) * rate)`` with
``rate = capacity / 60`` for a ``tokens_per_min`` budget. ``level`` may go
negative: a step whose settled usage exceeds what was reserved leaves the bucket
in debt, and later steps wait until the debt is paid back (no overshoot beyond
one step, and none of it forgiven).

A step costing ``c`` may start when ``level >= min(c, capacity)``: a step larger
than the whole bucket is still served once the bucket is full (it then runs
into debt) instead of being refused forever.

Concurrency: plain object, not thread-safe; the owner serialises calls (the
proxy runs one event loop). Time never moves backwards here: a ``now`` older
than the last update refills nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    capacity: float
    rate: float  # tokens per second
    level: float
    updated: float

    @classmethod
    def per_minute(cls, tokens_per_min: float, now: float) -> TokenBucket:
        """A full bucket holding one minute of budget."""
        tpm = float(tokens_per_min)
        return cls(capacity=tpm, rate=tpm / 60.0, level=tpm, updated=now)

    def refill(self, now: float) -> None:
        if now > self.updated:
            if self.level < self.capacity:
                self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def fits(self, cost: float) -> bool:
        """True when a step of ``cost`` may start now (call `refill` first)."""
        return self.level >= min(cost, self.capacity)

    def wait_s(self, cost: float) -> float:
        """Seconds until `fits(cost)` becomes true at the refill rate (0 when it already is)."""
        need = min(cost, self.capacity) - self.level
        return max(0.0, need / self.rate) if self.rate > 0 else float("inf")

    def take(self, amount: float) -> None:
        self.level -= amount

    def give(self, amount: float) -> None:
        """Return tokens (a refund or an over-reservation); never above capacity."""
        self.level = min(self.capacity, self.level + amount)

    def resize(self, tokens_per_min: float) -> None:
        """Apply a new budget (policy reload), keeping the current level (capped)."""
        self.capacity = float(tokens_per_min)
        self.rate = tokens_per_min / 60.0
        self.level = min(self.level, self.capacity)
