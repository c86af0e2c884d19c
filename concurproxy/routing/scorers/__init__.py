"""Routing scorers: one rule per module, each returning scores in [0, 1]."""

from concurproxy.routing.scorers.base import ScoreContext, Scorer
from concurproxy.routing.scorers.kv_headroom import KvHeadroomScorer
from concurproxy.routing.scorers.prefix_match import PrefixMatchScorer
from concurproxy.routing.scorers.queue import QueueScorer
from concurproxy.routing.scorers.registry import (
    ENTRY_POINT_GROUP,
    ScorerRegistry,
    UnknownScorer,
    WeightedScorer,
    default_registry,
)
from concurproxy.routing.scorers.session_affinity import SessionAffinityScorer
from concurproxy.routing.scorers.window_room import WindowRoomScorer

__all__ = [
    "ENTRY_POINT_GROUP",
    "KvHeadroomScorer",
    "PrefixMatchScorer",
    "QueueScorer",
    "ScoreContext",
    "Scorer",
    "ScorerRegistry",
    "SessionAffinityScorer",
    "UnknownScorer",
    "WeightedScorer",
    "WindowRoomScorer",
    "default_registry",
]
