"""The fingerprint table keeps its bounds (entries, keys per agent) and its TTL, whatever the operations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from session_helpers import ChatAgent, Clock, make_resolver

from concurproxy.sessions.table import SessionTable

TTL = 10.0
ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "get", "peek", "sweep"]),
        st.integers(0, 15),  # key
        st.integers(0, 3),  # agent
        st.sampled_from([0.0, 0.0, 0.5, 3.0, 9.9, 10.0, 25.0]),  # time passing before the operation
    ),
    max_size=80,
)


def _key(k: int) -> bytes:
    return k.to_bytes(16, "big")


@settings(max_examples=300, deadline=None)
@given(ops=ops, max_entries=st.integers(1, 10), per_agent=st.integers(2, 4))
def test_bounds_and_ttl_hold(ops: list[tuple[str, int, int, float]], max_entries: int, per_agent: int) -> None:
    gone: list[str] = []
    t = SessionTable(max_entries, TTL, per_agent, on_agent_gone=gone.append)
    now = 0.0
    touched: dict[bytes, float] = {}  # last put or hit, per key
    owner: dict[bytes, str] = {}
    order: list[bytes] = []  # keys by last touch, oldest first
    for op, k, a, dt in ops:
        now += dt
        key, agent = _key(k), f"a{a}"
        if op == "put":
            t.put(key, agent, now)
            touched[key], owner[key] = now, agent
        elif op in ("get", "peek"):
            e = t.get(key, now) if op == "get" else t.peek(key, now)
            fresh = key in touched and touched[key] + TTL > now  # (the table's own comparison)
            if e is not None:  # never an entry past its TTL, never the wrong agent
                assert fresh and e.agent == owner[key]
                assert e.used + TTL > now
            later = order[order.index(key) + 1 :] if key in order else []
            same_agent_later = [x for x in later if owner[x] == owner.get(key)]
            if fresh and len(later) < max_entries and len(same_agent_later) < per_agent:
                assert e is not None  # what fits in both bounds and is fresh is kept
            if e is not None and op == "get":
                touched[key] = now
        else:
            t.sweep(now)
        if op == "put" or (op == "get" and touched.get(key) == now):
            if key in order:
                order.remove(key)
            order.append(key)
        # the bounds, and the per-agent index agrees with the entries
        assert len(t) <= max_entries
        agents = list(t.agents())
        assert all(len(t.keys_of(x)) <= per_agent for x in agents)
        indexed = {key for x in agents for key in t.keys_of(x)}
        assert indexed == set(t._entries)
        assert all(t._entries[key].agent == x for x in agents for key in t.keys_of(x))
    assert all(t.keys_of(x) for x in t.agents())  # an agent without keys is gone (and was reported)
    assert set(gone) >= {owner[k] for k in owner} - set(t.agents())


def test_entries_expire_after_their_ttl_since_last_use() -> None:
    t = SessionTable(100, 10.0, 4)
    t.put(b"k", "a", 0.0)
    assert t.get(b"k", 9.0) is not None  # a hit refreshes
    assert t.get(b"k", 18.5) is not None
    assert t.get(b"k", 28.5) is None
    assert len(t) == 0 and t.expired == 1


def test_the_oldest_entry_goes_first_and_an_agents_oldest_key_retires() -> None:
    gone: list[str] = []
    t = SessionTable(3, 100.0, 2, on_agent_gone=gone.append)
    t.put(b"1", "a", 0)
    t.put(b"2", "b", 1)
    t.put(b"3", "c", 2)
    t.get(b"1", 3)
    t.put(b"4", "d", 4)  # evicts b's only key (least recently used)
    assert t.peek(b"2", 4) is None and gone == ["b"] and t.evicted == 1
    t.put(b"5", "a", 5)
    t.put(b"6", "a", 6)  # a's third key: its oldest ("1") retires
    assert t.keys_of("a") == (b"5", b"6") and t.retired == 1


def test_a_paused_agent_survives_a_burst_of_busy_agents() -> None:
    """The per-agent bound keeps the paused agent's key: busy agents only replace their own."""
    clock = Clock()
    r = make_resolver(clock, max_entries=100, keys_per_agent=4)
    paused = ChatAgent(r, "sys", "paused task")
    paused.step()
    busy = [ChatAgent(r, "sys", f"busy {i}") for i in range(20)]
    for _ in range(30):
        clock.t += 1
        for b in busy:
            b.step()
    assert len(r.table) <= 100
    assert paused.step().agent_id == "s-1"
