"""How the backend is wired into one proxy: memory path untouched, Redis away from the start."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from concurproxy.config import load_policy
from concurproxy.config.models import Policy
from concurproxy.server.admission import WindowGate
from concurproxy.server.admission.leases import SharedWindowGate
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.state.config import SharedStateSettings
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub


def make_policy(upstreams: list[str], **overrides: Any) -> Policy:
    doc: dict[str, Any] = {"upstreams": [{"url": u, "name": f"r{i}"} for i, u in enumerate(upstreams)]}
    return load_policy(overrides={**doc, **overrides}, env={})


def test_memory_backend_builds_no_shared_state() -> None:
    c = build_components(make_policy(["http://127.0.0.1:1"]))
    assert c.shared_state is None
    assert type(c.admission) is WindowGate


def test_redis_backend_needs_a_url() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        build_components(make_policy(["http://127.0.0.1:1"], state={"backend": "redis"}))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: nothing listens there


async def test_unreachable_redis_serves_from_local_state_and_says_so() -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    async with running_stub(StubBehaviour()) as up:
        admission: dict[str, Any] = {"controller": "static", "static": {"window": 8}}
        policy = make_policy([up], state={"backend": "redis", "redis_url": url}, admission=admission)
        registry = CollectorRegistry()
        comps = build_components(policy, registry=registry)
        assert isinstance(comps.admission, SharedWindowGate)
        comps.shared_state.configure(SharedStateSettings(instance_id="lonely", retry_after_s=60))
        async with running_proxy(policy, comps) as base, aiohttp.ClientSession() as s:
            for k in range(5):
                body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
                async with s.post(base + "/v1/chat/completions", json=body, headers={"X-Agent-Id": f"a{k}"}) as r:
                    assert r.status == 200
            state = comps.shared_state
            assert not state.connected and state.breaker.failures == 1  # one timeout, then the breaker answers
            assert comps.admission.core.window("r0").window == 8  # W / 1 live instance
            assert registry.get_sample_value("concurproxy_shared_state_connected") == 0
            assert registry.get_sample_value("concurproxy_shared_state_outages_total") == 0  # never was up
