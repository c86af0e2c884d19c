"""``roles.*.window_share`` through the live proxy: a below-share role gets a slot back, and reload applies it."""

from __future__ import annotations

from contextlib import AsyncExitStack

import aiohttp
import yaml

from concurproxy.config import load_policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def write_policy(path, upstream: str, roles: dict) -> None:  # type: ignore[no-untyped-def]
    doc = {
        "upstreams": [{"url": upstream, "name": "r0"}],
        "admission": {"controller": "static", "static": {"window": 2}, "max_queue_wait_s": 0.5},
        "roles": roles,
    }
    path.write_text(yaml.safe_dump(doc))


async def test_window_share_reclaims_a_burst_slot_and_follows_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "policy.yaml"
    async with AsyncExitStack() as stack:
        up = await stack.enter_async_context(running_stub(StubBehaviour()))
        write_policy(f, up, {"monitor": {"window_share": 0.5}})
        policy = load_policy(f, env={})
        comps = build_components(policy)
        comps.policy_path = str(f)
        url = await stack.enter_async_context(running_proxy(policy, comps))
        s = await stack.enter_async_context(aiohttp.ClientSession())

        async def chat(agent: str, role: str) -> aiohttp.ClientResponse:
            headers = {"X-Agent-Id": agent, "X-Agent-Role": role}
            r = await s.post(url + "/v1/chat/completions", json=CHAT, headers=headers)
            await r.read()
            return r

        for agent in ("e0", "e1"):  # executors fill the window (no share: they burst into it)
            assert (await chat(agent, "executor")).status == 200
        r = await chat("m0", "monitor")  # the monitor's guaranteed slot: e1 (newest, idle) gives it back
        assert r.status == 200
        state = (await (await s.get(url + "/admin/state")).json())["admission"]["replicas"]["r0"]
        assert sorted(a["agent_id"] for a in state["agents"]) == ["anonymous/e0", "anonymous/m0"]  # tenant-scoped
        assert state["counters"]["share_reclaims"] == 1

        write_policy(f, up, {"monitor": {}})  # reload: no share any more
        assert (await s.post(url + "/admin/reload")).status == 200
        r = await chat("m1", "monitor")  # the window is full (e0, m0 idle): m1 waits and times out
        assert r.status == 503 and (await r.json())["error"]["code"] == "admission_timeout"
