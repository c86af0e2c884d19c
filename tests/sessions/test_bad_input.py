"""Bad input never raises out of the session code: identity falls back to a one-step agent."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from session_helpers import NO_HEADERS, chat_answer, chat_step, make_resolver

from concurproxy.sessions import (
    ChatStreamReply,
    MessagesStreamReply,
    SessionResolver,
    from_chat,
    from_messages,
    from_responses,
    reply_from_chat,
    reply_from_messages,
    reply_from_responses,
)

ADAPTERS = (from_chat, from_messages, from_responses)
REPLIES = (reply_from_chat, reply_from_messages, reply_from_responses)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": None},
        {"messages": "hello"},
        {"messages": {"role": "user"}},
        {"messages": []},
        {"messages": [1, 2]},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": 7, "content": "x"}]},
        {"messages": [{"role": None, "content": "x"}]},
        {"input": 3},
        {"input": []},
    ],
)
def test_unusable_bodies_make_a_one_shot_step(body: dict[str, Any]) -> None:
    r = make_resolver()
    for adapt in ADAPTERS:
        res = r.resolve("t", NO_HEADERS, body, adapt(body), request_id="rq")
        assert res.source in ("one-shot", "new")  # a Responses string input or a lone valid turn is a step
        if adapt(body) is None:
            assert (res.agent_id, res.detail) == ("req-rq", "no-conversation")


def test_content_parts_of_unknown_types_count_for_nothing_and_do_not_raise(resolver: SessionResolver) -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "hologram", "depth": [1, 2]},
        {"type": "text"},  # no text
        {"type": "text", "text": 5},
        "bare string",
        None,
        {"type": "text", "text": "the question"},
    ]
    weird_calls = [None, {"function": None}, {"function": {"name": 3, "arguments": {"a": [1]}}}, "x"]
    messages = [
        {"role": "user", "content": parts},
        {"role": "assistant", "content": {"not": "a list"}, "tool_calls": weird_calls},
        {"role": "tool", "tool_call_id": 12, "content": [{"type": "text", "text": "r"}]},
    ]
    res = chat_step(resolver, messages)
    assert res.source == "new"
    assert chat_step(resolver, messages).agent_id == res.agent_id  # and it is read the same way again


def test_an_enormous_single_message_is_fingerprinted_once_and_quickly(resolver: SessionResolver) -> None:
    huge = "lorem ipsum dolor sit amet " * 200_000  # 5.4 MB
    messages = [{"role": "user", "content": huge}]
    t0 = time.perf_counter()
    res = chat_step(resolver, messages)
    chat_answer(resolver, res, {"role": "assistant", "content": huge[:1000]})
    assert time.perf_counter() - t0 < 1.0  # one hash pass (~5 ms here), not one per prefix
    nxt = chat_step(
        resolver, [*messages, {"role": "assistant", "content": huge[:1000]}, {"role": "user", "content": "?"}]
    )
    assert nxt.agent_id == res.agent_id


def test_text_that_does_not_encode_is_hashed_anyway(resolver: SessionResolver) -> None:
    res = chat_step(resolver, [{"role": "user", "content": "lone surrogate \ud800 here"}])
    assert res.source == "new"


class _Odd(NamedTuple):
    role: Any
    text: Any
    tool_calls: Any = ()
    tool_call_id: Any = None


def test_a_view_of_the_wrong_types_from_a_caller_fails_open(resolver: SessionResolver) -> None:
    for view in ([_Odd("user", None)], [_Odd("user", "x", tool_calls=5)], [_Odd("user", b"bytes")]):
        res = resolver.resolve("t", NO_HEADERS, {}, view, request_id="rq")
        assert (res.source, res.detail) == ("one-shot", "unreadable")
    assert resolver.errors == 3
    ok = resolver.resolve("t", NO_HEADERS, {}, [_Odd("user", "x")], request_id="rq")
    resolver.remember(ok, [_Odd("assistant", None)])  # an unreadable answer is not remembered
    assert resolver.errors == 4


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
keys = st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "type", "text", "id", "function", "name"])
message_like = st.dictionaries(keys, json_values, max_size=5)


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(message_like, max_size=4) | json_values,
    extra=st.dictionaries(
        st.sampled_from(["system", "input", "instructions", "metadata", "conversation"]), json_values
    ),
)
def test_no_json_body_makes_the_resolver_raise(messages: Any, extra: dict[str, Any]) -> None:
    r = make_resolver()
    body = {"model": "m", "messages": messages, **extra}
    for adapt, reply in zip(ADAPTERS, REPLIES, strict=True):
        res = r.resolve("t", NO_HEADERS, body, adapt(body), request_id="rq")
        r.remember(res, reply(body))
        r.remember(res, reply({"choices": [{"message": messages}], "content": messages, "output": messages}))
    for acc in (ChatStreamReply(), MessagesStreamReply()):
        acc.feed(messages)
        acc.feed({"choices": [{"delta": messages}], "index": 0, "type": "content_block_delta", "delta": messages})
        acc.reply()
    r.state()
