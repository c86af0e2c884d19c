import pytest

from concurproxy.config.routing import ScorerConfig
from concurproxy.plugins import no_entry_points
from concurproxy.routing.scorers import (
    KvHeadroomScorer,
    PrefixMatchScorer,
    QueueScorer,
    ScoreContext,
    SessionAffinityScorer,
    UnknownScorer,
    WindowRoomScorer,
    default_registry,
)
from concurproxy.routing.types import ReplicaView, RouteRequest

R = [
    ReplicaView("a", kv_usage=0.25, waiting=0, window_room=2, window_size=8),
    ReplicaView("b", kv_usage=0.9, waiting=3, window_room=0, window_size=8),
    ReplicaView("c", kv_usage=None, waiting=None, window_room=None),
    ReplicaView("d", kv_usage=1.2, waiting=12, window_room=4, window_size=None),
]


def ctx(**kw: object) -> ScoreContext:
    req = RouteRequest("ag", prefix_hashes=tuple(range(10)))
    return ScoreContext(request=req, now=0.0, **kw)  # type: ignore[arg-type]


def test_session_affinity() -> None:
    assert SessionAffinityScorer().score(ctx(pinned="b"), R) == [0, 1, 0, 0]
    assert SessionAffinityScorer().score(ctx(), R) == [0, 0, 0, 0]


def test_prefix_match() -> None:
    assert PrefixMatchScorer().score(ctx(matches={"a": 10, "b": 4}), R) == [1.0, 0.4, 0.0, 0.0]
    empty = ScoreContext(request=RouteRequest("ag"), now=0.0, matches={"a": 3})
    assert PrefixMatchScorer().score(empty, R) == [0.0] * 4


def test_kv_headroom_unknown_is_zero() -> None:
    assert KvHeadroomScorer().score(ctx(), R) == pytest.approx([0.75, 0.1, 0.0, 0.0])


def test_queue() -> None:
    assert QueueScorer().score(ctx(), R) == pytest.approx([1.0, 0.4, 0.0, 0.0])
    assert QueueScorer(queue_threshold=10).score(ctx(), R) == pytest.approx([1.0, 0.7, 0.0, 0.0])


def test_window_room() -> None:
    assert WindowRoomScorer().score(ctx(), R) == pytest.approx([0.25, 0.0, 0.0, 0.5])


def test_all_scores_in_unit_interval() -> None:
    reg = default_registry()
    c = ctx(matches={"a": 99}, pinned="a")
    for name in reg.names():
        assert all(0.0 <= s <= 1.0 for s in reg.create(name).score(c, R)), name


def test_registry() -> None:
    reg = default_registry(entry_points=no_entry_points)
    assert reg.names() == ["kv-headroom", "prefix-match", "queue", "session-affinity", "window-room"]
    built = reg.build([ScorerConfig(type="queue", weight=2), ScorerConfig(type="kv-headroom", weight=0)])
    assert [(w.scorer.name, w.weight) for w in built] == [("queue", 2)]
    with pytest.raises(UnknownScorer):
        reg.create("nope")
    with pytest.raises(ValueError):
        reg.register("queue", QueueScorer)
    assert default_registry() is not reg  # no shared module state
