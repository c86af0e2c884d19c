"""``prefix-match``: prefer the replica holding the longest run of the request's prefix.

``score(r) = matched_blocks(r) / request_blocks`` (0 for a request shorter than one block).
``matched_blocks`` is the longest run of the request's leading chained block keys the
replica is believed to hold (approximate index, or exact from KV events).
"""

from __future__ import annotations

from collections.abc import Sequence

from concurproxy.routing.scorers.base import ScoreContext, clamp01
from concurproxy.routing.types import ReplicaView


class PrefixMatchScorer:
    name = "prefix-match"

    def score(self, ctx: ScoreContext, replicas: Sequence[ReplicaView]) -> list[float]:
        n = len(ctx.request.prefix_hashes)
        if n == 0:
            return [0.0] * len(replicas)
        matches = ctx.matches
        return [clamp01(matches.get(r.id, 0) / n) for r in replicas]
