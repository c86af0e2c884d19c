"""``session-affinity``: prefer the replica that served this agent last.

``score(r) = 1`` if ``r`` is the agent's live pin (see :class:`~concurproxy.routing.pins.PinTable`,
pins lapse after ``pin_ttl_s``), else ``0``. A weighted score, not a hard route: enough load
or headroom difference on the other scorers can outweigh it.
"""

from __future__ import annotations

from collections.abc import Sequence

from concurproxy.routing.scorers.base import ScoreContext
from concurproxy.routing.types import ReplicaView


class SessionAffinityScorer:
    name = "session-affinity"

    def score(self, ctx: ScoreContext, replicas: Sequence[ReplicaView]) -> list[float]:
        pinned = ctx.pinned
        return [1.0 if r.id == pinned else 0.0 for r in replicas]
