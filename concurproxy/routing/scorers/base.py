"""The scorer protocol: one scoring rule, a number in [0, 1] per candidate replica.

A picker combines scorers by weight: ``total(r) = Σ_k weight_k · score_k(r)``. Scorers are
pure and stateless; whatever state they read (the agent's pin, the prefix matches) is
computed once per request by the router and handed in as a :class:`ScoreContext`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from concurproxy.routing.types import ReplicaView, RouteRequest


@dataclass(frozen=True, slots=True)
class ScoreContext:
    """Per-request inputs shared by all scorers.

    ``matches``: leading prefix blocks held per replica (absent = 0).
    ``pinned``: the replica this agent is pinned to (None when unpinned or the pin lapsed).
    """

    request: RouteRequest
    now: float
    matches: Mapping[str, int] = field(default_factory=dict)
    pinned: str | None = None


class Scorer(Protocol):
    """Scores candidates; returns one value in [0, 1] per replica, in the same order."""

    name: str

    def score(self, ctx: ScoreContext, replicas: Sequence[ReplicaView]) -> list[float]: ...


def clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x
