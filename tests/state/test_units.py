"""Pure parts of the shared state: window shares, URL parsing, the circuit breaker, settings."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.cluster import RedisCluster

from concurproxy.config.models import StateConfig
from concurproxy.control.limits.base import UNBOUNDED, WindowDecision
from concurproxy.state import MemoryState, ReplicaShare, SharedStateSettings, SharedWindowController
from concurproxy.state.client import FAILURES, Breaker, connect, parse_url


@given(w=st.integers(1, 500), others=st.integers(0, 600), live=st.integers(1, 20))
def test_connected_share_leaves_room_only_for_what_others_do_not_hold(w: int, others: int, live: int) -> None:
    s = ReplicaShare("r", connected=True, global_window=w, others=others, live_instances=live)
    assert s.cap(own_window=7) == max(0, w - others)


@given(w=st.integers(1, 500), live=st.integers(1, 20))
def test_degraded_share_is_the_last_window_split_over_live_instances_never_zero(w: int, live: int) -> None:
    s = ReplicaShare("r", connected=True, global_window=w, others=0, live_instances=live)
    s.cap(own_window=1)  # remembered while connected
    s.connected, s.global_window = False, None
    cap = s.cap(own_window=10_000)
    assert cap == max(1, w // live)
    assert cap * live <= w or cap == 1


def test_own_window_until_a_leader_publishes_and_unbounded_passes() -> None:
    s = ReplicaShare("r", connected=True)
    assert s.cap(5) == 5
    s.others = 2
    assert s.cap(5) == 3
    assert s.cap(UNBOUNDED) == UNBOUNDED


class _Fixed:
    name = "static"
    stale_after_s = None

    def __init__(self, w: int) -> None:
        self.window = w

    def update(self, snapshot: object, in_use: int, now: float, acked: int | None = None) -> WindowDecision:
        return WindowDecision(self.window, False, "static")

    def on_step(self, sample: object) -> None:
        return None


def test_controller_reports_the_capped_window_and_keeps_its_own() -> None:
    share = ReplicaShare("r", connected=True, global_window=4, others=1)
    c = SharedWindowController(_Fixed(9), share)  # type: ignore[arg-type]
    assert (c.window, c.own_window) == (3, 9)
    share.others = 3
    d = c.update(None, 0, 0.0)
    assert (d.window, d.changed) == (1, True)
    assert c.update(None, 0, 0.0).changed is False


@pytest.mark.parametrize(
    ("url", "kind", "hosts", "service", "db"),
    [
        ("redis://localhost:6379/0", "single", (), None, 0),
        ("rediss://u:p@cache:6380/2", "single", (), None, 0),
        (
            "redis+sentinel://:pw@s1:26379,s2:26380/mymaster/3",
            "sentinel",
            (("s1", 26379), ("s2", 26380)),
            "mymaster",
            3,
        ),
        ("redis+sentinel://s1/main", "sentinel", (("s1", 26379),), "main", 0),
        ("redis+cluster://node1:7000", "cluster", (), None, 0),
    ],
)
def test_urls(url: str, kind: str, hosts: tuple[tuple[str, int], ...], service: str | None, db: int) -> None:
    t = parse_url(url)
    assert (t.kind, t.hosts, t.service, t.db) == (kind, hosts, service, db)


def test_sentinel_password_and_bad_urls() -> None:
    assert parse_url("redis+sentinel://:s3cret@h:1/m").password == "s3cret"
    assert parse_url("redis+cluster://n:7000").url == "redis://n:7000"
    with pytest.raises(ValueError, match="service name"):
        parse_url("redis+sentinel://h:26379")
    with pytest.raises(ValueError, match="unsupported scheme"):
        parse_url("http://h")


def test_breaker_opens_once_and_lets_one_try_through_after_the_pause() -> None:
    b = Breaker(retry_after_s=1.0)
    assert b.allow(0.0)
    assert b.failed(0.0) is True
    assert b.failed(0.1) is False  # already open: no second log line
    assert not b.allow(0.5)
    assert b.allow(1.2)
    assert b.succeeded() is True
    assert b.succeeded() is False and b.allow(1.3)


def test_settings_read_state_config_fields_when_present() -> None:
    s = SharedStateSettings.from_policy(StateConfig(), lease_s=2.0)
    assert s.lease_s == 2.0 and s.sync_interval_s == 0.5 and s.key_prefix == "{cp}:"

    class WithLease:
        lease_s = 3.0
        sync_interval_s = None

    assert SharedStateSettings.from_policy(WithLease()).lease_s == 3.0


async def test_memory_state_owns_the_whole_window() -> None:
    m = MemoryState()
    assert m.connected and await m.claim("r", "a", 1) and await m.claim("r", "b", 1)
    assert m.share("r").cap(5) == 5
    m.publish_pin("a", "r")


@pytest.mark.parametrize("url", ["redis://h:6379/0", "redis+cluster://h:7000", "redis+sentinel://s:26379/m"])
def test_every_kind_of_client_is_built_with_one_short_timeout_and_no_retry(url: str) -> None:
    """Issue 21 item 10: the cluster client was built with redis-py's defaults (3 retries with
    backoff, a 5 s connect timeout), so the breaker opened only after several timeouts."""
    client = connect(url, 0.25)
    if isinstance(client, RedisCluster):
        kwargs, retry = client.connection_kwargs, client.retry
    else:
        kwargs = client.connection_pool.connection_kwargs
        retry = kwargs["retry"]
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.25)
    assert retry.get_retries() == 0
    assert kwargs["decode_responses"] is True


async def test_an_unreachable_cluster_raises_a_failure_the_breaker_counts() -> None:
    """A silent node: one connection, one timeout, and an error in ``FAILURES`` (the cluster's
    ``RedisClusterUnreachableError`` is not a ``RedisError`` and used to escape the breaker)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answers; closed below

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect(f"redis+cluster://127.0.0.1:{port}", 0.1)
    try:
        with pytest.raises(FAILURES):
            await client.ping()
        assert len(accepted) == 1
    finally:
        await client.aclose()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
