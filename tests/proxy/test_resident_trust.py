"""The resident-prefix estimate follows what the engine reports cached, not only the router's index."""

from __future__ import annotations

import pytest

from concurproxy.control.types import PriorityClass, StepInfo
from concurproxy.identity import Identity
from concurproxy.routing.types import RouteDecision, RouteReason
from concurproxy.server.api.usage import Usage
from concurproxy.server.hooks import StepContext
from concurproxy.server.stages.routing import ResidentTrust, RoutingStage
from concurproxy.upstream.replica import Replica


class IndexSaysResident:
    """A router whose prefix index matches 40 of the prompt's blocks on r0 (16 tokens each)."""

    def route(self, request: object, views: object, now: float) -> RouteDecision:
        return RouteDecision("a", "r0", RouteReason.pinned, matched_blocks=40, request_blocks=42, pinned=True)

    def observe_served(self, decision: object, hashes: object, now: float) -> None:
        pass


def ctx() -> StepContext:
    step = StepInfo("t", "r", "a", "k", priority=PriorityClass.normal, est_prompt_tokens=672)
    c = StepContext("id", "chat", Identity("t", "a", "k", "r", None, False, False), step, {}, "m", False, 0.0)
    c.local_prompt_tokens = 672
    return c


def test_trust_is_a_bounded_weighted_mean_of_the_cached_share() -> None:
    t = ResidentTrust(alpha=0.5)
    assert t.share("r0") == 1.0  # nothing seen: the index is believed
    t.observe("r0", 640, 64)
    assert t.share("r0") == pytest.approx(0.1)
    t.observe("r0", 640, 6400)  # more cached than indexed counts as all of it, no more
    assert t.share("r0") == pytest.approx(0.55)
    t.observe("r0", 0, 100)  # nothing indexed: no sample
    assert t.share("r0") == pytest.approx(0.55)
    t.forget("r0")
    assert t.share("r0") == 1.0


def test_an_index_the_engine_contradicts_stops_counting_a_prefix_as_resident() -> None:
    stage = RoutingStage(IndexSaysResident(), block_tokens=16, stale_after_s=1.0)  # type: ignore[arg-type]
    r0 = Replica("r0", "http://127.0.0.1:1")
    first = ctx()
    stage.pick(first, [r0], 0.0)
    assert first.resident_prefix_tokens == 640  # 40 blocks: believed while nothing contradicts it
    first.status, first.usage = 200, Usage(672, 16, cached_tokens=64)  # the engine had evicted most of it
    stage.on_step_end(first, 0.1)
    second = ctx()
    stage.pick(second, [r0], 0.2)
    assert second.indexed_prefix_tokens == 640
    assert second.resident_prefix_tokens == 64  # what admission's footprint and dispatch's cost now read
