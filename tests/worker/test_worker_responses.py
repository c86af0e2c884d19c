"""The worker's Responses API through the official ``openai`` client: shapes, streaming, chains, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from concurproxy.tokens import count_tokens, synth_text
from concurproxy.worker.fleet import Worker, run_fleet

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there, worker"},
]


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    async with run_fleet("tiny", 1, time_scale=50.0) as ws:
        yield ws[0]


@pytest.fixture
async def client(worker: Worker) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=worker.url + "/v1", api_key="sk-test", max_retries=0) as c:
        yield c


async def test_create_non_streaming_has_usage_and_output(client: AsyncOpenAI) -> None:
    r = await client.responses.create(model="m", instructions="be brief", input="hello there, worker")
    assert r.object == "response" and r.id.startswith("resp_") and r.model == "concurworker-tiny"
    assert r.output_text == synth_text(64)  # the tiny profile's default_max_tokens
    assert r.status == "incomplete" and r.incomplete_details and r.incomplete_details.reason == "max_output_tokens"
    u = r.usage
    assert u is not None and u.output_tokens == 64 and u.total_tokens == u.input_tokens + 64
    # the same tokens as the chat rendering of the same conversation
    assert u.input_tokens == count_tokens("<system>: be brief\n<user>: hello there, worker\n")
    assert u.input_tokens_details.cached_tokens == 0


async def test_streaming_event_sequence(client: AsyncOpenAI) -> None:
    stream = await client.responses.create(model="m", input=MESSAGES, max_output_tokens=5, stream=True)
    events = [e async for e in stream]
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == synth_text(5)
    done = events[-1].response
    assert done.usage is not None and done.usage.output_tokens == 5 and done.output_text == synth_text(5)
    assert done.id == events[0].response.id


async def test_stream_helper_final_response(client: AsyncOpenAI) -> None:
    async with client.responses.stream(model="m", input="hi", max_output_tokens=3) as s:
        final = await s.get_final_response()
    assert final.output_text == synth_text(3) and final.usage is not None and final.usage.output_tokens == 3


async def test_previous_response_id_chain_reuses_the_prefix(client: AsyncOpenAI) -> None:
    first = await client.responses.create(model="m", instructions="be brief", input="w " * 40, max_output_tokens=8)
    second = await client.responses.create(
        model="m", instructions="be brief", previous_response_id=first.id, input="and now?", max_output_tokens=4
    )
    chat_text = f"<system>: be brief\n<user>: {'w ' * 40}\n<assistant>: {synth_text(8)}\n<user>: and now?\n"
    assert second.usage is not None and second.usage.input_tokens == count_tokens(chat_text)
    assert second.usage.input_tokens_details.cached_tokens >= 32  # the first step's blocks are reused
    assert second.previous_response_id == first.id
    got = await client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == synth_text(4)


async def test_function_call_items_render_like_chat_tool_calls(client: AsyncOpenAI, worker: Worker) -> None:
    items = [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    r = await client.responses.create(model="m", input=items, max_output_tokens=2)  # type: ignore[arg-type]
    chat = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    async with aiohttp.ClientSession() as http:
        body = {"messages": chat, "max_tokens": 2}
        async with http.post(worker.url + "/v1/chat/completions", json=body) as resp:
            ref = (await resp.json())["usage"]["prompt_tokens"]
    assert r.usage is not None and r.usage.input_tokens == ref


async def test_unknown_previous_response_is_404_in_the_responses_shape(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        await client.responses.create(model="m", input="x", previous_response_id="resp_nope")
    err = e.value.body
    assert isinstance(err, dict) and err["param"] == "previous_response_id" and "resp_nope" in err["message"]


async def test_get_delete_cancel(client: AsyncOpenAI) -> None:
    r = await client.responses.create(model="m", input="x", max_output_tokens=1)
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(r.id)  # as vLLM: only background responses can be cancelled
    await client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(r.id)


async def test_store_false_is_not_retrievable(client: AsyncOpenAI) -> None:
    r = await client.responses.create(model="m", input="x", max_output_tokens=1, store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(r.id)


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": [{"type": "mystery"}]}, "input"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "max_output_tokens": 5000}, None),
    ],
)
async def test_bad_requests_get_openai_errors(worker: Worker, payload: dict[str, object], param: str | None) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(worker.url + "/v1/responses", json=payload) as r:
            assert r.status == 400
            err = (await r.json())["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == 400 and err["param"] == param
