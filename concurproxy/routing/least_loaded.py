"""``least-loaded``: each step to the eligible replica with the least work.

Order key: ``(load, waiting, kv_usage)`` ascending, unknown ``waiting`` / ``kv_usage``
counting as worst; exact ties rotate so equal replicas share the steps. No pins, no prefix
index. Not thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from concurproxy.routing.placement import candidates
from concurproxy.routing.types import NoHealthyReplica, ReplicaView, RouteDecision, RouteReason, RouteRequest

_INF = float("inf")


def _key(r: ReplicaView) -> tuple[float, float, float]:
    return (
        r.load,
        _INF if r.waiting is None else float(r.waiting),
        _INF if r.kv_usage is None else r.kv_usage,
    )


class LeastLoadedRouter:
    def __init__(self) -> None:
        self._turn = 0

    def route(self, request: RouteRequest, replicas: Sequence[ReplicaView], now: float) -> RouteDecision:
        cands = candidates(replicas)
        if not cands:
            raise NoHealthyReplica("no healthy, non-draining replica")
        keys = [_key(r) for r in cands]
        best = min(keys)
        tied = [r for r, k in zip(cands, keys, strict=True) if k == best]
        choice = tied[self._turn % len(tied)]
        self._turn += 1
        return RouteDecision(
            agent_id=request.agent_id,
            replica_id=choice.id,
            reason=RouteReason.least_loaded,
            request_blocks=len(request.prefix_hashes),
        )

    def observe_served(self, decision: RouteDecision, hashes: Sequence[int], now: float) -> None:
        return None

    def forget_replica(self, replica_id: str) -> None:
        return None

    def release(self, agent_id: str) -> None:
        return None
