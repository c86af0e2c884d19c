"""Agents as they are (issue 20), through the live proxy with the official clients and no identity headers:
a chat loop, an Anthropic conversation and a client's own session id each land on one agent and one replica."""

from __future__ import annotations

import io

import anthropic
import httpx
import openai
import orjson
import pytest

from concurproxy.testing.stub_upstream import StubBehaviour

AGENT = "x-concurproxy-agent-id"
REPLICA = "x-concurproxy-replica"


def _openai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-x", max_retries=0)


async def _chat_loop(client: openai.AsyncOpenAI, system: str, task: str, steps: int) -> list[tuple[str, str]]:
    """A plain agent loop: the history grows by the reply and a tool result; no headers of ours."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}, {"role": "user", "content": task}]
    seen = []
    for i in range(steps):
        raw = await client.chat.completions.with_raw_response.create(
            model="stub-model",
            messages=messages,
            max_tokens=3,  # type: ignore[arg-type]
        )
        reply = raw.parse().choices[0].message.content or ""
        seen.append((raw.headers[AGENT], raw.headers[REPLICA]))
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": f"tool result {i}"}]
    return seen


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chat_loop_without_headers_is_one_agent_on_one_replica(proxy_factory, stream):
    async with proxy_factory(n_stubs=2) as h:
        client = await h.stack.enter_async_context(_openai(h.url))
        messages: list[dict[str, str]] = [{"role": "user", "content": "plan the release"}]
        seen = []
        for i in range(4):
            raw = await client.chat.completions.with_raw_response.create(
                model="stub-model",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=3,
                stream=stream,
            )
            if stream:
                text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
            else:
                text = raw.parse().choices[0].message.content or ""
            seen.append((raw.headers[AGENT], raw.headers[REPLICA]))
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"result {i}"}]
        assert len(set(seen)) == 1, seen  # one agent, one replica
        state = (await (await h.session.get(h.url + "/admin/state")).json())["sessions"]
        assert state["resolved"].get("new") == 1 and state["resolved"].get("chain") == 3
        agents = state["recent"]
        assert [a["steps"] for a in agents] == [4]


async def test_two_agents_with_one_system_prompt_stay_two(proxy_factory):
    async with proxy_factory(n_stubs=2) as h:
        client = await h.stack.enter_async_context(_openai(h.url))
        a = await _chat_loop(client, "you are a coding agent", "fix bug 1", 3)
        b = await _chat_loop(client, "you are a coding agent", "fix bug 2", 3)
        assert len({x for x, _ in a}) == 1 and len({x for x, _ in b}) == 1
        assert a[0][0] != b[0][0]


async def test_an_anthropic_conversation_without_headers_is_one_agent(proxy_factory):
    async with proxy_factory(n_stubs=2) as h:
        client = await h.stack.enter_async_context(
            anthropic.AsyncAnthropic(base_url=h.url, api_key="sk-x", max_retries=0)
        )
        messages: list[dict[str, object]] = [{"role": "user", "content": "review the patch"}]
        seen = []
        for i in range(3):
            raw = await client.messages.with_raw_response.create(
                model="stub-model",
                max_tokens=3,
                system="a reviewer",
                messages=messages,  # type: ignore[arg-type]
            )
            msg = await raw.parse()
            seen.append((raw.headers[AGENT], raw.headers[REPLICA]))
            messages += [
                {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
                {"role": "user", "content": f"comment {i}"},
            ]
        assert len(set(seen)) == 1, seen


async def test_a_clients_own_session_id_names_the_agent_per_tenant(proxy_factory):
    async with proxy_factory(n_stubs=2) as h:
        async with httpx.AsyncClient(base_url=h.url) as http:
            got = []
            for text in ("one", "two"):  # unrelated prompts, one Claude Code session
                r = await http.post(
                    "/v1/chat/completions",
                    json={"model": "stub-model", "messages": [{"role": "user", "content": text}], "max_tokens": 2},
                    headers={"x-claude-code-session-id": "3f1c0e6e-5b61-4a9e-9c39-0a4c4b2f7d10"},
                )
                assert r.status_code == 200
                got.append((r.headers[AGENT], r.headers[REPLICA]))
        assert len(set(got)) == 1, got


async def test_explicit_identity_wins_and_inference_can_be_off(proxy_factory):
    async with proxy_factory(identity={"infer": "off", "client_session_ids": []}) as h:
        client = await h.stack.enter_async_context(_openai(h.url))
        raw = await client.chat.completions.with_raw_response.create(
            model="stub-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert AGENT not in raw.headers  # a one-step agent, as before
    async with proxy_factory() as h:
        client = await h.stack.enter_async_context(_openai(h.url))
        raw = await client.chat.completions.with_raw_response.create(
            model="stub-model",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            extra_headers={"X-Agent-Id": "mine"},
        )
        assert AGENT not in raw.headers  # the client named it


async def test_bad_conversations_fall_back_to_one_step_and_are_served(proxy_factory):
    behaviours = [StubBehaviour()]
    async with proxy_factory(behaviours=behaviours) as h:
        for content in ([{"type": "mystery", "blob": 1}], "x " * 200_000):  # (the stub takes 1 MB at most)
            body = {"model": "stub-model", "messages": [{"role": "user", "content": content}], "max_tokens": 2}
            r = await h.session.post(
                h.url + "/v1/chat/completions",
                data=io.BytesIO(orjson.dumps(body)),
                headers={"Content-Type": "application/json"},
            )
            assert r.status == 200, await r.text()
