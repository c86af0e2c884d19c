"""The official SDKs through the proxy in front of real bundled workers (``tiny`` profile, in-process).

The stub-upstream suite (``test_official_clients.py``) pins the proxy's side of each API; this one
checks that the proxy and the bundled worker agree end to end: ``openai`` Responses (streamed and
not, a ``previous_response_id`` chain that must stay on the worker storing it), chat; ``anthropic``
``messages.create``, ``messages.stream`` and ``count_tokens`` (passed through); a raw ``/tokenize``,
which the worker does not serve (its own 404 is relayed, not one the proxy invents); and usage of
Responses and Messages steps, as the worker reports it, reaching budgets and the token metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import openai
import pytest

from concurproxy.tokens import synth_text
from concurproxy.worker.fleet import Worker, run_fleet

LABELS = {"tenant": "anonymous", "role": "default"}


@pytest.fixture
async def workers() -> AsyncIterator[list[Worker]]:
    async with run_fleet("tiny", 2, time_scale=50.0) as ws:
        yield ws


@pytest.fixture
def through_proxy(proxy_factory: Callable[..., Any], workers: list[Worker]) -> Callable[..., Any]:
    """``async with through_proxy(**policy) as (h, oai, ant):`` the proxy in front of both workers,
    with an ``openai`` and an ``anthropic`` client pointed at it (closed with the proxy)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make(**policy: Any) -> AsyncIterator[tuple[Any, openai.AsyncOpenAI, anthropic.AsyncAnthropic]]:
        async with proxy_factory(upstream_urls=[w.url for w in workers], **policy) as h:
            oai = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="k", max_retries=0)
            ant = anthropic.AsyncAnthropic(base_url=h.url, api_key="k", max_retries=0)
            h.stack.push_async_callback(oai.close)
            h.stack.push_async_callback(ant.close)
            yield h, oai, ant

    return make


def sample(h: Any, name: str, **labels: str) -> float:
    return h.components.metrics.registry.get_sample_value(name, labels) or 0.0


def model(workers: list[Worker]) -> str:
    return workers[0].served_model


async def test_responses_create_streamed_and_not(through_proxy, workers):
    async with through_proxy() as (h, oai, _):
        r = await oai.responses.create(model=model(workers), input="hello there, worker", max_output_tokens=5)
        assert r.output_text == synth_text(5) and r.usage is not None and r.usage.output_tokens == 5
        step = h.listener.steps[-1]
        assert step.route == "/v1/responses" and step.outcome == "success" and step.response_id == r.id
        assert (step.usage.prompt_tokens, step.usage.completion_tokens) == (r.usage.input_tokens, 5)

        stream = await oai.responses.create(model=model(workers), input="stream me", max_output_tokens=4, stream=True)
        events = [e async for e in stream]
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == synth_text(4)
        done = events[-1].response
        step = h.listener.steps[-1]
        assert step.stream and step.outcome == "success" and step.streamed_chunks == len(events)
        assert step.response_id == done.id and done.usage is not None
        assert (step.usage.prompt_tokens, step.usage.completion_tokens) == (done.usage.input_tokens, 4)


async def test_previous_response_id_chain_is_one_agent_on_one_worker(through_proxy, workers):
    """Each worker keeps its own stored responses, so a chain step sent to the other worker would be
    that worker's 404: the chain answering at all is half the proof, the replica header the rest."""
    async with through_proxy() as (h, oai, _):
        m = model(workers)
        raw = await oai.responses.with_raw_response.create(model=m, input="one", max_output_tokens=3)
        first, home = raw.parse(), raw.headers["x-concurproxy-replica"]
        parent, agents, streamed = first.id, {raw.headers["x-concurproxy-agent-id"]}, False
        for i in range(4):
            if streamed := not streamed:
                async with oai.responses.with_streaming_response.create(
                    model=m, input=f"step {i}", previous_response_id=parent, max_output_tokens=3, stream=True
                ) as resp:
                    assert resp.headers["x-concurproxy-replica"] == home
                    agents.add(resp.headers["x-concurproxy-agent-id"])
                    parent = [e async for e in await resp.parse()][-1].response.id
            else:
                raw = await oai.responses.with_raw_response.create(
                    model=m, input=f"step {i}", previous_response_id=parent, max_output_tokens=3
                )
                assert raw.headers["x-concurproxy-replica"] == home
                agents.add(raw.headers["x-concurproxy-agent-id"])
                parent = raw.parse().id
        steps = h.listener.steps
        assert [s.replica.id for s in steps] == [home] * 5 and all(s.outcome == "success" for s in steps)
        assert len(agents) == 1 and len({s.step.agent_id for s in steps}) == 1
        assert not any(s.identity.one_shot for s in steps)
        # the worker saw the chain: each step's prompt holds every earlier turn, so it only grows
        prompts = [s.usage.prompt_tokens for s in steps]
        assert prompts == sorted(prompts) and prompts[0] < prompts[-1]
        # GET and DELETE are passed through to the worker that stores the response
        got = await oai.responses.retrieve(parent)
        assert got.id == parent and got.output_text == synth_text(3)
        await oai.responses.delete(parent)
        with pytest.raises(openai.NotFoundError):  # the worker's own 404, relayed
            await oai.responses.retrieve(parent)
        assert len(h.listener.steps) == 5  # retrieve/delete were not admitted


