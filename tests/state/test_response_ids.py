"""Responses id -> replica: a bounded LRU per instance, shared through Redis with state.backend: redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from concurproxy.state.responses import MAX_ID_CHARS, ResponseEntry, ResponseIds
from concurproxy.testing.stub_upstream import StubBehaviour

E = ResponseEntry("r0", "t", "agent", "task")


async def test_lru_keeps_the_most_recently_used_ids():
    ids = ResponseIds(max_entries=2)
    ids.remember("a", E)
    ids.remember("b", E._replace(replica="r1"))
    assert await ids.lookup("a") == E  # a is now the most recent
    ids.remember("c", E)
    assert len(ids) == 2 and ids.get("b") is None and ids.get("a") == E and ids.get("c") == E
    ids.remember("x" * (MAX_ID_CHARS + 1), E)  # an absurd id from an upstream is not kept
    assert len(ids) == 2


def test_entries_round_trip_through_their_text():
    assert ResponseEntry.decode(E.encode()) == E
    assert ResponseEntry.decode("only\ttwo") is None


def test_the_policy_sets_the_bound():
    from concurproxy.config import load_policy
    from concurproxy.server.assembly import build_components

    policy = load_policy(overrides={"upstreams": [{"url": "http://127.0.0.1:9"}], "state": {"response_ids": 7}}, env={})
    assert build_components(policy).response_ids.max_entries == 7


@pytest.mark.redis
async def test_a_chain_continues_through_another_instance(redis_server: Any, fleet: Any) -> None:
    """Made through instance 0, continued through instance 1: same replica, same agent (Redis-shared map)."""
    async with fleet(redis_server.url, 2, [StubBehaviour(), StubBehaviour()]) as (insts, _, s):
        insts[0].components.pool.get("r0").draining = True  # the first response is made on r1
        body = {"model": "stub-model", "input": "hello", "max_output_tokens": 2}
        async with s.post(insts[0].url + "/v1/responses", json=body) as r:
            assert r.status == 200 and r.headers["x-concurproxy-replica"] == "r1"
            rid = (await r.json())["id"]
        shared = insts[1].components.response_ids
        assert shared.get(rid) is None  # not known there yet: it must come through Redis
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        try:  # bounded wait for the writer task's flush (a cross-process effect)
            async with asyncio.timeout(5):
                while not await redis.exists(shared.key(rid)):  # noqa: ASYNC110 - Redis is another process
                    await asyncio.sleep(0.01)
        finally:
            await redis.aclose()
        for _ in range(3):
            async with s.post(insts[1].url + "/v1/responses", json={**body, "previous_response_id": rid}) as r:
                assert r.status == 200 and r.headers["x-concurproxy-replica"] == "r1", await r.text()
                rid = (await r.json())["id"]
        assert shared.remote_hits == 1  # read once from Redis, then known locally
        async with s.get(insts[0].url + f"/v1/responses/{rid}") as r:  # made on instance 1, read via 0
            assert r.status == 200 and r.headers["x-concurproxy-replica"] == "r1"
