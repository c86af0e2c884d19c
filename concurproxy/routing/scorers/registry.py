"""Scorers by type name, and the weighted list a policy file asks for.

``default_registry()`` returns a *new* registry holding the built-ins (no module state).
Third-party scorers register through the entry-point group ``concurproxy.scorers``: each
entry point's name is the type name and its object a zero-argument factory returning a
:class:`~concurproxy.routing.scorers.base.Scorer`. Loading them reads package metadata, so
it is an explicit call the shell makes at startup (:meth:`ScorerRegistry.load_entry_points`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points

from concurproxy.config.routing import ScorerConfig
from concurproxy.routing.scorers.base import Scorer
from concurproxy.routing.scorers.kv_headroom import KvHeadroomScorer
from concurproxy.routing.scorers.prefix_match import PrefixMatchScorer
from concurproxy.routing.scorers.queue import QueueScorer
from concurproxy.routing.scorers.session_affinity import SessionAffinityScorer
from concurproxy.routing.scorers.window_room import WindowRoomScorer

ENTRY_POINT_GROUP = "concurproxy.scorers"
ScorerFactory = Callable[[], Scorer]


class UnknownScorer(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


class ScorerRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, ScorerFactory] = {}

    def register(self, name: str, factory: ScorerFactory) -> None:
        if name in self._factories:
            raise ValueError(f"scorer {name!r} is already registered")
        self._factories[name] = factory

    def create(self, name: str) -> Scorer:
        try:
            factory = self._factories[name]
        except KeyError:
            raise UnknownScorer(f"unknown scorer {name!r}; known: {', '.join(self.names())}") from None
        return factory()

    def names(self) -> list[str]:
        return sorted(self._factories)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register third-party scorers; returns the names added (built-ins are not overridden)."""
        added = []
        for ep in entry_points(group=group):
            if ep.name in self._factories:
                continue
            self._factories[ep.name] = ep.load()
            added.append(ep.name)
        return added

    def build(self, configs: Iterable[ScorerConfig]) -> list[WeightedScorer]:
        """The weighted scorer list of a routing policy (zero weights are dropped)."""
        return [WeightedScorer(self.create(c.type), c.weight) for c in configs if c.weight > 0]


def default_registry() -> ScorerRegistry:
    reg = ScorerRegistry()
    for factory in (
        SessionAffinityScorer,
        PrefixMatchScorer,
        KvHeadroomScorer,
        QueueScorer,
        WindowRoomScorer,
    ):
        reg.register(factory.name, factory)
    return reg
