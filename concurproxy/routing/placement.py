"""Filters and bounded-load placement helpers shared by the routing policies.

*Health filter*: a replica is a candidate iff it is healthy and not draining.

*Overload* (for steps of already-pinned agents): with ``mean`` the mean ``load`` over the
candidates, replica ``r`` is overloaded iff ``load(r) > load_bound · mean`` and
``load(r) >= min_load``. The floor keeps an almost idle fleet (2 in flight vs 1) from
shuffling agents off their hot prefixes.

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
from collections.abc import Iterable, Sequence

from concurproxy.routing.types import ReplicaView


def candidates(replicas: Iterable[ReplicaView]) -> list[ReplicaView]:
    """The health filter: healthy and not draining."""
    return [r for r in replicas if r.healthy and not r.draining]


def overloaded(replicas: Sequence[ReplicaView], load_bound: float, min_load: float) -> set[str]:
    """Ids of candidates whose load exceeds ``load_bound ×`` the candidates' mean load."""
    if not replicas:
        return set()
    mean = sum(r.load for r in replicas) / len(replicas)
    limit = load_bound * mean
    return {r.id for r in replicas if r.load > limit and r.load >= min_load}


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
