"""A replica that leaves a proxy sharing state through Redis: its leases are given back at the next sync
and nothing is kept for it (shares, controllers, lease bookkeeping, shared VTC queues)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from concurproxy.config import load_policy
from concurproxy.server.reload import apply_policy
from concurproxy.state.fleet_sync import FairnessSync
from concurproxy.testing.stub_upstream import StubBehaviour

pytestmark = pytest.mark.redis

WIDE = {"controller": "static", "static": {"window": 64}}


async def step(session: aiohttp.ClientSession, url: str, agent: str) -> str:
    body = {"model": "stub-model", "messages": [{"role": "user", "content": f"task of {agent} " * 20}], "max_tokens": 4}
    async with session.post(url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": agent}) as r:
        await r.read()
        assert r.status == 200
        return r.headers["x-concurproxy-replica"]


async def test_a_leaving_replica_gives_its_leases_back_and_keeps_nothing(
    redis_server: Any, fleet: Any, eventually: Any
) -> None:
    stubs = [StubBehaviour(record=False), StubBehaviour(record=False)]
    async with fleet(redis_server.url, 1, stubs, admission=WIDE) as (insts, _, s):
        inst = insts[0]
        c, st = inst.components, inst.state
        fairness = next(p for p in st.parts if isinstance(p, FairnessSync))
        on = {await step(s, inst.url, f"a{k}") for k in range(8)}
        assert on == {"r0", "r1"}
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            await eventually(lambda: bool(st._renewed.get("r1")))
            assert await redis.zcard("{cp}:leases:r1") > 0
            doc = {"upstreams": [{"url": r.base_url, "name": r.id} for r in c.pool if r.id == "r0"]}
            assert "replica r1 removed" in apply_policy(c, load_policy(overrides={**doc, "admission": WIDE}, env={}))
            await eventually(lambda: "r1" not in st._renewed)
            assert await redis.zcard("{cp}:leases:r1") == 0
            assert not st._left and "r1" not in st._shares and "r1" not in st._controllers
            assert "r1" not in fairness.queues and "r1" not in fairness._seen
            assert await step(s, inst.url, "a-new") == "r0" and "r0" in st._renewed
        finally:
            await redis.aclose()
