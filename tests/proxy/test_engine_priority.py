"""Engine-side priority: the body's ``priority`` for upstreams opted in with ``priority_scheduling``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from concurproxy.config import load_policy
from concurproxy.control.types import PriorityClass
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.server.engine_priority import engine_priority, with_priority
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub
from concurproxy.worker.fleet import run_fleet

CHAT: dict[str, Any] = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
N, H, C, L = PriorityClass.normal, PriorityClass.high, PriorityClass.critical, PriorityClass.low


@pytest.mark.parametrize(
    ("cls", "client", "sent"),
    [
        (N, None, 2),
        (C, None, 0),
        (L, None, 3),
        (N, -5, 2),  # asks to jump the queue: clamped to its class
        (N, 0, 2),
        (N, 7, 7),  # lowers itself: kept
        (H, 2, 2),
        (N, "urgent", 2),  # not an integer: the class's
        (N, True, 2),  # a bool is not an integer here
        (N, 2.5, 2),
    ],
)
def test_engine_priority_clamps_to_the_class(cls: PriorityClass, client: object, sent: int) -> None:
    assert engine_priority(cls, client) == sent


def test_with_priority_splices_raw_bytes_without_reserialising() -> None:
    raw = b'{"model": "m",  "messages":[{"role":"user","content":"x}"}], "top_k": 7 }\n'
    body = orjson.loads(raw)
    out = with_priority(raw, body, H)
    assert out == b'{"model": "m",  "messages":[{"role":"user","content":"x}"}], "top_k": 7 ,"priority":1}'
    assert orjson.loads(out) == {**body, "priority": 1}


def test_with_priority_keeps_a_client_value_that_stands_and_rewrites_one_that_does_not() -> None:
    raw = b'{"model":"m","priority":9}'
    assert with_priority(raw, orjson.loads(raw), N) is raw
    raw = b'{"model":"m","priority":-1}'
    assert orjson.loads(with_priority(raw, orjson.loads(raw), N)) == {"model": "m", "priority": 2}
    assert orjson.loads(with_priority(b"{}", {}, L)) == {"priority": 3}


@asynccontextmanager
async def proxy(upstreams: list[dict[str, Any]]) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    doc = {"upstreams": upstreams, "roles": {"planner": {"priority": "high"}}}
    policy = load_policy(overrides=doc, env={})
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(running_proxy(policy, build_components(policy)))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield url, session


async def test_opted_in_upstream_gets_the_class_and_others_get_the_body_untouched() -> None:
    opted, plain = StubBehaviour(), StubBehaviour()
    async with running_stub(opted) as u0, running_stub(plain) as u1:
        ups = [{"url": u0, "name": "r0", "priority_scheduling": True}]
        async with proxy(ups) as (url, s):
            cases = [
                ({}, {}, 2),
                ({"X-Agent-Role": "planner"}, {}, 1),
                ({"X-Priority": "critical"}, {}, 0),
                ({"X-Priority": "low"}, {}, 3),
                ({}, {"priority": -10}, 2),
                ({"X-Agent-Role": "planner"}, {"priority": 5}, 5),
                ({}, {"stream": True}, 2),  # a body the proxy edits (usage requested) is covered too
            ]
            for headers, extra, sent in cases:
                body = {**CHAT, **extra}
                async with s.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                    assert r.status == 200
                    await r.read()
                seen = opted.seen[-1]
                assert seen["priority"] == sent, (headers, extra)
                assert {k: v for k, v in seen.items() if k not in ("priority", "stream_options")} == {
                    k: v for k, v in body.items() if k != "priority"
                }
        async with proxy([{"url": u1, "name": "r1"}]) as (url, s):
            for extra in ({}, {"priority": -3}):
                async with s.post(url + "/v1/chat/completions", json={**CHAT, **extra}) as r:
                    assert r.status == 200
                assert plain.seen[-1] == {**CHAT, **extra}, "not opted in: the client's body as it was"


async def test_real_worker_queues_by_the_class_only_when_opted_in() -> None:
    """A low step carries priority 3: the priority-policy worker takes it; an fcfs one refuses it (a
    misconfigured opt-in is loud, not silently ignored)."""
    async with (
        run_fleet("tiny", 1, time_scale=50.0, scheduling_policy="priority") as (prio,),
        run_fleet("tiny", 1, time_scale=50.0) as (fcfs,),
    ):
        body = {**CHAT, "model": prio.served_model}
        for worker, status in ((prio, 200), (fcfs, 400)):
            ups = [{"url": worker.url, "name": "w", "priority_scheduling": True}]
            async with proxy(ups) as (url, s):
                async with s.post(url + "/v1/chat/completions", json=body, headers={"X-Priority": "low"}) as r:
                    assert r.status == status, await r.text()
                    if status == 400:
                        assert "Priority scheduling is not enabled" in await r.text()
        assert prio.engine.stats.requests_added == 1 and fcfs.engine.stats.requests_added == 0


async def test_a_policy_reload_turns_the_opt_in_on_for_a_running_replica() -> None:
    from concurproxy.server.reload import apply_policy

    async with running_stub(StubBehaviour()) as u0:
        old = load_policy(overrides={"upstreams": [{"url": u0, "name": "r0"}]}, env={})
        new = load_policy(overrides={"upstreams": [{"url": u0, "name": "r0", "priority_scheduling": True}]}, env={})
        c = build_components(old)
        async with running_proxy(old, c):
            replica = c.pool.get("r0")
            assert replica is not None and not replica.priority_scheduling
            assert "replica r0 priority_scheduling True" in apply_policy(c, new)
            assert c.pool.get("r0") is replica and replica.priority_scheduling


async def test_a_tenant_cannot_claim_a_class_above_its_max_priority() -> None:
    """X-Priority is self-declared: a tenant's max_priority caps it (the response names the class that
    applied); a tenant without a cap, and a claim at or below the cap, are served as claimed."""
    import hashlib

    opted = StubBehaviour()
    digest = {k: hashlib.sha256(k.encode()).hexdigest() for k in ("sk-capped", "sk-free")}
    async with running_stub(opted) as u0:
        doc = {
            "upstreams": [{"url": u0, "name": "r0", "priority_scheduling": True}],
            "tenants": [
                {"name": "capped", "key_sha256": [digest["sk-capped"]], "max_priority": "normal"},
                {"name": "free", "key_sha256": [digest["sk-free"]]},
            ],
        }
        policy = load_policy(overrides=doc, env={})
        async with running_proxy(policy, build_components(policy)) as url, aiohttp.ClientSession() as s:
            cases = [
                ("sk-capped", "critical", 2, "normal; requested=critical"),
                ("sk-capped", "high", 2, "normal; requested=high"),
                ("sk-capped", "low", 3, None),  # lowering itself is always allowed
                ("sk-capped", None, 2, None),
                ("sk-free", "critical", 0, None),
            ]
            for key, claim, sent, header in cases:
                headers = {"Authorization": f"Bearer {key}"} | ({"X-Priority": claim} if claim else {})
                async with s.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    assert r.headers.get("x-concurproxy-priority") == header, (key, claim)
                assert opted.seen[-1]["priority"] == sent, (key, claim)
