"""Budgets and VTC counters shared by proxy instances through one real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from concurproxy.state.fleet_sync import BudgetSync, FairnessSync
from concurproxy.testing.stub_upstream import StubBehaviour

Instance = Any  # tests/state/conftest.py: Instance
RedisServer = Any

pytestmark = pytest.mark.redis

TPM = 1200  # weighted tokens per minute for the whole fleet: 20 per second
WIDE = {"controller": "static", "static": {"window": 64}}
KEYS = {"ta": "sk-tenant-a", "tb": "sk-tenant-b"}
TENANTS = [{"name": t, "key_sha256": [hashlib.sha256(k.encode()).hexdigest()]} for t, k in KEYS.items()]


def part(inst: Instance, kind: type) -> Any:
    return next(p for p in inst.state.parts if isinstance(p, kind))


async def step(
    session: aiohttp.ClientSession, inst: Instance, agent: str, tenant: str | None = None, words: int = 8
) -> tuple[int, float]:
    """One step; returns its status and the weighted cost it was charged (from the reported usage)."""
    headers = {"X-Agent-Id": agent, **({"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {})}
    body = {"model": "stub-model", "messages": [{"role": "user", "content": " w" * words}], "max_tokens": 4}
    async with session.post(inst.url + "/v1/chat/completions", json=body, headers=headers) as r:
        doc = await r.json(content_type=None)
        if r.status != 200:
            return r.status, 0.0
        usage = doc["usage"]
        return r.status, usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0


async def test_two_instances_enforce_one_tenant_budget_in_total(
    redis_server: RedisServer, fleet: Any, eventually: Any
) -> None:
    roles = {"default": {"tokens_per_min": TPM}}
    async with fleet(redis_server.url, 2, [StubBehaviour(record=False)], admission=WIDE, roles=roles) as (
        insts,
        _,
        s,
    ):
        await eventually(lambda: all(i.state.live_instances == 2 for i in insts))
        charged: list[float] = []
        statuses: list[int] = []
        seconds = 1.5
        t0 = time.monotonic()

        async def client(k: int) -> None:
            i = 0
            while time.monotonic() - t0 < seconds:
                status, cost = await step(s, insts[(k + i) % 2], f"a{k}")
                statuses.append(status)
                charged.append(cost)
                i += 1

        await asyncio.gather(*(client(k) for k in range(6)))
        elapsed = time.monotonic() - t0
        biggest = max(charged)
        one_bucket = TPM + TPM / 60 * elapsed  # what a single instance would have allowed
        bound = one_bucket + (2 - 1) / 2 * TPM + 2 * biggest  # documented in control/budgets/fleet.py
        assert statuses.count(429) > 0 and set(statuses) <= {200, 429}
        assert 0.8 * TPM <= sum(charged) <= bound  # unshared, two instances would allow 2 * one_bucket
        for inst in insts:  # each instance spends its half of the fleet bucket
            engine = inst.components.budgets.engine
            assert engine.fleet_share == 0.5
            level = engine.bucket_level("anonymous", "default", inst.components.clock())
            assert level is not None and level <= TPM / 2
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            fleet_level = float(await redis.hget("{cp}:budget:r:anonymous/default", "level") or "nan")
        finally:
            await redis.aclose()
        assert fleet_level < TPM / 2  # the fleet bucket holds both instances' spends


async def test_vtc_counters_converge_across_instances(redis_server: RedisServer, fleet: Any, eventually: Any) -> None:
    async with fleet(redis_server.url, 2, [StubBehaviour(record=False)], admission=WIDE, tenants=TENANTS) as (
        insts,
        _,
        s,
    ):
        for k in range(6):  # tenant ta is served through instance 0 only, tb (less) through instance 1
            assert (await step(s, insts[0], f"x{k}", "ta", words=30))[0] == 200
        for k in range(2):
            assert (await step(s, insts[1], f"y{k}", "tb"))[0] == 200

        def counters(inst: Instance) -> dict[str, float]:
            return dict(part(inst, FairnessSync).queues["r0"].state.tenants.value)

        def converged() -> bool:
            a, b = counters(insts[0]), counters(insts[1])
            return set(a) == set(b) == {"ta", "tb"} and all(a[t] == pytest.approx(b[t]) for t in a)

        await eventually(converged)
        a = counters(insts[0])
        assert a["ta"] > a["tb"] > 0  # both instances now rank tb (served less, fleet-wide) first


async def test_redis_outage_loses_no_request_and_budgets_resync(
    redis_server: RedisServer, fleet: Any, eventually: Any, clients: Any
) -> None:
    big = 60_000  # far more than this test spends: every step is answered 200
    roles = {"default": {"tokens_per_min": big}}
    async with fleet(redis_server.url, 2, [StubBehaviour(record=False)], admission=WIDE, roles=roles) as (
        insts,
        _,
        s,
    ):
        await eventually(lambda: all(i.state.live_instances == 2 for i in insts))
        syncs = [part(i, BudgetSync) for i in insts]

        async def one(inst: Instance, agent: str) -> int:
            return (await step(s, inst, agent))[0]

        async with clients(insts, one) as statuses:
            await eventually(lambda: len(statuses) >= 20 and all(p.levels for p in syncs))
            redis_server.stop()
            await eventually(lambda: not any(i.state.connected for i in insts))
            served = len(statuses)
            await eventually(lambda: len(statuses) >= served + 20)  # still serving, each from its half
            # each instance's next sync cycle (not the disconnect itself) sets its share: wait for it
            await eventually(lambda: all(i.components.budgets.engine.fleet_share == 0.5 for i in insts))
            redis_server.start()  # empty: the fleet bucket starts full again and is charged from here on
            for p in syncs:
                p.levels.clear()
            await eventually(lambda: all(i.state.connected for i in insts))
            # the new fleet bucket holds the spends made after the restart
            await eventually(lambda: all(p.levels and min(p.levels.values()) < big - 1 for p in syncs))
        assert statuses and all(st == 200 for st in statuses)
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            assert await redis.exists("{cp}:budget:r:anonymous/default")
        finally:
            await redis.aclose()
        # each instance's bucket is again its half of the fleet's, once both heartbeats are back (under load
        # the second can lag the reconnect by more than the test's short leader TTL)
        await eventually(lambda: all(i.components.budgets.engine.fleet_share == 0.5 for i in insts))
        for inst in insts:
            engine = inst.components.budgets.engine
            level = engine.bucket_level("anonymous", "default", inst.components.clock())
            assert level is not None and level <= big / 2
