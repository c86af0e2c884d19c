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
