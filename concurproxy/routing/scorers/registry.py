"""Scorers by type name (``routing.scorers[].type``), and the weighted list a policy file asks for.

``default_registry()`` returns a *new* registry holding the built-ins (no module state).
Third-party scorers register through the entry-point group ``concurproxy.scorers``: each
entry point's name is the type name and its object a zero-argument factory returning a
:class:`~concurproxy.routing.scorers.base.Scorer`. Like every plugin kind they are found
when a policy first names them (:class:`~concurproxy.plugins.registry.Registry`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from concurproxy.config.routing import ScorerConfig
from concurproxy.plugins.registry import EntryPointSource, Registry, UnknownPluginError, installed
from concurproxy.routing.scorers.base import Scorer
from concurproxy.routing.scorers.kv_headroom import KvHeadroomScorer
from concurproxy.routing.scorers.prefix_match import PrefixMatchScorer
from concurproxy.routing.scorers.queue import QueueScorer
from concurproxy.routing.scorers.session_affinity import SessionAffinityScorer
from concurproxy.routing.scorers.window_room import WindowRoomScorer

ENTRY_POINT_GROUP = "concurproxy.scorers"
ScorerFactory = Callable[[], Scorer]


class UnknownScorer(UnknownPluginError, KeyError):
    pass


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


class ScorerRegistry(Registry[ScorerFactory]):
    def __init__(self, *, entry_points: EntryPointSource = installed) -> None:
        builtins: dict[str, ScorerFactory] = {
            f.name: f
            for f in (SessionAffinityScorer, PrefixMatchScorer, KvHeadroomScorer, QueueScorer, WindowRoomScorer)
        }
        super().__init__("scorer", ENTRY_POINT_GROUP, builtins, entry_points=entry_points, unknown=UnknownScorer)

    def create(self, name: str) -> Scorer:
        return self.get(name)()

    def build(self, configs: Iterable[ScorerConfig]) -> list[WeightedScorer]:
        """The weighted scorer list of a routing policy (zero weights are dropped)."""
        return [WeightedScorer(self.create(c.type), c.weight) for c in configs if c.weight > 0]


def default_registry(*, entry_points: EntryPointSource = installed) -> ScorerRegistry:
    return ScorerRegistry(entry_points=entry_points)
