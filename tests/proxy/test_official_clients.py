"""The official SDKs through the proxy, against the stub upstream speaking each API's wire format.

``openai``: Responses (streamed and not, a ``previous_response_id`` chain), chat, embeddings;
``anthropic``: ``messages.create`` and ``messages.stream``; a raw ``/tokenize``. Usage of
Responses and Messages steps reaches budgets and the token metrics like a chat step's.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import openai
import pytest

from concurproxy.server.membership import remove_replica
from concurproxy.testing.stub_upstream import StubBehaviour


@pytest.fixture
async def sdk() -> AsyncIterator[Callable[..., Any]]:
    """``sdk("openai"|"anthropic", url, key)``: an official async client, closed after the test."""
    made: list[Any] = []

    def make(kind: str, url: str, key: str = "k") -> Any:
        if kind == "openai":
            client: Any = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        else:
            client = anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def sample(h: Any, name: str, **labels: str) -> float:
    return h.components.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_responses_create_non_streamed_and_streamed(proxy_factory, sdk):
    async with proxy_factory() as h:
        client = sdk("openai", h.url)
        r = await client.responses.create(model="stub-model", input="hello there", max_output_tokens=3)
        assert r.output_text == " tok tok tok" and r.usage is not None and r.usage.output_tokens == 3
        step = h.listener.steps[-1]
        assert step.route == "/v1/responses" and step.outcome == "success"
        assert step.usage.completion_tokens == 3 and step.usage.prompt_tokens == r.usage.input_tokens
        assert step.response_id == r.id

        stream = await client.responses.create(model="stub-model", input="stream me", max_output_tokens=4, stream=True)
        kinds = [event.type async for event in stream]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert kinds.count("response.output_text.delta") == 4
        step = h.listener.steps[-1]
        assert step.stream and step.outcome == "success" and step.usage.completion_tokens == 4
        assert step.response_id is not None and step.streamed_chunks == len(kinds)


async def test_previous_response_id_chain_stays_on_one_replica_and_one_agent(proxy_factory, sdk):
    """Each stub keeps its own responses (a parent it did not make is its 404): the chain lands on the
    replica that made the first response, and every step is one agent, the first step's."""
    async with proxy_factory(n_stubs=2) as h:
        client = sdk("openai", h.url)
        h.components.pool.get("r0").draining = True  # the chain starts on r1 ...
        raw = await client.responses.with_raw_response.create(model="stub-model", input="one", max_output_tokens=2)
        first = raw.parse()
        assert raw.headers["x-concurproxy-replica"] == "r1"
        h.components.pool.get("r0").draining = False  # ... and stays there while r0 is free again
        parent, streamed = first.id, False
        for i in range(4):
            if streamed := not streamed:
                stream = await client.responses.create(
                    model="stub-model", input=f"step {i}", previous_response_id=parent, stream=True
                )
                parent = [e async for e in stream][-1].response.id
            else:
                r = await client.responses.create(model="stub-model", input=f"step {i}", previous_response_id=parent)
                parent = r.id
        steps = h.listener.steps
        assert [s.replica.id for s in steps] == ["r1"] * 5
        # one agent: the first step's (inferred from its conversation: it names none), the chain's after it
        assert len({s.step.agent_id for s in steps}) == 1
        assert not any(s.identity.one_shot for s in steps)
        assert h.stubs[0].seen == []
        # the stored response is reached where it lives, for GET and DELETE
        got = await client.responses.retrieve(parent)
        assert got.id == parent
        await client.responses.delete(parent)
        with pytest.raises(openai.NotFoundError):  # the engine's own 404, relayed
            await client.responses.retrieve(parent)


async def test_explicit_identity_wins_over_the_chain(proxy_factory, sdk):
    async with proxy_factory() as h:
        client = sdk("openai", h.url)
        first = await client.responses.create(model="stub-model", input="one", max_output_tokens=2)
        await client.responses.create(
            model="stub-model", input="two", previous_response_id=first.id, extra_headers={"X-Agent-Id": "planner-7"}
        )
        assert h.listener.steps[-1].step.agent_id == "anonymous/planner-7"


async def test_previous_response_on_a_replica_that_left_is_a_404_in_responses_shape(proxy_factory, sdk):
    async with proxy_factory(n_stubs=2) as h:
        client = sdk("openai", h.url)
        raw = await client.responses.with_raw_response.create(model="stub-model", input="one", max_output_tokens=2)
        first, replica = raw.parse(), raw.headers["x-concurproxy-replica"]
        remove_replica(h.components, replica)
        with pytest.raises(openai.NotFoundError) as err:
            await client.responses.create(model="stub-model", input="two", previous_response_id=first.id)
        assert err.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
        assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        # an id the proxy never saw is the engine's to answer (relayed, not invented)
        with pytest.raises(openai.NotFoundError) as err:
            await client.responses.create(model="stub-model", input="x", previous_response_id="resp_unknown")
        assert "resp_unknown" in str(err.value)


