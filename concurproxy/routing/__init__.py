"""Pure routing core: replica choice per step (prefix affinity, bounded load, failover).

Nothing here does I/O (apart from the explicit entry-point loading in the scorer registry),
reads a clock or imports asyncio: time comes in as ``now``. The proxy shell builds
:class:`ReplicaView` s, calls ``router.route(...)`` and ``router.observe_served(...)``.
"""

from concurproxy.routing.affinity import AffinityParams, PrefixAffinityRouter
from concurproxy.routing.factory import UnknownPolicy, build_router, default_policies
from concurproxy.routing.index import PrefixIndex
from concurproxy.routing.least_loaded import LeastLoadedRouter
from concurproxy.routing.locator import LayeredLocator
from concurproxy.routing.pins import PinTable
from concurproxy.routing.prefix import hash_body, hash_text, hash_tokens
from concurproxy.routing.prompt_cache import IncrementalPrefixHasher, PromptHashes
from concurproxy.routing.round_robin import RoundRobinRouter
from concurproxy.routing.types import (
    LOST_PREFIX_REASONS,
    NoHealthyReplica,
    PrefixLocator,
    ReplicaView,
    RouteDecision,
    Router,
    RouteReason,
    RouteRequest,
)

__all__ = [
    "LOST_PREFIX_REASONS",
    "AffinityParams",
    "IncrementalPrefixHasher",
    "LayeredLocator",
    "LeastLoadedRouter",
    "NoHealthyReplica",
    "PinTable",
    "PrefixAffinityRouter",
    "PrefixIndex",
    "PrefixLocator",
    "PromptHashes",
    "ReplicaView",
    "RoundRobinRouter",
    "RouteDecision",
    "RouteReason",
    "RouteRequest",
    "Router",
    "UnknownPolicy",
    "build_router",
    "default_policies",
    "hash_body",
    "hash_text",
    "hash_tokens",
]
