"""The prefix-affinity router: pins, prefix placement, bounded load, failover, new replicas."""

import pytest

from concurproxy.config.routing import RoutingConfig, ScorerConfig
from concurproxy.routing import (
    AffinityParams,
    NoHealthyReplica,
    PrefixAffinityRouter,
    ReplicaView,
    RouteReason,
    RouteRequest,
    build_router,
)
from concurproxy.routing.prefix import hash_tokens
from concurproxy.routing.scorers import default_registry


def router(**params: object) -> PrefixAffinityRouter:
    r = build_router(RoutingConfig())
    assert isinstance(r, PrefixAffinityRouter)
    if params:
        r = PrefixAffinityRouter(r.scorers, AffinityParams(**params))  # type: ignore[arg-type]
    return r


def fleet(n: int = 4, **kw: object) -> list[ReplicaView]:
    return [ReplicaView(f"r{i}", kv_usage=0.3, waiting=0, **kw) for i in range(n)]  # type: ignore[arg-type]


def req(agent: str, seed: int = 0, blocks: int = 8) -> RouteRequest:
    return RouteRequest(agent, tuple(hash_tokens([seed] * 16 * blocks, 16)))


def test_pinned_agent_stays_and_reports_matched_blocks() -> None:
    r = router()
    views = fleet()
    d0 = r.route(req("a"), views, now=0.0)
    assert d0.reason in (RouteReason.placed, RouteReason.prefix) and not d0.pinned
    r.observe_served(d0, req("a").prefix_hashes, now=1.0)
    d1 = r.route(req("a"), views, now=2.0)
    assert (d1.replica_id, d1.reason, d1.pinned, d1.matched_blocks) == (
        d0.replica_id,
        RouteReason.pinned,
        True,
        8,
    )


def test_weighted_numbers_decide_against_a_weak_pin() -> None:
    # Only kv-headroom (w=1) and session-affinity (w=0.1): a 30-point headroom gap beats the pin.
    reg = default_registry()
    scorers = reg.build([ScorerConfig(type="session-affinity", weight=0.1), ScorerConfig(type="kv-headroom", weight=1)])
    r = PrefixAffinityRouter(scorers)
    views = [ReplicaView("r0", kv_usage=0.5), ReplicaView("r1", kv_usage=0.1)]
    r.pins.set("a", "r0", 0.0)
    d = r.route(RouteRequest("a"), views, now=1.0)
    # totals: r0 = (0.1*1 + 1*0.5)/1.1 = 0.545, r1 = (1*0.9)/1.1 = 0.818
    assert (d.replica_id, d.reason, d.repinned_from) == ("r1", RouteReason.rebalanced, "r0")


def test_new_agent_follows_a_shared_prefix() -> None:
    r = router()
    views = fleet()
    d0 = r.route(req("planner", seed=7), views, 0.0)
    d1 = r.route(req("worker-1", seed=7), views, 0.1)  # same system prompt, a sibling agent
    assert d1.replica_id == d0.replica_id and d1.reason is RouteReason.prefix and d1.matched_blocks == 8


def test_pin_ttl_lapses() -> None:
    r = router(pin_ttl_s=5.0)
    views = fleet()
    d0 = r.route(RouteRequest("a"), views, 0.0)
    assert r.route(RouteRequest("a"), views, 4.0).reason is RouteReason.pinned
    assert r.pins.get("a", 9.5) is None
    d2 = r.route(RouteRequest("a"), views, 10.0)
    assert d2.reason is RouteReason.placed and d0.replica_id  # placed afresh


def test_first_placement_spreads_pins_evenly() -> None:
    r = router()
    views = fleet(4)
    for i in range(400):
        r.route(RouteRequest(f"agent-{i}"), views, 0.0)
    counts = [r.pins.count(f"r{i}") for i in range(4)]
    assert sum(counts) == 400 and max(counts) <= 127  # cap = ceil(1.25 * 400 / 4) + 2
    assert min(counts) >= 60


def test_new_replica_gets_new_agents_first() -> None:
    r = router()
    old = [ReplicaView(f"r{i}", kv_usage=0.6, waiting=1) for i in range(3)]
    for i in range(30):
        r.route(req(f"a{i}", seed=i), old, 0.0)
    views = [*old, ReplicaView("new", kv_usage=0.0, waiting=0)]
    placed = [r.route(req(f"n{i}", seed=100 + i), views, 1.0).replica_id for i in range(20)]
    # the newcomer takes every new agent while k < ceil(1.25 * (31 + k) / 4) + 2, i.e. k <= 16 ...
    assert placed[:17] == ["new"] * 17
    # ... then the others get them again; old agents stay where their prefix is
    assert placed[17] != "new"
    assert r.pins.count("new") <= 18
    assert r.route(req("a0", seed=0), views, 1.0).reason is RouteReason.pinned


