"""The API codecs, without a network: validation shapes, the normalized conversation, usage, stream relays."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.errors import ProxyError
from concurproxy.server.api import CHAT, COMPLETIONS, MESSAGES, RESPONSES, Turn, render, shape_for_path
from concurproxy.server.api.conversation import ToolCall
from concurproxy.server.sse import EventTooLarge
from concurproxy.tokens import render_chat

TOOL_CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "weather"}, {"type": "image_url", "image_url": {}}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"q":1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ],
}


def test_chat_conversation_keeps_tool_calls_and_renders_like_render_chat():
    turns = CHAT.conversation(TOOL_CHAT)
    assert turns[2] == Turn("assistant", "", (ToolCall("c1", "get", '{"q":1}'),))
    assert turns[3] == Turn("tool", "sunny", (), "c1")
    assert render(turns) == render_chat(TOOL_CHAT["messages"]) == CHAT.prompt_text(TOOL_CHAT)


CONTENT = st.one_of(
    st.text(max_size=20),
    st.none(),
    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}), max_size=3),
)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": CONTENT})


@settings(max_examples=200, deadline=None)
@given(st.lists(MESSAGE, min_size=1, max_size=6))
def test_chat_fast_path_equals_the_rendered_conversation(messages: list[dict[str, Any]]) -> None:
    body = {"model": "m", "messages": messages}
    assert CHAT.prompt_text(body) == render(CHAT.conversation(body))


def test_completions_prompt_is_one_roleless_turn():
    body = {"model": "m", "prompt": ["once ", "upon"]}
    assert COMPLETIONS.conversation(body) == (Turn("", "once upon"),)
    assert COMPLETIONS.prompt_text(body) == "once upon"


def test_responses_conversation_from_instructions_and_items():
    body = {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "reasoning", "summary": []},
            {"type": "message", "role": "assistant", "content": "it is sunny"},
        ],
    }
    assert RESPONSES.conversation(body) == (
        Turn("system", "be brief"),
        Turn("user", "weather?"),
        Turn("assistant", "", (ToolCall("c1", "get", "{}"),)),
        Turn("tool", "sunny", (), "c1"),
        Turn("assistant", "it is sunny"),
    )
    # the same conversation as a chat renders (and so hashes) alike
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather?"}]
    assert RESPONSES.prompt_text({"model": "m", "instructions": "be brief", "input": "weather?"}) == render_chat(chat)


def test_messages_conversation_from_system_and_blocks():
    body = {
        "model": "m",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get", "input": {"q": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
        ],
    }
    assert MESSAGES.conversation(body) == (
        Turn("system", "be brief"),
        Turn("user", "weather?"),
        Turn("assistant", "", (ToolCall("t1", "get", '{"q":1}'),)),
        Turn("tool", "sunny", (), "t1"),
    )


def test_extending_a_conversation_extends_its_text():
    """The prefix property the incremental hasher relies on, for every codec's turns."""
    short = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "a b"}]}
    long = {**short, "messages": [*short["messages"], {"role": "assistant", "content": "c"}]}
    for codec in (CHAT, MESSAGES):
        assert codec.prompt_text(long).startswith(codec.prompt_text(short))
    r_short = {"model": "m", "input": [{"role": "user", "content": "a b"}]}
    r_long = {"model": "m", "input": [*r_short["input"], {"role": "assistant", "content": "c"}]}
    assert RESPONSES.prompt_text(r_long).startswith(RESPONSES.prompt_text(r_short))


@pytest.mark.parametrize(
    ("codec", "body", "param"),
    [
        (RESPONSES, {"model": "m"}, "input"),
        (RESPONSES, {"model": "m", "input": [3]}, "input[0]"),
        (RESPONSES, {"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        (RESPONSES, {"model": "m", "input": "x", "previous_response_id": 7}, "previous_response_id"),
        (MESSAGES, {"model": "m", "max_tokens": 4}, "messages"),
        (MESSAGES, {"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (MESSAGES, {"model": "m", "max_tokens": 4, "messages": [{"role": "user"}]}, "messages.0"),
        (MESSAGES, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4}, "model"),
    ],
)
def test_validation_names_the_field(codec, body, param):
    with pytest.raises(ProxyError) as err:
        codec.parse(orjson.dumps(body), 4096)
    assert err.value.status == 400 and err.value.param == param


def test_error_shapes_by_path():
    err = ProxyError(429, "rate_limited", "slow down", retry_after_s=2)
    anthropic = shape_for_path("/v1/messages/count_tokens").response(err)
    assert orjson.loads(anthropic.body) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert anthropic.headers["Retry-After"] == "2"
    assert orjson.loads(shape_for_path("/v1/responses").response(err).body)["error"]["code"] == "rate_limited"


def test_output_limit_and_clamp_per_api():
    for codec, body, field in [
        (CHAT, {"max_completion_tokens": 50}, "max_tokens"),
        (RESPONSES, {"max_output_tokens": 50}, "max_output_tokens"),
        (MESSAGES, {"max_tokens": 50}, "max_tokens"),
    ]:
        assert codec.max_output(body) == 50
        codec.clamp_output(body, 7)
        assert body[field] == 7 and codec.max_output(body) == 7
        assert "max_completion_tokens" not in body


def _ev(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **obj}) + b"\n\n"


def test_responses_relay_reads_id_usage_and_end():
    relay = RESPONSES.relay(False, 1 << 20)
    created = _ev("response.created", {"response": {"id": "resp_1", "usage": None}})
    delta = _ev("response.output_text.delta", {"delta": "x"})
    usage = {"input_tokens": 9, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 4}}
    done = _ev("response.completed", {"response": {"id": "resp_1", "usage": usage}})
    stream = created + delta + delta + done
    assert b"".join(relay.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) == stream
    assert relay.response_id == "resp_1" and relay.done_seen and relay.chunks_seen == 4
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens, relay.usage.cached_tokens) == (9, 2, 4)


def test_messages_relay_sums_input_and_takes_the_final_output():
    relay = MESSAGES.relay(False, 1 << 20)
    start_usage = {"input_tokens": 5, "cache_read_input_tokens": 3, "output_tokens": 1}
    start = _ev("message_start", {"message": {"id": "m", "usage": start_usage}})
    delta = _ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "x"}})
    end = _ev("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}})
    stop = _ev("message_stop", {})
    assert relay.feed(start + delta + end) == start + delta + end
    assert not relay.done_seen
    assert relay.feed(stop) == stop and relay.done_seen
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (8, 6)


def test_mid_stream_errors_in_each_api_shape():
    err = ProxyError(502, "upstream_error", "gone")
    assert CHAT.stream_error(err, 3).endswith(b"data: [DONE]\n\n")
    kind, data = RESPONSES.stream_error(err, 3).split(b"\n", 1)
    assert kind == b"event: error"
    assert orjson.loads(data[len(b"data: ") :]) == {
        "type": "error",
        "code": "upstream_error",
        "message": "gone",
        "param": None,
        "sequence_number": 3,
    }
    kind, data = MESSAGES.stream_error(err, 3).split(b"\n", 1)
    assert kind == b"event: error"
    assert orjson.loads(data[len(b"data: ") :])["error"] == {"type": "api_error", "message": "gone"}


def test_an_event_that_never_ends_is_bounded():
    relay = CHAT.relay(False, 65536)
    assert relay.feed(b'data: {"choices":[]}\n\n') == b'data: {"choices":[]}\n\n'
    relay.feed(b"data: " + b"x" * 60_000)
    with pytest.raises(EventTooLarge):
        relay.feed(b"x" * 10_000)
