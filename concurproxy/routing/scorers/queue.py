"""``queue``: prefer replicas with a short waiting queue.

``score(r) = max(0, 1 - waiting(r) / queue_threshold)``; unknown or stale ``waiting`` scores
``0``. ``queue_threshold`` defaults to 5, llm-d's saturation threshold: a replica with five
or more waiting requests gets nothing from this scorer.
"""

from __future__ import annotations

from collections.abc import Sequence

from concurproxy.routing.scorers.base import ScoreContext, clamp01
from concurproxy.routing.types import ReplicaView


class QueueScorer:
    name = "queue"

    def __init__(self, queue_threshold: float = 5.0) -> None:
        if queue_threshold <= 0:
            raise ValueError("queue_threshold must be > 0")
        self.queue_threshold = queue_threshold

    def score(self, ctx: ScoreContext, replicas: Sequence[ReplicaView]) -> list[float]:
        t = self.queue_threshold
        return [0.0 if r.waiting is None else clamp01(1.0 - r.waiting / t) for r in replicas]
