from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.routing.pins import PinTable


def test_pin_ttl_counts_from_last_use() -> None:
    t = PinTable(ttl_s=10.0)
    t.set("a1", "r0", now=0.0)
    assert t.get("a1", now=9.0) == "r0"
    t.set("a1", "r0", now=9.0)
    assert t.get("a1", now=18.0) == "r0"
    assert t.get("a1", now=19.5) is None
    assert len(t) == 0 and t.count("r0") == 0


def test_expire_pops_in_order_and_keeps_counts() -> None:
    t = PinTable(ttl_s=5.0)
    for i in range(10):
        t.set(f"a{i}", f"r{i % 2}", now=float(i))
    assert (t.count("r0"), t.count("r1")) == (5, 5)
    assert t.expire(now=10.0) == 5  # a0..a4 idle > 5 s
    assert (t.count("r0"), t.count("r1")) == (2, 3)


def test_repin_moves_count() -> None:
    t = PinTable(ttl_s=5.0)
    t.set("a", "r0", 0.0)
    t.set("a", "r1", 1.0)
    assert (t.count("r0"), t.count("r1"), t.get("a", 1.0)) == (0, 1, "r1")
    t.release("a")
    assert t.get("a", 1.0) is None and t.count("r1") == 0


def test_table_is_bounded_lru() -> None:
    t = PinTable(ttl_s=100.0, max_pins=3)
    for i in range(5):
        t.set(f"a{i}", "r0", float(i))
    assert len(t) == 3 and t.count("r0") == 3
    assert t.get("a0", 5.0) is None and t.get("a4", 5.0) == "r0"


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["set", "get", "touch", "release", "expire"]), st.integers(0, 5), st.integers(0, 3)),
        max_size=40,
    ),
    max_pins=st.integers(1, 8),
)
def test_table_matches_a_plain_model(ops: list[tuple[str, int, int]], max_pins: int) -> None:
    """Against a dict scanned in full: same pins, counts, expiries (time moves forward, TTL 5)."""
    table = PinTable(ttl_s=5, max_pins=max_pins)
    model: dict[str, tuple[str, int]] = {}  # agent -> (replica, last_used), in last-use order
    now = 0
    for op, agent_no, dt in ops:
        now += dt
        agent, replica = f"a{agent_no}", f"r{agent_no % 3}"
        if op == "set":
            if agent in model and model[agent][0] == replica:
                model[agent] = (replica, max(model.pop(agent)[1], now))
            else:
                model.pop(agent, None)
                model[agent] = (replica, now)
                while len(model) > max_pins:
                    del model[next(iter(model))]
            table.set(agent, replica, now)
        elif op == "get":
            want = model.get(agent)
            if want is not None and now - want[1] > 5:
                del model[agent]
                want = None
            assert table.get(agent, now) == (want[0] if want else None)
        elif op == "touch":  # refresh iff still pinned there: get, then set
            there = f"r{(agent_no + dt) % 3}"  # sometimes another replica than the pin's
            have = model.get(agent)
            if have is not None and now - have[1] > 5:
                del model[agent]
            elif have is not None and have[0] == there:
                model[agent] = (there, max(model.pop(agent)[1], now))
            table.touch(agent, there, now)
        elif op == "release":
            model.pop(agent, None)
            table.release(agent)
        else:
            gone = [a for a, (_, used) in model.items() if used < now - 5]
            for a in gone:
                del model[a]
            assert table.expire(now) == len(gone)
        assert len(table) == len(model)
        for r in ("r0", "r1", "r2"):
            assert table.count(r) == sum(1 for rep, _ in model.values() if rep == r)
