"""The worker's Anthropic Messages API through the official ``anthropic`` client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import pytest
from anthropic import AsyncAnthropic

from concurproxy.tokens import count_tokens, synth_text
from concurproxy.worker.fleet import Worker, run_fleet

CHAT_TEXT = "<system>: be brief\n<user>: hello there, worker\n"


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    async with run_fleet("tiny", 1, time_scale=50.0) as ws:
        yield ws[0]


@pytest.fixture
async def client(worker: Worker) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(base_url=worker.url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


async def test_create_non_streaming(client: AsyncAnthropic) -> None:
    m = await client.messages.create(
        model="m", max_tokens=6, system="be brief", messages=[{"role": "user", "content": "hello there, worker"}]
    )
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == synth_text(6)  # type: ignore[union-attr]
    assert m.stop_reason == "max_tokens"
    u = m.usage
    assert u.output_tokens == 6 and u.cache_creation_input_tokens == 0
    # Anthropic's contract: the whole prompt is input + cache read + cache creation
    assert u.input_tokens + (u.cache_read_input_tokens or 0) == count_tokens(CHAT_TEXT)


async def test_stream_helper_and_raw_events(client: AsyncAnthropic) -> None:
    kw = {"model": "m", "max_tokens": 4, "system": [{"type": "text", "text": "be brief"}]}
    msgs = [{"role": "user", "content": [{"type": "text", "text": "hello there, worker"}]}]
    async with client.messages.stream(messages=msgs, **kw) as s:  # type: ignore[arg-type]
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == synth_text(4) and final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens == 4 and final.stop_reason == "max_tokens"
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) == count_tokens(CHAT_TEXT)
    raw = await client.messages.create(messages=msgs, stream=True, **kw)  # type: ignore[call-overload]
    types = [e.type async for e in raw]
    assert types[0] == "message_start" and types[1] == "content_block_start"
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert types.count("content_block_delta") == 4


async def test_prefix_cache_shows_as_cache_read(client: AsyncAnthropic) -> None:
    msgs = [{"role": "user", "content": "w " * 40}]
    for _ in range(2):
        m = await client.messages.create(model="m", max_tokens=1, messages=msgs)  # type: ignore[arg-type]
    assert m.usage.cache_read_input_tokens == 32
    assert m.usage.input_tokens == count_tokens("<user>: " + "w " * 40 + "\n") - 32


async def test_tool_use_and_results_render_like_chat(client: AsyncAnthropic, worker: Worker) -> None:
    msgs = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
    ]
    m = await client.messages.create(model="m", max_tokens=2, messages=msgs)  # type: ignore[arg-type]
    chat = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "let me look", "tool_calls": [{"id": "t1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
    ]
    async with aiohttp.ClientSession() as http:
        async with http.post(worker.url + "/v1/chat/completions", json={"messages": chat, "max_tokens": 2}) as r:
            ref = (await r.json())["usage"]["prompt_tokens"]
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == ref


async def test_count_tokens(client: AsyncAnthropic) -> None:
    r = await client.messages.count_tokens(
        model="m", system="be brief", messages=[{"role": "user", "content": "hello there, worker"}]
    )
    assert r.input_tokens == count_tokens(CHAT_TEXT)


async def test_missing_max_tokens_is_an_anthropic_error(worker: Worker) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        async with http.post(worker.url + "/v1/messages", json=body) as r:
            assert r.status == 400
            doc = await r.json()
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in doc["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "max_tokens": 4, "messages": []},
        {"model": "m", "max_tokens": 4, "messages": [{"role": "robot", "content": "x"}]},
        {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": 5}]},
        {"model": "m", "max_tokens": 5000, "messages": [{"role": "user", "content": "x"}]},
    ],
)
async def test_bad_requests_raise_in_the_sdk(client: AsyncAnthropic, body: dict[str, object]) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        await client.messages.create(**body)  # type: ignore[arg-type]
    assert e.value.body["type"] == "error"  # type: ignore[index]
