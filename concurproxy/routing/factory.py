"""Routing policies by name, built from the policy file's ``routing`` section.

``default_policies()`` returns a new mapping (no module state): ``prefix-affinity`` (the
weighted scorers), ``round-robin`` and ``least-loaded``. A policy factory takes the config,
the scorer registry and an optional prefix locator (e.g. a :class:`LayeredLocator` over the
KV-event index) and returns a :class:`~concurproxy.routing.types.Router`.
"""

from __future__ import annotations

from collections.abc import Callable

from concurproxy.config.routing import RoutingConfig
from concurproxy.routing.affinity import AffinityParams, PrefixAffinityRouter
from concurproxy.routing.least_loaded import LeastLoadedRouter
from concurproxy.routing.round_robin import RoundRobinRouter
from concurproxy.routing.scorers.registry import ScorerRegistry, default_registry
from concurproxy.routing.types import PrefixLocator, Router

PolicyFactory = Callable[[RoutingConfig, ScorerRegistry, PrefixLocator | None], Router]


class UnknownPolicy(KeyError):
    pass


def _prefix_affinity(cfg: RoutingConfig, reg: ScorerRegistry, locator: PrefixLocator | None) -> Router:
    return PrefixAffinityRouter(reg.build(cfg.scorers), AffinityParams.from_config(cfg), locator)


def _round_robin(cfg: RoutingConfig, reg: ScorerRegistry, locator: PrefixLocator | None) -> Router:
    return RoundRobinRouter()


def _least_loaded(cfg: RoutingConfig, reg: ScorerRegistry, locator: PrefixLocator | None) -> Router:
    return LeastLoadedRouter()


def default_policies() -> dict[str, PolicyFactory]:
    return {
        "prefix-affinity": _prefix_affinity,
        "round-robin": _round_robin,
        "least-loaded": _least_loaded,
    }


def build_router(
    cfg: RoutingConfig,
    registry: ScorerRegistry | None = None,
    locator: PrefixLocator | None = None,
    policies: dict[str, PolicyFactory] | None = None,
) -> Router:
    """The router a policy file asks for; raises :class:`UnknownPolicy` / ``UnknownScorer``."""
    table = policies if policies is not None else default_policies()
    try:
        factory = table[cfg.policy]
    except KeyError:
        known = ", ".join(sorted(table))
        raise UnknownPolicy(f"unknown routing policy {cfg.policy!r}; known: {known}") from None
    return factory(cfg, registry if registry is not None else default_registry(), locator)
