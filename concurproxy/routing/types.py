"""Value types of the routing core: what the shell hands in, what the router hands back.

The shell builds one :class:`ReplicaView` per configured replica from its own state
(health checks, drain flags, the latest :class:`~concurproxy.control.types.PressureSnapshot`,
the admission window) and calls ``Router.route(request, views, now)``. The router never
reads a clock or does I/O; it keeps only its own bounded state (pins, prefix index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from concurproxy.control.types import PressureSnapshot


class RouteReason(StrEnum):
    """Why a step went where it went (a metrics label; keep the set small and stable)."""

    pinned = "pinned"  # the agent's pin held and won the scoring
    prefix = "prefix"  # first placement onto a replica that already holds part of its prefix
    placed = "placed"  # first placement, no resident prefix: bounded-load consistent hashing
    rebalanced = "rebalanced"  # the pin was valid but the weighted scores chose another replica
    overloaded = "overloaded"  # the pinned replica was above load_bound × mean load
    replica_down = "replica-down"  # the pinned replica is unhealthy or gone
    drained = "drained"  # the pinned replica is draining
    round_robin = "round-robin"
    least_loaded = "least-loaded"


#: Re-pins that throw away a resident prefix because the replica is gone (counted as lost prefixes).
LOST_PREFIX_REASONS = frozenset({RouteReason.replica_down, RouteReason.drained})


class NoHealthyReplica(LookupError):
    """No replica is healthy and not draining: the shell answers 503."""


# The value types below are read-only by convention, not frozen: the request path builds a
# request, a decision and one view per candidate every step, and a frozen dataclass's __init__
# (one object.__setattr__ call per field) costs ~5x a plain slotted one.


@dataclass(slots=True)
class RouteRequest:
    """One step to place (read-only).

    ``prefix_hashes`` are the chained block hashes of the canonical prompt
    (:func:`concurproxy.routing.prefix.hash_body`). ``sticky=False`` (anonymous,
    one-step requests) neither reads nor writes a pin.
    """

    agent_id: str
    prefix_hashes: Sequence[int] = ()
    prompt_tokens: int = 0
    sticky: bool = True


@dataclass(slots=True)
class ReplicaView:
    """The router's read-only view of one replica at decision time.

    ``kv_usage`` / ``waiting`` are ``None`` when unknown *or stale* (the shell decides
    staleness, see :meth:`from_snapshot`); unknown never scores as headroom.
    ``window_room`` / ``window_size``: free and total admission slots, when admission runs.
    ``load``: the shell's in-flight step count on this replica (the bounded-load input).
    """

    id: str
    healthy: bool = True
    draining: bool = False
    kv_usage: float | None = None
    waiting: int | None = None
    window_room: int | None = None
    window_size: int | None = None
    load: float = 0.0

    @property
    def eligible(self) -> bool:
        return self.healthy and not self.draining

    @classmethod
    def from_snapshot(
        cls,
        replica_id: str,
        snapshot: PressureSnapshot | None,
        now: float,
        stale_after_s: float,
        *,
        healthy: bool = True,
        draining: bool = False,
        window_room: int | None = None,
        window_size: int | None = None,
        load: float = 0.0,
    ) -> ReplicaView:
        """Build a view; a missing, failed or stale snapshot yields unknown pressure."""
        if snapshot is not None and snapshot.ok and snapshot.age(now) <= stale_after_s:
            return cls(
                replica_id, healthy, draining, snapshot.kv_usage, snapshot.waiting, window_room, window_size, load
            )
        return cls(replica_id, healthy, draining, None, None, window_room, window_size, load)


@dataclass(slots=True)
class RouteDecision:
    """Where a step goes and why (read-only). ``repinned_from`` names the replica the agent was pinned to
    when the step moved (reasons ``overloaded``, ``replica-down``, ``drained``, ``rebalanced``)."""

    agent_id: str
    replica_id: str
    reason: RouteReason
    matched_blocks: int = 0
    request_blocks: int = 0
    pinned: bool = False
    repinned_from: str | None = None

    @property
    def lost_prefix(self) -> bool:
        return self.repinned_from is not None and self.reason in LOST_PREFIX_REASONS


class PrefixLocator(Protocol):
    """Where does a request's prefix live? ``match`` returns, per replica holding at least the
    first block, the length of the longest run of the request's leading blocks it holds."""

    def match(self, hashes: Sequence[int], now: float) -> Mapping[str, int]: ...


class Router(Protocol):
    """One routing policy. Implementations keep their state bounded; calls are not thread-safe
    (the proxy calls them from its single event loop)."""

    def route(self, request: RouteRequest, replicas: Sequence[ReplicaView], now: float) -> RouteDecision:
        """Choose a replica; raises :class:`NoHealthyReplica` when none is eligible."""
        ...

    def observe_served(self, decision: RouteDecision, hashes: Sequence[int], now: float) -> None:
        """The step ran on ``decision.replica_id``; ``hashes`` are now resident there."""
        ...

    def forget_replica(self, replica_id: str) -> None:
        """Drop what is known about a replica's cache (it restarted or was removed)."""
        ...

    def release(self, agent_id: str) -> None:
        """Explicit end of an agent's session: drop its pin."""
        ...
