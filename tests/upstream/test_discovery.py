"""DNS discovery: membership from successive answers, the OS resolver, and a live pool that follows DNS."""

from __future__ import annotations

from contextlib import AsyncExitStack

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from concurproxy.config import load_policy
from concurproxy.config.server import DnsDiscoveryConfig
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub
from concurproxy.upstream.discovery import DnsDiscovery, Membership, SystemResolver


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        # (answer, (joined, left)) per lookup; None = the lookup failed
        ([{"a", "b"}], [(["a", "b"], [])]),
        ([{"a"}, {"a", "b"}], [(["a"], []), (["b"], [])]),
        ([{"a", "b"}, {"a"}, {"a"}], [(["a", "b"], []), ([], []), ([], ["b"])]),  # leaves after 2 misses
        ([{"a", "b"}, {"a"}, {"a", "b"}, {"a"}], [(["a", "b"], []), ([], []), ([], []), ([], [])]),  # flap: stays
        ([{"a"}, None, set(), None], [(["a"], []), ([], []), ([], []), ([], [])]),  # outage / empty: keep
    ],
)
def test_membership_table(answers: list[set[str] | None], expected: list[tuple[list[str], list[str]]]) -> None:
    m = Membership(remove_after=2)
    got = [m.update(None if a is None else frozenset(a)) for a in answers]
    assert got == expected


async def test_system_resolver_resolves_localhost_and_fails_cleanly() -> None:
    r = SystemResolver()
    assert "127.0.0.1" in await r.resolve("localhost")
    with pytest.raises(OSError):
        await r.resolve("no-such-host.invalid")


class FakeDns:
    def __init__(self, *addrs: str) -> None:
        self.addrs = frozenset(addrs)
        self.fail = False

    async def resolve(self, name: str) -> frozenset[str]:
        if self.fail:
            raise OSError("SERVFAIL")
        return self.addrs


async def test_discovery_keeps_the_pool_through_a_failed_lookup() -> None:
    dns = FakeDns("10.0.0.1")
    joined: list[str] = []
    left: list[str] = []
    d = DnsDiscovery(DnsDiscoveryConfig(dns="vllm", port=8000, kv_events_port=5557), dns,
                     lambda r: joined.append(r.id), left.append)  # fmt: skip
    await d.refresh()
    dns.fail = True
    await d.refresh()
    await d.refresh()
    assert joined == ["10.0.0.1:8000"] and left == [] and d.failures == 2
    r = d.replica_for("10.0.0.1")
    assert r.base_url == "http://10.0.0.1:8000" and r.discovered
    assert r.kv_events is not None and r.kv_events.endpoint == "tcp://10.0.0.1:5557"
    assert not r.priority_scheduling
    prio = DnsDiscovery(DnsDiscoveryConfig(dns="vllm", priority_scheduling=True), dns, joined.append, left.append)
    assert prio.replica_for("10.0.0.2").priority_scheduling  # the engine's queue order applies to discovered replicas


def chat(agent: str) -> dict[str, object]:  # no shared prefix: placement is by load, not by a sibling's prefix
    return {"model": "stub-model", "messages": [{"role": "user", "content": f"{agent} " * 40}], "max_tokens": 3}


async def test_live_pool_follows_dns_new_replica_gets_new_agents_first() -> None:
    # Three stubs on one port number at three loopback addresses, as pods behind a headless Service.
    async with AsyncExitStack() as stack:
        busy = StubBehaviour(kv_usage=0.5)  # the running replicas' engines hold other agents' caches
        first = await stack.enter_async_context(running_stub(busy, host="127.0.0.2"))
        port = int(first.rsplit(":", 1)[1])
        await stack.enter_async_context(running_stub(StubBehaviour(kv_usage=0.5), port=port, host="127.0.0.3"))
        await stack.enter_async_context(running_stub(StubBehaviour(kv_usage=0.0), port=port, host="127.0.0.4"))
        dns = FakeDns("127.0.0.2", "127.0.0.3")
        policy = load_policy(
            overrides={
                "discovery": {"dns": "vllm.test", "port": port, "interval_s": 3600, "remove_after": 1},
                "admission": {"controller": "none"},
                "telemetry": {"log_level": "WARNING"},
            },
            env={},
        )
        registry = CollectorRegistry()
        c = build_components(policy, registry)
        c.discovery_resolver = dns
        url = await stack.enter_async_context(running_proxy(policy, c))
        s = await stack.enter_async_context(aiohttp.ClientSession())

        async def step(agent: str) -> str:
            r = await s.post(url + "/v1/chat/completions", json=chat(agent), headers={"X-Agent-Id": agent})
            assert r.status == 200, await r.text()
            return r.headers["x-concurproxy-replica"]

        assert sorted(r.id for r in c.pool) == [f"127.0.0.2:{port}", f"127.0.0.3:{port}"]
        old = {a: await step(a) for a in ("a0", "a1", "a2", "a3")}

        dns.addrs = frozenset({"127.0.0.2", "127.0.0.3", "127.0.0.4"})
        await c.discovery.refresh()
        new = f"127.0.0.4:{port}"
        assert c.pool.get(new) is not None
        await c.poller.poll_once()  # its first pressure read (the poller's next tick, made explicit)
        assert [await step(a) for a in ("n0", "n1")] == [new, new]  # the empty replica wins new agents
        assert all([await step(a) == old[a] for a in old])  # pinned agents stay where their prefix is

        gone = old["a0"]
        dns.addrs = frozenset({"127.0.0.3", "127.0.0.4", "127.0.0.2"} - {gone.split(":")[0]})
        await c.discovery.refresh()
        assert c.pool.get(gone) is None
        exported = {s.labels.get("replica") for fam in registry.collect() for s in fam.samples}
        assert gone not in exported and new in exported  # its series left /metrics with it (no ghost replica)
        moved = [a for a in old if old[a] == gone]
        assert all([await step(a) != gone for a in moved])  # re-pinned on their next step, which completes
        assert registry.get_sample_value("concurproxy_routing_repins_total", {"reason": "replica-down"}) == len(moved)


async def test_proxy_discovers_through_the_os_resolver() -> None:
    async with AsyncExitStack() as stack:
        port = int((await stack.enter_async_context(running_stub(StubBehaviour()))).rsplit(":", 1)[1])
        policy = load_policy(
            overrides={"discovery": {"dns": "localhost", "port": port}, "telemetry": {"log_level": "WARNING"}},
            env={},
        )
        c = build_components(policy)
        url = await stack.enter_async_context(running_proxy(policy, c))  # the real getaddrinfo path
        s = await stack.enter_async_context(aiohttp.ClientSession())
        assert [r.id for r in c.pool] == [f"127.0.0.1:{port}"]
        r = await s.post(url + "/v1/chat/completions", json=chat("a"))
        assert r.status == 200 and r.headers["x-concurproxy-replica"] == f"127.0.0.1:{port}"
        state = await (await s.get(url + "/admin/state")).json()
        assert state["discovery"]["members"] == ["127.0.0.1"] and state["discovery"]["failures"] == 0