async def test_chat_through_the_proxy(through_proxy, workers):
    async with through_proxy() as (h, oai, _):
        chat = await oai.chat.completions.create(
            model=model(workers), messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert chat.choices[0].message.content == synth_text(3) and chat.usage is not None
        stream = await oai.chat.completions.create(
            model=model(workers), messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == synth_text(3)
        assert all(c.usage is None for c in chunks)  # the proxy asked for usage and took the chunk out
        first, second = h.listener.steps
        assert first.usage.prompt_tokens == chat.usage.prompt_tokens and first.usage.completion_tokens == 3
        assert second.stream and second.usage.completion_tokens == 3 and second.outcome == "success"


async def test_anthropic_messages_create_stream_and_count_tokens(through_proxy, workers):
    async with through_proxy() as (h, _, ant):
        m, msgs = model(workers), [{"role": "user", "content": "hello there, worker"}]
        msg = await ant.messages.create(model=m, max_tokens=3, system="be brief", messages=msgs)  # type: ignore[arg-type]
        assert msg.content[0].text == synth_text(3) and msg.usage.output_tokens == 3  # type: ignore[union-attr]
        step = h.listener.steps[-1]
        assert step.route == "/v1/messages" and step.outcome == "success"
        # Anthropic counts cached input apart; the proxy's prompt is the whole of it
        u = msg.usage
        whole = u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
        assert step.usage.prompt_tokens == whole

        async with ant.messages.stream(model=m, max_tokens=4, system="be brief", messages=msgs) as stream:  # type: ignore[arg-type]
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == synth_text(4) and final.usage.output_tokens == 4 and final.stop_reason == "max_tokens"
        step = h.listener.steps[-1]
        assert step.stream and step.outcome == "success" and step.usage.completion_tokens == 4
        f = final.usage
        assert step.usage.prompt_tokens == f.input_tokens + (f.cache_read_input_tokens or 0) == whole

        counted = await ant.messages.count_tokens(model=m, system="be brief", messages=msgs)  # type: ignore[arg-type]
        assert counted.input_tokens == whole  # passed through to a worker, not admitted
        assert len(h.listener.steps) == 2
        assert sample(h, "concurproxy_requests_total", route="/v1/messages/count_tokens", status="200", **LABELS)


async def test_raw_tokenize_gets_the_workers_own_404(through_proxy, workers):
    """The bundled worker serves no ``/tokenize``: the proxy relays the worker's 404 as it came (aiohttp's
    plain-text page, from a replica), where a 404 of the proxy's own would be JSON with no replica."""
    async with through_proxy() as (h, _, _):
        body = {"model": model(workers), "prompt": "a b c"}
        async with h.session.post(h.url + "/tokenize", json=body) as r:
            assert r.status == 404 and r.headers["x-concurproxy-replica"] in ("r0", "r1")
            assert r.content_type == "text/plain" and await r.text() == "404: Not Found"
        async with h.session.get(workers[0].url + "/tokenize") as direct:  # the same page, straight from it
            assert direct.status == 404 and await direct.text() == "404: Not Found"
        async with h.session.get(h.url + "/admin/nope") as own:  # a path of the proxy's own: its JSON 404
            assert own.status == 404 and "x-concurproxy-replica" not in own.headers
            assert (await own.json())["error"]["code"] == "not_found"
        assert sample(h, "concurproxy_requests_total", route="/tokenize", status="404", **LABELS) == 1
        assert h.listener.steps == []  # nothing was admitted


async def test_usage_of_responses_and_messages_reaches_budgets_and_token_metrics(through_proxy, workers):
    roles = {"default": {"tokens_per_min": 1_000_000, "max_output_tokens": 2}}
    async with through_proxy(roles=roles) as (h, oai, ant):
        m = model(workers)
        raw = await oai.responses.with_raw_response.create(model=m, input="a b c d", max_output_tokens=9)
        r = raw.parse()
        assert raw.headers["x-concurproxy-max-tokens-clamped"] == "2"  # the clamp reached max_output_tokens
        assert r.usage is not None and r.usage.output_tokens == 2 and r.output_text == synth_text(2)
        stream = await oai.responses.create(model=m, input="a b c d e", max_output_tokens=9, stream=True)
        assert [e async for e in stream][-1].response.usage.output_tokens == 2  # type: ignore[union-attr]
        msgs = [{"role": "user", "content": "a b"}]
        msg = await ant.messages.create(model=m, max_tokens=9, messages=msgs)  # type: ignore[arg-type]
        assert msg.usage.output_tokens == 2
        async with ant.messages.stream(model=m, max_tokens=9, messages=msgs) as s:  # type: ignore[arg-type]
            assert (await s.get_final_message()).usage.output_tokens == 2

        steps = h.listener.steps
        assert [s.route for s in steps] == ["/v1/responses"] * 2 + ["/v1/messages"] * 2
        assert all(s.outcome == "success" and s.budget_charged for s in steps)
        assert all(s.usage.completion_tokens == 2 and s.usage.prompt_tokens > 0 for s in steps)
        inputs = sum(s.usage.prompt_tokens for s in steps)
        assert sample(h, "concurproxy_tokens_total", **LABELS, direction="input") == inputs
        assert sample(h, "concurproxy_tokens_total", **LABELS, direction="output") == 2 * 4
        assert sample(h, "concurproxy_budget_consumed_tokens_total", **LABELS) == inputs + 2 * 4
