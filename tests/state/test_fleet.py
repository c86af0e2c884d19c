"""Several proxy instances sharing one redis-server: pins, one window, crashed instances, outages."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from concurproxy.testing.stub_upstream import StubBehaviour

Instance = Any  # tests/state/conftest.py: Instance
RedisServer = Any

pytestmark = pytest.mark.redis

STATIC2 = {"controller": "static", "static": {"window": 2}, "starvation_timeout_s": 60, "max_queue_wait_s": 20}


async def step(session: aiohttp.ClientSession, inst: Instance, agent: str, done: bool = False) -> tuple[int, str]:
    headers = {"X-Agent-Id": agent, **({"X-Agent-Done": "true"} if done else {})}
    body = {"model": "stub-model", "messages": [{"role": "user", "content": f"task of {agent}"}], "max_tokens": 4}
    async with session.post(inst.url + "/v1/chat/completions", json=body, headers=headers) as r:
        await r.read()
        return r.status, r.headers.get("x-concurproxy-replica", "")


def pinned(inst: Instance, agent: str) -> str | None:
    pins = inst.components.router.router.pins
    return pins.get(f"anonymous/{agent}", inst.components.clock())  # type: ignore[no-any-return]


async def test_steps_of_one_agent_through_three_instances_land_on_one_replica(
    redis_server: RedisServer, fleet: Any, eventually: Any
) -> None:
    async with fleet(redis_server.url, 3, [StubBehaviour(), StubBehaviour(), StubBehaviour()]) as (insts, _, s):
        for k in range(6):
            agent = f"a{k}"
            status, first = await step(s, insts[k % 3], agent)
            assert status == 200
            for inst in insts:  # the pin reaches every instance (pub/sub): bounded wait
                await eventually(lambda inst=inst, agent=agent, first=first: pinned(inst, agent) == first)
            for i in range(1, 4):
                status, replica = await step(s, insts[(k + i) % 3], agent)
                assert (status, replica) == (200, first)


async def test_three_instances_respect_one_static_window(
    redis_server: RedisServer, fleet: Any, eventually: Any
) -> None:
    stub = StubBehaviour(chunks=3, chunk_delay_s=0.01)
    async with fleet(redis_server.url, 3, [stub], admission=STATIC2) as (insts, _, s):
        peak = 0
        stop = asyncio.Event()

        async def sample() -> None:  # steps past admission, on their way upstream, over all instances
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, sum(r.in_flight for inst in insts for r in inst.components.pool))
                await asyncio.sleep(0.001)

        async def agent(k: int) -> list[int]:
            out = []
            for i in range(3):
                status, _ = await step(s, insts[(k + i) % 3], f"w{k}", done=i == 2)
                out.append(status)
            return out

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*(agent(k) for k in range(6)))
        stop.set()
        await sampler
        assert all(st == 200 for r in results for st in r)
        assert 1 <= peak <= 2
        states = [i.state.state() for i in insts]
        assert sum(st["leader"] for st in states) == 1
        assert all(st["replicas"]["r0"]["window"] == 2 for st in states)


async def test_a_killed_instance_leaks_no_slot_after_the_lease(
    redis_server: RedisServer, fleet: Any, eventually: Any
) -> None:
    async with fleet(redis_server.url, 2, [StubBehaviour()], admission=STATIC2) as (insts, _, s):
        assert (await step(s, insts[0], "x"))[0] == 200
        assert (await step(s, insts[0], "y"))[0] == 200
        await eventually(lambda: insts[1].state.share("r0").others == 2)  # the window is full fleet-wide
        assert insts[1].components.admission.core.window("r0").window == 0
        await insts[0].state.stop(release=False)  # crash: no goodbye, leases stay until they expire
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            assert await redis.zcard("{cp}:leases:r0") == 2
            await eventually(lambda: insts[1].state.share("r0").others == 0, timeout_s=5)  # lease_s = 1
            assert await redis.zcard("{cp}:leases:r0") == 0
            await eventually(lambda: insts[1].state.is_leader)  # the survivor leads (lock TTL 0.5 s)
        finally:
            await redis.aclose()
        results = await asyncio.gather(step(s, insts[1], "p"), step(s, insts[1], "q"))
        assert [r[0] for r in results] == [200, 200]


async def test_redis_stopped_and_restarted_mid_run_loses_no_request(
    redis_server: RedisServer, fleet: Any, eventually: Any, clients: Any
) -> None:
    stub = StubBehaviour(chunks=2, chunk_delay_s=0.005)
    admission: dict[str, Any] = {**STATIC2, "static": {"window": 4}}
    async with fleet(redis_server.url, 2, [stub, StubBehaviour()], admission=admission) as (insts, _, s):

        async def one(inst: Instance, agent: str) -> int:
            return (await step(s, inst, agent))[0]

        async with clients(insts, one) as statuses:
            await eventually(lambda: len(statuses) >= 20)
            redis_server.stop()
            await eventually(lambda: not any(i.state.connected for i in insts))
            served = len(statuses)
            await eventually(lambda: len(statuses) >= served + 20)  # still serving, from local state
            redis_server.start()
            await eventually(lambda: all(i.state.connected for i in insts))
            n = len(statuses)
            await eventually(lambda: len(statuses) >= n + 20)
        assert statuses and all(st == 200 for st in statuses)
        assert all(i.state.breaker.failures >= 1 for i in insts)
