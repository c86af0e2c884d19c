"""Fairness policies by registered name (``fairness.policy``), on the generic plugin registry.

Built-ins: ``fifo``, ``vtc``. Third parties add theirs through the entry-point
group ``concurproxy.fairness``; each entry point names a factory
``(FairnessParams) -> FairnessPolicy`` (a policy class taking the params works).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from concurproxy.control.fairness.base import FairnessParams, FairnessPolicy, FairQueue
from concurproxy.control.fairness.fifo import FifoPolicy
from concurproxy.control.fairness.vtc import VTCPolicy
from concurproxy.plugins.registry import EntryPointSource, Registry, UnknownPluginError, installed, no_entry_points

ENTRY_POINT_GROUP = "concurproxy.fairness"
PolicyFactory = Callable[[FairnessParams], FairnessPolicy[Any]]


class UnknownFairnessPolicy(UnknownPluginError, ValueError):
    pass


class FairnessRegistry(Registry[PolicyFactory]):
    def __init__(self, *, entry_points: EntryPointSource = installed) -> None:
        super().__init__(
            "fairness policy",
            ENTRY_POINT_GROUP,
            {FifoPolicy.name: FifoPolicy, VTCPolicy.name: VTCPolicy},
            entry_points=entry_points,
            unknown=UnknownFairnessPolicy,
        )

    def create(self, name: str, params: FairnessParams) -> FairnessPolicy[Any]:
        return self.get(name)(params)

    def queue(self, name: str, params: FairnessParams) -> FairQueue[Any]:
        """A fresh `WaitQueue` ordered by the named policy."""
        return FairQueue(self.create(name, params))


def default_registry(*, plugins: bool = True) -> FairnessRegistry:
    """The built-ins, and (``plugins``) the installed ones, looked up when first named."""
    return FairnessRegistry(entry_points=installed if plugins else no_entry_points)
