"""``round-robin``: each step to the next eligible replica in turn (the baseline).

Keeps no pins and no prefix index; ``matched_blocks`` is always 0. Not thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from concurproxy.routing.placement import candidates
from concurproxy.routing.types import NoHealthyReplica, ReplicaView, RouteDecision, RouteReason, RouteRequest


class RoundRobinRouter:
    def __init__(self) -> None:
        self._next = 0

    def route(self, request: RouteRequest, replicas: Sequence[ReplicaView], now: float) -> RouteDecision:
        cands = candidates(replicas)
        if not cands:
            raise NoHealthyReplica("no healthy, non-draining replica")
        choice = cands[self._next % len(cands)]
        self._next += 1
        return RouteDecision(
            agent_id=request.agent_id,
            replica_id=choice.id,
            reason=RouteReason.round_robin,
            request_blocks=len(request.prefix_hashes),
        )

    def observe_served(self, decision: RouteDecision, hashes: Sequence[int], now: float) -> None:
        return None

    def forget_replica(self, replica_id: str) -> None:
        return None

    def release(self, agent_id: str) -> None:
        return None
