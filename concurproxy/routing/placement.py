"""Filters and bounded-load placement helpers shared by the routing policies.

*Health filter*: a replica is a candidate iff it is healthy and not draining.

*Overload* (for steps of already-pinned agents): with ``mean`` the mean in-flight ``load``
over the candidates, replica ``r`` is overloaded iff (1) ``load(r) > load_bound · mean``,
(2) ``load(r) >= min_load`` and (3) it holds more pinned agents than the pin limit
``ceil(load_bound · pins / n) + slack``. Moving a pinned agent costs a full re-prefill of its
history elsewhere, so instantaneous in-flight skew alone (which a continuous-batching engine
absorbs, and which fluctuates with every long prefill) must not move agents; it moves them
only off a replica that also holds more than its share of agents — e.g. after a new replica
joined, or after a burst of placements. The floor keeps an almost idle fleet (2 in flight
vs 1) from shuffling agents off their hot prefixes.

*Bounded-load consistent hashing* (first placement; Mirrokni, Thorup & Zadimoghaddam 2018,
with rendezvous hashing instead of a ring): each replica may hold at most
``cap = ceil(load_bound · (pins + 1) / n)`` pinned agents; among the replicas under the cap
the router takes the best weighted score, and candidates whose scores tie (within an
epsilon) are ordered by the rendezvous weight ``H(agent, replica)``, so equal replicas get
agents spread evenly and deterministically across proxy instances, and removing a replica
moves only its own agents.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence

from concurproxy.routing.types import ReplicaView


def candidates(replicas: Iterable[ReplicaView]) -> list[ReplicaView]:
    """The health filter: healthy and not draining."""
    return [r for r in replicas if r.healthy and not r.draining]


def overloaded(
    replicas: Sequence[ReplicaView],
    load_bound: float,
    min_load: float,
    pins_of: Callable[[str], int],
    pin_limit: int,
) -> set[str]:
    """Ids of candidates over the load bound (see the module doc for the three conditions)."""
    if not replicas:
        return set()
    mean = sum(r.load for r in replicas) / len(replicas)
    limit = load_bound * mean
    return {r.id for r in replicas if r.load > limit and r.load >= min_load and pins_of(r.id) > pin_limit}


def pin_cap(total_pins: int, n_replicas: int, load_bound: float) -> int:
    """Most pinned agents one replica may hold when one more agent is placed."""
    return max(1, math.ceil(load_bound * (total_pins + 1) / max(1, n_replicas)))


def rendezvous_weight(agent_id: str, replica_id: str) -> int:
    """Stable pseudo-random weight of (agent, replica); highest weight wins ties."""
    data = f"{agent_id}\x00{replica_id}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def pick_best(agent_id: str, replicas: Sequence[ReplicaView], totals: Sequence[float], epsilon: float) -> int:
    """Index of the best total; totals within ``epsilon`` of the best are tied and broken by
    rendezvous weight."""
    best = max(totals)
    tied = [i for i, t in enumerate(totals) if t >= best - epsilon]
    if len(tied) == 1:
        return tied[0]
    return max(tied, key=lambda i: rendezvous_weight(agent_id, replicas[i].id))
