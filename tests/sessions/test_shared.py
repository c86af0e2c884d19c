"""Two instances share inferred sessions through a real redis-server; an outage degrades to local tables."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from session_helpers import ChatAgent, Clock, chat_answer, chat_step, make_resolver, tool_call_reply

from concurproxy.sessions import SessionResolver
from concurproxy.sessions.shared import SharedSessions
from concurproxy.state.config import SharedStateSettings
from concurproxy.state.redis_state import RedisState
from tests.state.conftest import REDIS, RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if REDIS is None:
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Instance:
    def __init__(self, url: str, name: str, clock: Clock) -> None:
        settings = SharedStateSettings(instance_id=name, socket_timeout_s=0.5, retry_after_s=0.2)
        self.state = RedisState(url, settings)
        self.resolver: SessionResolver = make_resolver(clock, ttl_s=60)
        self.resolver.new_id = lambda: f"{name}-s{len(self.resolver.table)}"
        self.shared = SharedSessions(self.state, self.resolver)

    async def step(self, messages: list[dict[str, object]]):  # type: ignore[no-untyped-def]
        res = chat_step(self.resolver, messages)
        return await self.shared.fill(res)


@pytest.fixture
async def fleet(redis_server: RedisServer) -> AsyncIterator[tuple[Instance, Instance]]:
    clock = Clock()
    a, b = Instance(redis_server.url, "p0", clock), Instance(redis_server.url, "p1", clock)
    try:
        yield a, b
    finally:
        for i in (a, b):
            await i.state.stop(release=False)


async def test_an_agent_whose_steps_alternate_between_instances_keeps_one_id(fleet: tuple[Instance, Instance]) -> None:
    a, b = fleet
    messages: list[dict[str, object]] = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    seen = []
    for n in range(6):
        inst = (a, b)[n % 2]
        res = await inst.step(list(messages))
        seen.append(res)
        answer = tool_call_reply(f"call_{n}")
        chat_answer(inst.resolver, res, answer)
        assert await inst.shared.flush()
        messages += [answer, {"role": "tool", "tool_call_id": f"call_{n}", "content": "ok"}]
    assert len({r.agent_id for r in seen}) == 1
    assert seen[0].source == "new"
    # the previous step always went through the other instance: each step is a local miss, one MGET
    assert [r.detail for r in seen[1:]] == ["shared"] * 5
    again = await b.step(list(messages[:-2]))  # a retry of the last step on the instance that served it
    assert (again.agent_id, again.detail) == (seen[-1].agent_id, "retry")  # known locally: no call
    ttl = await a.state.client.pttl(a.shared.key(seen[-1].keys.prompt))  # type: ignore[union-attr]
    assert 0 < ttl <= 60_000
    assert b.shared.view()["hits"] == 3 and a.shared.view()["written"] > 0


async def test_a_retry_on_another_instance_joins_the_agent_and_new_agents_stay_apart(
    fleet: tuple[Instance, Instance],
) -> None:
    a, b = fleet
    messages: list[dict[str, object]] = [{"role": "user", "content": "first step"}]
    first = await a.step(messages)
    await a.shared.flush()
    retry = await b.step(messages)  # the client timed out on a, retried through b
    assert (retry.agent_id, retry.detail) == (first.agent_id, "shared")
    other = await b.step([{"role": "user", "content": "another agent"}])
    assert other.source == "new" and other.agent_id != first.agent_id


async def test_while_redis_is_away_each_instance_serves_from_its_own_table(
    fleet: tuple[Instance, Instance], redis_server: RedisServer
) -> None:
    a, b = fleet
    agent = ChatAgent(a.resolver, "sys", "task")
    agent.step()
    redis_server.stop()
    res = await b.step(list(agent.messages))  # b has never seen it: one failed call, then a new agent
    assert res.source == "new" and not b.state.breaker.allow(b.state.clock())
    assert (await b.step(list(agent.messages))).agent_id == res.agent_id  # local from now on, no call
    assert not await a.shared.flush()  # kept for later
    redis_server.start()
    b.state.breaker.open_until = 0.0  # (the breaker's retry time, not waited for in a test)
    a.state.breaker.open_until = 0.0
    assert await a.shared.flush()
    other = ChatAgent(a.resolver, "sys", "other task")
    other.step()
    assert await a.shared.flush()
    again = await b.step(list(other.messages))
    assert again.detail == "shared"
