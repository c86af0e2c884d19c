"""The proxy relays the real engine's chat/completions, streamed and not, to the official client.

The tiny model's text is random; the checks are on shape and counts (``ignore_eos`` makes every
reply exactly ``max_tokens`` long).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from concurproxy.server.app import running_proxy
from scripts.vllm.engines import Engine

N = 12
IGNORE_EOS = {"ignore_eos": True}
MESSAGES: Any = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Say something random, please."},
]


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=60)


async def test_chat_non_streamed(engine: Engine, make_policy: Callable[..., Any]) -> None:
    async with running_proxy(make_policy([engine.url])) as url, client(url) as c:
        r = await c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=N, extra_body=IGNORE_EOS)
    assert r.object == "chat.completion"
    assert r.choices[0].finish_reason == "length"
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage is not None and r.usage.completion_tokens == N and r.usage.prompt_tokens > 10


async def test_chat_streamed_with_usage(engine: Engine, make_policy: Callable[..., Any]) -> None:
    async with running_proxy(make_policy([engine.url])) as url, client(url) as c:
        stream = await c.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=N, stream=True,
            stream_options={"include_usage": True}, extra_body=IGNORE_EOS,
        )  # fmt: skip
        chunks = [ch async for ch in stream]
    deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(deltas) >= N // 2  # one token per chunk, a few may detokenize to nothing yet
    assert finish == ["length"]
    usage = [ch.usage for ch in chunks if ch.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == N
    assert chunks[-1].usage is not None  # the usage chunk comes last, after the finish


async def test_completions_both_ways(engine: Engine, make_policy: Callable[..., Any]) -> None:
    async with running_proxy(make_policy([engine.url])) as url, client(url) as c:
        r = await c.completions.create(model="tiny", prompt="The cache", max_tokens=N, extra_body=IGNORE_EOS)
        stream = await c.completions.create(
            model="tiny", prompt="The cache", max_tokens=N, stream=True, extra_body=IGNORE_EOS
        )
        chunks = [ch async for ch in stream]
        models = await c.models.list()
    assert r.usage is not None and r.usage.completion_tokens == N
    assert r.choices[0].finish_reason == "length"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason] == ["length"]
    assert sum(1 for ch in chunks if ch.choices[0].text) >= N // 2
    assert "tiny" in [m.id for m in models.data]
