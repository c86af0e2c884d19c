"""Routing policies by name (``routing.policy``), built from the policy file's ``routing`` section.

The built-ins: ``prefix-affinity`` (the weighted scorers), ``round-robin`` and ``least-loaded``.
A policy factory takes the config, the scorer registry and an optional prefix locator (e.g. a
:class:`LayeredLocator` over the KV-event index) and returns a
:class:`~concurproxy.routing.types.Router`. Third parties add one through the entry-point group
``concurproxy.routers`` (:class:`~concurproxy.plugins.registry.Registry`, like every plugin kind).
"""

from __future__ import annotations

from collections.abc import Callable

from concurproxy.config.routing import RoutingConfig
from concurproxy.plugins.registry import EntryPointSource, Registry, UnknownPluginError, installed
from concurproxy.routing.affinity import AffinityParams, PrefixAffinityRouter
from concurproxy.routing.least_loaded import LeastLoadedRouter
from concurproxy.routing.round_robin import RoundRobinRouter
from concurproxy.routing.scorers.registry import ScorerRegistry, default_registry
from concurproxy.routing.types import PrefixLocator, Router

ENTRY_POINT_GROUP = "concurproxy.routers"
PolicyFactory = Callable[[RoutingConfig, ScorerRegistry, PrefixLocator | None], Router]


class UnknownPolicy(UnknownPluginError, KeyError):
    pass


def _prefix_affinity(cfg: RoutingConfig, reg: ScorerRegistry, locator: PrefixLocator | None) -> Router:
    return PrefixAffinityRouter(reg.build(cfg.scorers), AffinityParams.from_config(cfg), locator)


def _round_robin(cfg: RoutingConfig, reg: ScorerRegistry, locator: PrefixLocator | None) -> Router:
    return RoundRobinRouter()


def _least_loaded(cfg: RoutingConfig, reg: ScorerRegistry, locator: PrefixLocator | None) -> Router:
    return LeastLoadedRouter()


class RouterRegistry(Registry[PolicyFactory]):
    def __init__(self, *, entry_points: EntryPointSource = installed) -> None:
        builtins: dict[str, PolicyFactory] = {
            "prefix-affinity": _prefix_affinity,
            "round-robin": _round_robin,
            "least-loaded": _least_loaded,
        }
        super().__init__(
            "routing policy", ENTRY_POINT_GROUP, builtins, entry_points=entry_points, unknown=UnknownPolicy
        )


def default_policies(*, entry_points: EntryPointSource = installed) -> RouterRegistry:
    """A new registry of routing policies (no module state)."""
    return RouterRegistry(entry_points=entry_points)


def build_router(
    cfg: RoutingConfig,
    registry: ScorerRegistry | None = None,
    locator: PrefixLocator | None = None,
    policies: RouterRegistry | None = None,
) -> Router:
    """The router a policy file asks for; raises :class:`UnknownPolicy` / ``UnknownScorer``."""
    table = policies if policies is not None else default_policies()
    return table.get(cfg.policy)(cfg, registry if registry is not None else default_registry(), locator)
