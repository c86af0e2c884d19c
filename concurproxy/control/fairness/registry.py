"""Fairness policies by registered name (``fairness.policy`` in the policy file).

Built-ins: ``fifo``, ``vtc``. Third parties add theirs through the entry-point
group ``concurproxy.fairness``; each entry point names a factory
``(FairnessParams) -> FairnessPolicy`` (a policy class taking the params works).
Entry points are read only when `load_entry_points` is called (at startup), never on import.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from concurproxy.control.fairness.base import FairnessParams, FairnessPolicy, FairQueue
from concurproxy.control.fairness.fifo import FifoPolicy
from concurproxy.control.fairness.vtc import VTCPolicy

ENTRY_POINT_GROUP = "concurproxy.fairness"
PolicyFactory = Callable[[FairnessParams], FairnessPolicy[Any]]


class UnknownFairnessPolicy(ValueError):
    pass


class FairnessRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, PolicyFactory] = {}

    def register(self, name: str, factory: PolicyFactory, *, replace: bool = False) -> None:
        if name in self._factories and not replace:
            raise ValueError(f"fairness policy {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, params: FairnessParams) -> FairnessPolicy[Any]:
        factory = self._factories.get(name)
        if factory is None:
            raise UnknownFairnessPolicy(f"unknown fairness policy {name!r}; known: {', '.join(self.names())}")
        return factory(params)

    def queue(self, name: str, params: FairnessParams) -> FairQueue[Any]:
        """A fresh `WaitQueue` ordered by the named policy."""
        return FairQueue(self.create(name, params))

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register installed plugins of ``group`` (built-ins win a name clash); returns their names."""
        added = []
        for ep in entry_points(group=group):
            if ep.name not in self._factories:
                self._factories[ep.name] = ep.load()
                added.append(ep.name)
        return added


def default_registry(*, plugins: bool = True) -> FairnessRegistry:
    reg = FairnessRegistry()
    reg.register(FifoPolicy.name, FifoPolicy)
    reg.register(VTCPolicy.name, VTCPolicy)
    if plugins:
        reg.load_entry_points()
    return reg
