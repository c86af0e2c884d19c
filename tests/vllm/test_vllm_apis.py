"""The official SDKs through the proxy against vLLM's CPU build: every API the engine serves (issue 19).

One engine for the module: the tier's ``tiny`` engine (conftest), which stores Responses
(``VLLM_ENABLE_RESPONSES_API_STORE=1``) so that ``previous_response_id`` chains work. One proxy per
test in front of it, with a listener that records every step the proxy admitted.

* ``openai`` ``responses.create``: non-streamed, streamed (the engine's event sequence, usage in
  ``response.completed``), and a ``previous_response_id`` chain of three steps (streamed and not),
  which the engine answers from its stored conversation; the proxy counts the chain as one agent
  and reaches the stored response with ``GET /v1/responses/{id}``.
* ``anthropic`` ``messages.create`` and ``messages.stream`` (the key in ``x-api-key``), and
  ``/v1/messages/count_tokens`` passed through.
* A raw ``POST /tokenize`` (passed through, not admitted), and ``embeddings.create``: this engine
  runs the generate runner, which has no ``/v1/embeddings`` route, so the engine's own 404 comes
  back through the proxy (relayed, not invented). Serving embeddings needs a second engine with
  ``--runner pooling --convert embed`` (checked by hand: the tiny model serves 256-dimension
  embeddings that way), which the tier leaves out: one more engine is ~40-100 s of start-up on
  this 2-core box for a pass-through route that ``/tokenize`` already exercises.
* Usage of Responses and Messages steps reaches the budgets (``max_output_tokens`` clamped; the
  consumed-tokens counter equals the usage the engine reported) and the token metrics.

The model's text is random; with ``ignore_eos`` every answer is exactly the requested length.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai
import pytest

from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.server.step import StepContext
from scripts.vllm.engines import Engine
from scripts.vllm.harness import policy_for

N = 6
EOS = {"ignore_eos": True}
KEY = "team-key"


@dataclass
class Proxy:
    url: str
    steps: list[StepContext] = field(default_factory=list)
    metrics: Any = None

    def on_step_end(self, ctx: StepContext, now: float) -> None:
        self.steps.append(ctx)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def proxy(engine: Engine, **sections: Any) -> AsyncIterator[Proxy]:
    tenants = [{"name": "team", "key_sha256": [hashlib.sha256(KEY.encode()).hexdigest()]}]
    policy = policy_for([engine.url], tenants=tenants, **sections)
    comps = build_components(policy)
    async with running_proxy(policy, comps) as url:
        p = Proxy(url, metrics=comps.metrics)
        comps.listeners.append(p)
        yield p


def oai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def ant(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0, timeout=60)


async def test_responses_streamed_and_not_and_a_previous_response_chain(engine: Engine) -> None:
    async with proxy(engine) as p, oai(p.url) as client:
        r = await client.responses.create(model="tiny", input="Say something.", max_output_tokens=N, extra_body=EOS)
        assert r.status == "incomplete" and r.usage is not None and r.usage.output_tokens == N  # max_output_tokens
        step = p.steps[-1]
        assert step.route == "/v1/responses" and step.outcome == "success" and step.identity.tenant == "team"
        assert (step.usage.prompt_tokens, step.usage.completion_tokens) == (r.usage.input_tokens, N)
        assert step.response_id == r.id

        stream = await client.responses.create(
            model="tiny", input="Say more.", max_output_tokens=N, stream=True, extra_body=EOS
        )
        events = [e async for e in stream]
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert 1 <= kinds.count("response.output_text.delta") <= N
        usage = events[-1].response.usage  # type: ignore[union-attr]
        step = p.steps[-1]
        assert step.stream and step.outcome == "success" and step.streamed_chunks == len(events)
        assert usage is not None and (step.usage.prompt_tokens, step.usage.completion_tokens) == (
            usage.input_tokens, N,
        )  # fmt: skip

        # a chain: the engine rebuilds each step's conversation from the response it stored
        parent, sizes = r, [r.usage.input_tokens]
        for i in range(2):
            if i == 0:
                nxt = await client.responses.create(
                    model="tiny", input=f"Step {i}.", previous_response_id=parent.id, max_output_tokens=N,
                    extra_body=EOS,
                )  # fmt: skip
            else:
                s = await client.responses.create(
                    model="tiny", input=f"Step {i}.", previous_response_id=parent.id, max_output_tokens=N,
                    stream=True, extra_body=EOS,
                )  # fmt: skip
                nxt = [e async for e in s][-1].response  # type: ignore[union-attr]
            assert nxt.usage is not None
            sizes.append(nxt.usage.input_tokens)
            parent = nxt
        assert sizes[1] > sizes[0] + N and sizes[2] > sizes[1] + N  # each step carries the one before
        chain = [p.steps[0], *p.steps[2:]]
        assert len({s.step.agent_id for s in chain}) == 1  # the chain is one agent (the first step's)
        assert p.steps[-1].response_id == parent.id and all(s.response_id for s in chain)
        got = await client.responses.retrieve(parent.id)  # reaches the replica that stored it
        assert got.id == parent.id and got.usage is not None and got.usage.output_tokens == N


async def test_anthropic_messages_create_and_stream(engine: Engine) -> None:
    async with proxy(engine) as p, ant(p.url) as client:
        msg = await client.messages.create(
            model="tiny", max_tokens=N, system="Be brief.", messages=[{"role": "user", "content": "Hi."}],
            extra_body=EOS,
        )  # fmt: skip
        assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == N
        assert msg.content and msg.content[0].type == "text"
        step = p.steps[-1]
        assert step.route == "/v1/messages" and step.identity.tenant == "team"  # the key came as x-api-key
        assert (step.usage.prompt_tokens, step.usage.completion_tokens) == (msg.usage.input_tokens, N)

        async with client.messages.stream(
            model="tiny", max_tokens=N, messages=[{"role": "user", "content": "Hi again."}], extra_body=EOS
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert isinstance(text, str) and final.stop_reason == "max_tokens" and final.usage.output_tokens == N
        step = p.steps[-1]
        assert step.route == "/v1/messages" and step.stream and step.outcome == "success"
        assert (step.usage.prompt_tokens, step.usage.completion_tokens) == (final.usage.input_tokens, N)

        counted = await client.messages.count_tokens(model="tiny", messages=[{"role": "user", "content": "Hi."}])
        assert counted.input_tokens > 0
        assert len(p.steps) == 2  # count_tokens passed through, not admitted


async def test_tokenize_and_embeddings_pass_through(engine: Engine) -> None:
    async with proxy(engine) as p, httpx.AsyncClient(base_url=p.url, timeout=60) as http:
        r = await http.post("/tokenize", json={"model": "tiny", "prompt": "hello world"})
        assert r.status_code == 200 and r.headers["x-concurproxy-replica"] == "r0"
        direct = (await http.post(engine.url + "/tokenize", json={"model": "tiny", "prompt": "hello world"})).json()
        assert r.json()["tokens"] == direct["tokens"] and r.json()["count"] == len(direct["tokens"]) > 0
        async with oai(p.url) as client:
            with pytest.raises(openai.NotFoundError):  # the generate runner serves no embeddings: its 404
                await client.embeddings.create(model="tiny", input="hello")
        assert p.steps == []  # neither was admitted as a step
        labels = {"route": "/tokenize", "tenant": "anonymous", "role": "default", "status": "200"}
        assert p.sample("concurproxy_requests_total", **labels) == 1


async def test_usage_of_responses_and_messages_reaches_budgets_and_token_metrics(engine: Engine) -> None:
    roles = {"default": {"tokens_per_min": 1_000_000, "max_output_tokens": 4}}
    async with proxy(engine, roles=roles) as p:
        async with oai(p.url) as client:
            raw = await client.responses.with_raw_response.create(
                model="tiny", input="a b c", max_output_tokens=9, extra_body=EOS
            )
            r = raw.parse()
            assert raw.headers["x-concurproxy-max-tokens-clamped"] == "4"  # budgets clamp max_output_tokens
            assert r.usage is not None and r.usage.output_tokens == 4
        async with ant(p.url) as client:
            async with client.messages.stream(
                model="tiny", max_tokens=9, messages=[{"role": "user", "content": "a b"}], extra_body=EOS
            ) as stream:
                final = await stream.get_final_message()
            assert final.usage.output_tokens == 4
    assert len(p.steps) == 2 and all(s.budget_charged for s in p.steps)
    labels = {"tenant": "team", "role": "default"}
    used = sum(s.usage.prompt_tokens + s.usage.completion_tokens for s in p.steps)
    assert used == r.usage.input_tokens + final.usage.input_tokens + 8
    assert p.sample("concurproxy_budget_consumed_tokens_total", **labels) == used
    assert p.sample("concurproxy_tokens_total", **labels, direction="input") == used - 8
    assert p.sample("concurproxy_tokens_total", **labels, direction="output") == 8
