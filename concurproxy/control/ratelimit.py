"""Per-key request-rate limit at the front door (before budgets and admission).

One token bucket per key: ``rate`` tokens/s, capacity ``burst``; a request
takes one token. ``allow`` returns 0.0 when admitted, else the seconds until a
token is available (the Retry-After). Memory is bounded: past ``max_keys``
buckets, the ones that have refilled completely (idle keys) are dropped — a
full bucket carries no state worth keeping.

Pure: ``now`` is passed in. Single caller (the event loop).
"""

from __future__ import annotations


class KeyedRateLimiter:
    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_keys:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
