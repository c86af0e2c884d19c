"""Routing stage: build the router's view of the replicas and carry out its choice.

Adapter between the request path and a pure `concurproxy.routing.Router`. Per
step it routes on the prompt's chained block keys (computed before, by
`concurproxy.tokenizer.StepTokens`, only for policies that use them), builds one
`ReplicaView` per candidate from health, drain state, the latest pressure
snapshot and admission-window room, and after a served step tells the router the
prefix is now resident there.

The router's prefix index says which blocks a replica *should* hold; under pressure the engine
evicts them on its own schedule. `ResidentTrust` keeps, per replica, how much of what the index
matched the engine really reported cached (``cached_tokens`` of the usage), and the estimate of
the resident prefix that admission and cost-aware dispatch read is scaled by it. Measured on
the fairness benchmark (bundled worker, heavy agents growing to 12k tokens beside a light
tenant): the index believed ~9.5k of a 10.6k prompt resident where the engine had 992, so heavy
prefills were judged short and sent beside the light tenant's control steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from concurproxy.control.types import PressureSnapshot
from concurproxy.routing import PrefixAffinityRouter, ReplicaView, RouteRequest
from concurproxy.routing.types import Router
from concurproxy.server.stages.calibration import KeyedMean
from concurproxy.server.step import StepContext, StepOutcome
from concurproxy.tokenizer.step import StepTokens
from concurproxy.upstream.replica import Replica

SnapshotFn = Callable[[str], PressureSnapshot | None]
WindowFn = Callable[[str], tuple[int, int] | None]


class ResidentTrust:
    """Per replica: the share of the index-matched prefix the engine reported cached, an exponentially
    weighted mean (``alpha`` for the newest step), 1 until a step says otherwise. Bounded table."""

    __slots__ = ("_share",)

    def __init__(self, alpha: float = 0.2, max_replicas: int = 1024) -> None:
        self._share = KeyedMean(alpha, max_replicas)

    def share(self, replica: str) -> float:
        s = self._share.get(replica)
        return 1.0 if s is None else s

    def observe(self, replica: str, indexed_tokens: int, cached_tokens: int) -> None:
        if indexed_tokens > 0:
            self._share.add(replica, min(1.0, max(0.0, cached_tokens / indexed_tokens)))

    def forget(self, replica: str) -> None:
        self._share.forget(replica)


class RoutingStage:
    def __init__(
        self,
        router: Router,
        block_tokens: int,
        stale_after_s: float,
        snapshots: SnapshotFn | None = None,
        windows: WindowFn | None = None,
        tokens: StepTokens | None = None,
    ) -> None:
        self.router = router
        self.block_tokens = block_tokens
        self.stale_after_s = stale_after_s
        self.snapshots = snapshots
        self.windows = windows
        self.uses_prefix = isinstance(router, PrefixAffinityRouter)
        self.tokens = tokens  # its per-agent caches are dropped with the agent (release)
        self.trust = ResidentTrust()

    def pick(self, ctx: StepContext, candidates: Sequence[Replica], now: float) -> Replica:
        step = ctx.step
        if len(candidates) == 1 and self.uses_prefix:
            # The prefix-affinity router takes a lone candidate without scoring or load checks: it
            # reads only health and drain state, so the pressure and window lookups are skipped.
            r = candidates[0]
            views = [ReplicaView(r.id, True, r.draining, None, None, None, None, r.in_flight)]
        else:
            views = [self._view(r, now) for r in candidates]
        request = RouteRequest(
            step.agent_id, ctx.prompt_hashes or (), step.est_prompt_tokens, not ctx.identity.one_shot
        )
        decision = self.router.route(request, views, now)
        ctx.route_decision = decision
        if decision.matched_blocks and ctx.local_prompt_tokens:
            # in the engine's units, like est_prompt_tokens (see stages/calibration.py); the pipeline
            # puts it into the step admission reads
            resident = decision.matched_blocks * self.block_tokens
            indexed = min(resident * step.est_prompt_tokens // ctx.local_prompt_tokens, step.est_prompt_tokens)
            ctx.indexed_prefix_tokens = indexed
            ctx.resident_prefix_tokens = int(indexed * self.trust.share(decision.replica_id))
        else:
            ctx.indexed_prefix_tokens = ctx.resident_prefix_tokens = 0
        for r in candidates:
            if r.id == decision.replica_id:
                return r
        raise AssertionError(f"router chose {decision.replica_id!r}, not a candidate")

    def _view(self, r: Replica, now: float) -> ReplicaView:
        """A candidate's view. Healthy: the pool chose the candidates (`ReplicaPool.available`), in panic
        routing unhealthy ones too, and the router must not filter them out again."""
        snap = self.snapshots(r.id) if self.snapshots else None
        room = self.windows(r.id) if self.windows else None
        if room is None:
            return ReplicaView.from_snapshot(
                r.id, snap, now, self.stale_after_s, healthy=True, draining=r.draining, load=r.in_flight
            )
        return ReplicaView.from_snapshot(
            r.id,
            snap,
            now,
            self.stale_after_s,
            healthy=True,
            draining=r.draining,
            window_room=room[0],
            window_size=room[1],
            load=r.in_flight,
        )

    def forget_replica(self, replica_id: str) -> None:
        self.router.forget_replica(replica_id)
        self.trust.forget(replica_id)

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        decision = ctx.route_decision
        if decision is None:
            return
        if ctx.outcome == StepOutcome.success and ctx.status == 200:
            self.router.observe_served(decision, ctx.prompt_hashes or (), now)
            usage = ctx.usage
            if usage is not None and usage.cached_tokens is not None and ctx.indexed_prefix_tokens > 0:
                self.trust.observe(decision.replica_id, ctx.indexed_prefix_tokens, usage.cached_tokens)
        if ctx.identity.done and not ctx.identity.one_shot:
            self.release(ctx.step.agent_id)

    def release(self, agent_id: str) -> None:
        """The agent is finished: drop its pin and its cached prompt encoding."""
        self.router.release(agent_id)
        if self.tokens is not None:
            self.tokens.forget(agent_id)