def test_overloaded_replica_loses_its_pinned_agents_next_steps() -> None:
    r = router()
    for i in range(8):  # r0 holds 8 of 10 pins: over ceil(1.25 * 10 / 3) + 2 = 7
        r.pins.set(f"a{i}", "r0", 0.0)
    r.pins.set("b", "r1", 0.0)
    r.pins.set("c", "r2", 0.0)
    views = [
        ReplicaView("r0", kv_usage=0.3, load=12),
        ReplicaView("r1", kv_usage=0.3, load=2),
        ReplicaView("r2", kv_usage=0.3, load=2),
    ]
    # in flight: mean 5.33, bound 1.25 x 5.33 = 6.67 < 12, and r0 holds more than its share of pins
    d = r.route(RouteRequest("a0"), views, 1.0)
    assert d.reason is RouteReason.overloaded and d.repinned_from == "r0" and d.replica_id != "r0"
    assert not d.lost_prefix
    assert r.pins.get("a0", 1.0) == d.replica_id and r.pins.count("r0") == 7
    # at 7 pins r0 is within its share: in-flight skew alone does not move agents
    assert r.route(RouteRequest("a1"), views, 1.0).reason is RouteReason.pinned


def test_in_flight_skew_alone_does_not_move_a_balanced_agent() -> None:
    r = router()
    for i, rid in enumerate(["r0", "r1", "r2"]):
        r.pins.set(f"a{i}", rid, 0.0)
    views = [ReplicaView("r0", load=30), ReplicaView("r1", load=2), ReplicaView("r2", load=2)]
    assert r.route(RouteRequest("a0"), views, 1.0).reason is RouteReason.pinned


def test_small_loads_are_never_overloaded() -> None:
    r = router()
    r.pins.set("a", "r0", 0.0)
    views = [ReplicaView("r0", kv_usage=0.3, load=3), ReplicaView("r1", kv_usage=0.3, load=0)]
    assert r.route(RouteRequest("a"), views, 1.0).reason is RouteReason.pinned


@pytest.mark.parametrize(
    ("pinned_view", "reason"),
    [
        (ReplicaView("r0", healthy=False), RouteReason.replica_down),
        (ReplicaView("r0", draining=True), RouteReason.drained),
        (None, RouteReason.replica_down),
    ],
)
def test_failover_repins_with_reason(pinned_view: ReplicaView | None, reason: RouteReason) -> None:
    r = router()
    r.pins.set("a", "r0", 0.0)
    views = [ReplicaView("r1", kv_usage=0.2), ReplicaView("r2", kv_usage=0.5)]
    if pinned_view is not None:
        views.insert(0, pinned_view)
    d = r.route(req("a"), views, 1.0)
    assert (d.replica_id, d.reason, d.repinned_from, d.lost_prefix) == ("r1", reason, "r0", True)
    d2 = r.route(req("a"), views, 2.0)
    assert (d2.replica_id, d2.reason, d2.repinned_from) == ("r1", RouteReason.pinned, None)


def test_replica_death_mid_run_repins_every_agent_once() -> None:
    r = router()
    views = fleet(4)
    home = {f"a{i}": r.route(req(f"a{i}", seed=i), views, 0.0).replica_id for i in range(40)}
    dead = "r2"
    after = [v if v.id != dead else ReplicaView(dead, healthy=False) for v in views]
    moved = 0
    for step in range(3):
        for agent, was in home.items():
            d = r.route(req(agent, seed=int(agent[1:])), after, 1.0 + step)
            assert d.replica_id != dead
            if d.repinned_from is not None:
                assert step == 0 and was == dead and d.reason is RouteReason.replica_down
                moved += 1
    assert moved == sum(1 for v in home.values() if v == dead) > 0


def test_no_eligible_replica_raises() -> None:
    with pytest.raises(NoHealthyReplica):
        router().route(RouteRequest("a"), [ReplicaView("r0", healthy=False), ReplicaView("r1", draining=True)], 0.0)


def test_non_sticky_requests_leave_no_pin() -> None:
    r = router()
    r.route(RouteRequest("anon", sticky=False), fleet(), 0.0)
    assert len(r.pins) == 0


def test_observe_served_extends_the_match_and_forget_clears_it() -> None:
    r = router()
    views = fleet(2)
    short = req("a", blocks=4)
    d = r.route(short, views, 0.0)
    longer = req("a", blocks=12)
    r.observe_served(d, longer.prefix_hashes, 1.0)
    assert r.route(longer, views, 2.0).matched_blocks == 12
    r.forget_replica(d.replica_id)
    assert r.index.blocks(d.replica_id) == 0
    r.release("a")
    assert r.pins.get("a", 2.0) is None