async def test_chat_and_embeddings_and_tokenize(proxy_factory, sdk):
    async with proxy_factory() as h:
        client = sdk("openai", h.url)
        chat = await client.chat.completions.create(
            model="stub-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert chat.choices[0].message.content == " tok tok"
        emb = await client.embeddings.create(model="stub-model", input=["a b", "c"])  # base64 on the wire
        assert [len(d.embedding) for d in emb.data] == [8, 8] and emb.usage.prompt_tokens == 3
        async with h.session.post(h.url + "/tokenize", json={"model": "stub-model", "prompt": "a b c"}) as r:
            assert r.status == 200 and r.headers["x-concurproxy-replica"] == "r0"
            assert (await r.json())["count"] == 3
        assert sample(
            h, "concurproxy_requests_total", route="/tokenize", tenant="anonymous", role="default", status="200"
        )
        assert len(h.listener.steps) == 1  # only the chat step was admitted; the rest passed through


async def test_anthropic_messages_create_and_stream(proxy_factory, sdk):
    async with proxy_factory() as h:
        client = sdk("anthropic", h.url)
        msg = await client.messages.create(
            model="stub-model", max_tokens=3, messages=[{"role": "user", "content": "hi"}], system="be brief"
        )
        assert msg.content[0].text == " tok tok tok" and msg.usage.output_tokens == 3  # type: ignore[union-attr]
        assert h.listener.steps[-1].usage.prompt_tokens == msg.usage.input_tokens
        async with client.messages.stream(
            model="stub-model", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == " tok" * 4 and final.usage.output_tokens == 4
        step = h.listener.steps[-1]
        assert step.route == "/v1/messages" and step.stream and step.outcome == "success"
        assert (step.usage.prompt_tokens, step.usage.completion_tokens) == (final.usage.input_tokens, 4)


async def test_usage_of_responses_and_messages_reaches_budgets_and_token_metrics(proxy_factory, sdk):
    roles = {"default": {"tokens_per_min": 1_000_000, "max_output_tokens": 2}}
    async with proxy_factory(roles=roles) as h:
        r = await sdk("openai", h.url).responses.with_raw_response.create(
            model="stub-model", input="a b c", max_output_tokens=9
        )
        assert r.headers["x-concurproxy-max-tokens-clamped"] == "2"  # budgets clamp max_output_tokens too
        assert h.stubs[0].seen[-1]["max_output_tokens"] == 2
        async with sdk("anthropic", h.url).messages.stream(
            model="stub-model", max_tokens=9, messages=[{"role": "user", "content": "a b"}]
        ) as stream:
            await stream.get_final_message()
        assert h.stubs[0].seen[-1]["max_tokens"] == 2
        used = sum(s.usage.prompt_tokens + s.usage.completion_tokens for s in h.listener.steps)
        assert all(s.budget_charged for s in h.listener.steps)
        labels = {"tenant": "anonymous", "role": "default"}
        assert sample(h, "concurproxy_budget_consumed_tokens_total", **labels) == used
        inputs = sum(s.usage.prompt_tokens for s in h.listener.steps)
        assert sample(h, "concurproxy_tokens_total", **labels, direction="input") == inputs
        assert sample(h, "concurproxy_tokens_total", **labels, direction="output") == 4


async def test_anthropic_key_in_x_api_key_names_the_tenant(proxy_factory, sdk):
    digest = hashlib.sha256(b"team-key").hexdigest()
    policy = {"tenants": [{"name": "team", "key_sha256": [digest]}], "auth": {"allow_anonymous": False}}
    async with proxy_factory(**policy) as h:
        msg = await sdk("anthropic", h.url, "team-key").messages.create(
            model="stub-model", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.usage.output_tokens == 2 and h.listener.steps[-1].identity.tenant == "team"
        assert "x-api-key" not in {k.lower() for k in h.stubs[0].seen_headers[-1]}  # never forwarded
        with pytest.raises(anthropic.AuthenticationError) as err:
            await sdk("anthropic", h.url, "wrong").messages.create(
                model="stub-model", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
            )
        assert err.value.body == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "the API key is not valid for this proxy"},
        }
        count = {"model": "stub-model", "messages": [{"role": "user", "content": "a b"}]}
        async with h.session.post(
            h.url + "/v1/messages/count_tokens", json=count, headers={"x-api-key": "team-key"}
        ) as r:
            assert r.status == 200 and r.headers["x-concurproxy-replica"] == "r0"  # passed through, keyed


async def test_malformed_bodies_get_400_in_each_api_shape(proxy_factory, sdk):
    async with proxy_factory() as h:
        with pytest.raises(anthropic.BadRequestError) as a_err:
            await sdk("anthropic", h.url).messages.create(model="stub-model", max_tokens=2, messages=[])
        assert a_err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as o_err:
            await sdk("openai", h.url).responses.create(model="stub-model", input=[7])  # type: ignore[list-item]
        assert o_err.value.body["param"] == "input[0]"  # type: ignore[index]
        assert h.stubs[0].seen == []


async def test_streams_cut_mid_way_end_with_the_apis_error_event(proxy_factory, sdk):
    stub = StubBehaviour(cut_after_chunks=2)
    async with proxy_factory(behaviours=[stub]) as h:
        stream = await sdk("openai", h.url).responses.create(
            model="stub-model", input="x", max_output_tokens=5, stream=True
        )
        events = [e async for e in stream]
        assert events[-1].type == "error" and events[-1].code == "upstream_error"  # type: ignore[union-attr]
        with pytest.raises(anthropic.APIStatusError, match="api_error"):
            async with sdk("anthropic", h.url).messages.stream(
                model="stub-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            ) as s:
                await s.get_final_message()
        assert [s.outcome for s in h.listener.steps] == ["error", "error"]
        reg = h.components.metrics.registry
        assert reg.get_sample_value("concurproxy_upstream_errors_total", {"replica": "r0", "kind": "mid_stream"}) == 2
