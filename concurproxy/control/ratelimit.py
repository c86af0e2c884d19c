"""Per-key request-rate limit at the front door (before budgets and admission).

Algorithm: one token bucket per key, ``rate`` tokens/s, capacity ``burst``; a
request takes one token. ``allow`` returns 0.0 when admitted, else the seconds
until a token is available (the Retry-After).

Memory: at most ``max_keys`` buckets, kept in least-recently-used order. A new
key past the cap evicts the one bucket used longest ago, so every call costs
O(1) whatever the number of keys (anonymous limiting by client address is the
DoS case: a scan of every bucket per new address cost 8 ms per request at
~100k addresses). An evicted key comes back with a full bucket: eviction can
only make the limit more lenient for the key that was idle longest, never
refuse anyone, and a key that keeps sending stays at the recent end.

Defaults and why: ``max_keys`` 100 000 (``limits.rate_limit_max_keys``) is
about 25 MB of buckets and keys (measured), above the number of distinct clients one proxy
instance sees within a few refill periods.

Pure: ``now`` is passed in. Concurrency: single caller (the event loop).
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_MAX_KEYS = 100_000


class KeyedRateLimiter:
    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> [tokens, at]; a list mutated in place so a hit allocates nothing
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def allow(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)  # the least recently used key
        else:
            self._buckets.move_to_end(key)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def __contains__(self, key: str) -> bool:
        return key in self._buckets

    def __len__(self) -> int:
        return len(self._buckets)
