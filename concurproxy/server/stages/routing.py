"""Routing stage: build the router's view of the replicas and carry out its choice.

Adapter between the request path and a pure `concurproxy.routing.Router`. Per
step it routes on the prompt's chained block keys (computed before, by
`concurproxy.tokenizer.StepTokens`, only for policies that use them), builds one
`ReplicaView` per candidate from health, drain state, the latest pressure
snapshot and admission-window room, and after a served step tells the router the
prefix is now resident there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from concurproxy.control.types import PressureSnapshot
from concurproxy.routing import PrefixAffinityRouter, ReplicaView, RouteRequest
from concurproxy.routing.types import Router
from concurproxy.server.step import StepContext, StepOutcome
from concurproxy.tokenizer.step import StepTokens
from concurproxy.upstream.replica import Replica

SnapshotFn = Callable[[str], PressureSnapshot | None]
WindowFn = Callable[[str], tuple[int, int] | None]


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

    def pick(self, ctx: StepContext, candidates: Sequence[Replica], now: float) -> Replica:
        step = ctx.step
        if len(candidates) == 1 and self.uses_prefix:
            # The prefix-affinity router takes a lone candidate without scoring or load checks: it
            # reads only health and drain state, so the pressure and window lookups are skipped.
            r = candidates[0]
            views = [ReplicaView(r.id, r.healthy, r.draining, None, None, None, None, r.in_flight)]
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
            scaled = resident * step.est_prompt_tokens // ctx.local_prompt_tokens
            ctx.resident_prefix_tokens = min(scaled, step.est_prompt_tokens)
        else:
            ctx.resident_prefix_tokens = 0
        for r in candidates:
            if r.id == decision.replica_id:
                return r
        raise AssertionError(f"router chose {decision.replica_id!r}, not a candidate")

    def _view(self, r: Replica, now: float) -> ReplicaView:
        snap = self.snapshots(r.id) if self.snapshots else None
        room = self.windows(r.id) if self.windows else None
        if room is None:
            return ReplicaView.from_snapshot(
                r.id, snap, now, self.stale_after_s, healthy=r.healthy, draining=r.draining, load=r.in_flight
            )
        return ReplicaView.from_snapshot(
            r.id,
            snap,
            now,
            self.stale_after_s,
            healthy=r.healthy,
            draining=r.draining,
            window_room=room[0],
            window_size=room[1],
            load=r.in_flight,
        )

    def forget_replica(self, replica_id: str) -> None:
        self.router.forget_replica(replica_id)

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        decision = ctx.route_decision
        if decision is None:
            return
        if ctx.outcome == StepOutcome.success and ctx.status == 200:
            self.router.observe_served(decision, ctx.prompt_hashes or (), now)
        if ctx.identity.done and not ctx.identity.one_shot:
            self.release(ctx.step.agent_id)

    def release(self, agent_id: str) -> None:
        """The agent is finished: drop its pin and its cached prompt encoding."""
        self.router.release(agent_id)
        if self.tokens is not None:
            self.tokens.forget(agent_id)
