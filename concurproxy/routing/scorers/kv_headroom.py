"""``kv-headroom``: prefer the replica with the most free KV cache.

``score(r) = 1 - kv_usage(r)``, clamped to [0, 1]; unknown or stale usage scores ``0``
(stale data must never look like headroom).
"""

from __future__ import annotations

from collections.abc import Sequence

from concurproxy.routing.scorers.base import ScoreContext, clamp01
from concurproxy.routing.types import ReplicaView


class KvHeadroomScorer:
    name = "kv-headroom"

    def score(self, ctx: ScoreContext, replicas: Sequence[ReplicaView]) -> list[float]:
        return [0.0 if r.kv_usage is None else clamp01(1.0 - r.kv_usage) for r in replicas]
