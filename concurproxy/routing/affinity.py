"""``prefix-affinity``: keep each agent where its prefix is, within a load bound.

Algorithm, per step (``route``):

1. *Filter*: candidates are the healthy, non-draining replicas; none → :class:`NoHealthyReplica`.
2. *Pin check*: the agent's pin (TTL ``pin_ttl_s``) is kept when its replica is a candidate
   and not overloaded (in-flight load above ``load_bound ×`` the mean *and* more than its
   share of pinned agents, see :mod:`~concurproxy.routing.placement`); otherwise the step moves
   and the agent is re-pinned with reason ``replica-down`` (unhealthy or gone), ``drained``
   or ``overloaded``.
3. *Pool*: candidates minus overloaded replicas (all candidates if that empties it). An agent
   without a live pin (new, lapsed or moving) is further limited to replicas under the pin
   cap ``ceil(load_bound · (pins + 1) / n) + pin_slack`` — bounded-load consistent hashing
   (the small slack lets the first few siblings of a task share their system prompt).
4. *Score*: ``total(r) = Σ_k w_k · score_k(r) / Σ_k w_k`` over the configured scorers
   (session-affinity, prefix-match, kv-headroom, queue, window-room, plugins). Totals within
   ``tie_epsilon`` of the best tie and are broken by rendezvous hash of (agent, replica).
   A new replica has an empty cache and the most headroom, so it wins new agents until the
   pin cap stops it. A pool of one is taken without scoring (scorers are pure, the choice is forced).
5. *Commit*: pin the agent to the choice and record the prefix as routed there (the approximate
   index), so a sibling agent sharing the prefix finds it before the step completes.

``observe_served`` refreshes pin and index after the step (pass prompt+output hashes to make
the next step's longer prefix match). State: a :class:`PinTable` and a :class:`PrefixIndex`,
both bounded. Not thread-safe: one event loop calls it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from concurproxy.config.routing import RoutingConfig
from concurproxy.routing.index import PrefixIndex
from concurproxy.routing.pins import PinTable
from concurproxy.routing.placement import overloaded, pick_best, pin_cap
from concurproxy.routing.scorers.base import ScoreContext
from concurproxy.routing.scorers.registry import WeightedScorer
from concurproxy.routing.types import (
    NoHealthyReplica,
    PrefixLocator,
    ReplicaView,
    RouteDecision,
    RouteReason,
    RouteRequest,
)


@dataclass(frozen=True, slots=True)
class AffinityParams:
    """Tunables; the first four come from :class:`RoutingConfig`."""

    block_tokens: int = 16
    load_bound: float = 1.25
    pin_ttl_s: float = 600.0
    index_max_blocks: int = 200_000
    max_pins: int = 1_000_000
    pin_slack: int = 2  # extra pins over the bounded-load cap, so a few siblings can share a prefix
    overload_min_load: float = 4.0  # a replica with fewer steps in flight is never "overloaded"
    tie_epsilon: float = 0.01  # normalised score difference treated as a tie
    index_max_age_s: float | None = None

    @classmethod
    def from_config(cls, cfg: RoutingConfig) -> AffinityParams:
        return cls(
            block_tokens=cfg.block_tokens,
            load_bound=cfg.load_bound,
            pin_ttl_s=cfg.pin_ttl_s,
            index_max_blocks=cfg.index_max_blocks,
        )


class PrefixAffinityRouter:
    def __init__(
        self,
        scorers: Sequence[WeightedScorer],
        params: AffinityParams | None = None,
        locator: PrefixLocator | None = None,
    ) -> None:
        self.params = params or AffinityParams()
        self.scorers = list(scorers)
        self._wsum = sum(ws.weight for ws in self.scorers) or 1.0
        self.pins = PinTable(self.params.pin_ttl_s, self.params.max_pins)
        self.index = PrefixIndex(self.params.index_max_blocks, self.params.index_max_age_s)
        self.locator: PrefixLocator = locator if locator is not None else self.index

    def route(self, request: RouteRequest, replicas: Sequence[ReplicaView], now: float) -> RouteDecision:
        p = self.params
        pins = self.pins
        pins.expire(now)
        cands = [r for r in replicas if r.healthy and not r.draining]  # placement.candidates, inlined
        if not cands:
            raise NoHealthyReplica("no healthy, non-draining replica")
        agent = request.agent_id
        hashes = request.prefix_hashes
        sticky = request.sticky
        single = len(cands) == 1  # a forced choice: no replica can be over the mean, nothing to score
        over: set[str] = set()
        if not single:
            pin_limit = pin_cap(max(0, len(pins) - 1), len(cands), p.load_bound) + p.pin_slack
            over = overloaded(cands, p.load_bound, p.overload_min_load, pins.count, pin_limit)

        pinned = pins.get(agent, now) if sticky else None
        live_pin: str | None = None
        moved: RouteReason | None = None
        if pinned is not None:
            view = None
            for r in replicas:
                if r.id == pinned:
                    view = r
                    break
            if view is None or not view.healthy:
                moved = RouteReason.replica_down
            elif view.draining:
                moved = RouteReason.drained
            elif pinned in over:
                moved = RouteReason.overloaded
            else:
                live_pin = pinned

        matches = self.locator.match(hashes, now) if hashes else {}
        if single:
            choice = cands[0].id  # scorers are pure: scoring a single option cannot change it
        else:
            pool = [r for r in cands if r.id not in over] if over else cands
            if not pool:
                pool = cands
            if live_pin is None and sticky:
                cap = pin_cap(len(pins), len(cands), p.load_bound) + p.pin_slack
                under = [r for r in pool if pins.count(r.id) < cap or r.id == pinned]
                if under:
                    pool = under
            choice = pool[0].id if len(pool) == 1 else pool[self._best(request, pool, matches, live_pin, now)].id

        matched = matches.get(choice, 0)
        repinned_from: str | None = None
        if live_pin is not None:
            if choice == live_pin:
                reason = RouteReason.pinned
            else:
                reason, repinned_from = RouteReason.rebalanced, live_pin
        elif moved is not None:
            reason, repinned_from = moved, pinned
        else:
            reason = RouteReason.prefix if matched > 0 else RouteReason.placed

        if sticky:
            pins.set(agent, choice, now)
        if matched < len(hashes):  # fully held: observe_served refreshes recency
            self.index.record(choice, hashes, now)
        return RouteDecision(agent, choice, reason, matched, len(hashes), reason is RouteReason.pinned, repinned_from)

    def _best(
        self,
        request: RouteRequest,
        pool: Sequence[ReplicaView],
        matches: Mapping[str, int],
        pinned: str | None,
        now: float,
    ) -> int:
        """Index in ``pool`` of the best weighted total (ties: rendezvous hash)."""
        ctx = ScoreContext(request=request, now=now, matches=matches, pinned=pinned)
        totals = [0.0] * len(pool)
        for ws in self.scorers:
            w = ws.weight / self._wsum
            for i, s in enumerate(ws.scorer.score(ctx, pool)):
                totals[i] += w * s
        return pick_best(request.agent_id, pool, totals, self.params.tie_epsilon)

    def observe_served(self, decision: RouteDecision, hashes: Sequence[int], now: float) -> None:
        if decision.agent_id:
            self.pins.touch(decision.agent_id, decision.replica_id, now)
        self.index.record(decision.replica_id, hashes, now)

    def forget_replica(self, replica_id: str) -> None:
        self.index.forget_replica(replica_id)

    def release(self, agent_id: str) -> None:
        self.pins.release(agent_id)
