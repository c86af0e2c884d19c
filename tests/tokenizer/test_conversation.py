"""A chat body becomes the template's variables as vLLM 0.32 makes them (table tests; the real engine
agrees in tests/vllm/test_vllm_tokenizer.py), and the template renders as transformers renders it."""

from __future__ import annotations

import json
from typing import Any

import jinja2
import pytest

from concurproxy.tokenizer.conversation import Unrenderable, render_chat
from concurproxy.tokenizer.template import ChatTemplate

DUMP = "{{ messages | tojson }}|{{ tools | tojson }}"  # shows exactly what the template is given
PARTS = "{% for m in messages %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endfor %}{{ messages | tojson }}"


def seen(body: dict[str, Any], source: str = DUMP, **kw: Any) -> tuple[Any, Any]:
    out = render_chat(ChatTemplate(source, {}), body, **kw)
    messages, tools = out.split("|", 1) if source.startswith(DUMP) else (out[out.index("[{") :], "null")
    return json.loads(messages), json.loads(tools)


def one(message: dict[str, Any], source: str = DUMP) -> dict[str, Any]:
    return seen({"messages": [message]}, source)[0][0]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}),
        ({"role": "user", "content": None}, {"role": "user", "content": ""}),
        (
            {"role": "user", "content": [{"type": "text", "text": "a"}, "b", {"type": "input_text", "text": "c"}]},
            {"role": "user", "content": "a\nb\nc"},
        ),
        ({"role": "user", "content": [{"type": "text", "text": None}]}, {"role": "user", "content": ""}),
        ({"role": "user", "name": "al", "content": "x", "extra": 1}, {"role": "user", "content": "x", "name": "al"}),
        (
            {"role": "system", "content": "x-anthropic-billing-header: cch=1\nbe brief"},
            {"role": "system", "content": "be brief"},
        ),
        (
            {
                "role": "tool",
                "tool_call_id": "c",
                "content": [{"type": "text", "text": "1"}, {"type": "text", "text": "2"}],
            },
            {"role": "tool", "content": "1\n2", "tool_call_id": "c"},
        ),
        (
            {"role": "assistant", "content": "ok", "reasoning_content": "hmm"},
            {"role": "assistant", "content": "ok", "reasoning": "hmm", "reasoning_content": "hmm"},
        ),
        ({"role": "assistant", "content": "ok", "tool_calls": []}, {"role": "assistant", "content": "ok"}),
    ],
)
def test_messages_as_a_string_template_sees_them(message: dict[str, Any], expected: dict[str, Any]) -> None:
    assert one(message) == expected


def test_tool_call_arguments_become_objects_in_vllms_key_order() -> None:
    calls = [
        {"type": "function", "zz": 1, "id": "a", "function": {"name": "f", "arguments": '{"b": 1, "a": "ü"}'}},
        {"id": "b", "type": "function", "function": {"arguments": "", "name": "g"}},
        {"id": "c", "type": "function", "function": {"arguments": "not json", "name": "h"}},
        {"id": "d", "type": "function", "function": {"arguments": "[1]", "name": "i"}},
    ]
    got = one({"role": "assistant", "content": None, "tool_calls": calls})["tool_calls"]
    assert got[0] == {
        "id": "a",
        "function": {"arguments": {"b": 1, "a": "ü"}, "name": "f"},
        "type": "function",
        "zz": 1,
    }
    assert list(got[0]) == ["id", "function", "type", "zz"] and list(got[0]["function"]["arguments"]) == ["b", "a"]
    assert [c["function"]["arguments"] for c in got[1:]] == [{}, {}, {}]


def test_openai_content_format_keeps_parts_and_unknown_fields() -> None:
    msg = {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"t": 1}, "uuid": None}]}
    assert one(msg, PARTS)["content"] == [{"type": "text", "text": "a", "cache_control": {"t": 1}}]
    assert one({"role": "user", "content": None}, PARTS)["content"] == []
    tool = {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "1"}]}
    assert one(tool, PARTS)["content"] == "1"  # tool results are joined in both formats


def test_developer_messages_become_one_system_message_unless_the_template_knows_developer() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "s1"},
            {"role": "user", "content": "u"},
            {"role": "developer", "content": "d", "tools": [1]},
        ]
    }
    assert seen(body)[0] == [{"role": "system", "content": "s1\n\nd"}, {"role": "user", "content": "u"}]
    knows = DUMP + "{# 'developer' #}"
    assert seen(body, knows)[0][2] == {"role": "developer", "content": "d", "tools": [1]}


def test_tools_are_dumped_like_vllms_request_model() -> None:
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "x": 1}},
        {"function": {"name": "g", "description": "d", "strict": True}, "defer_loading": True},
    ]
    assert seen({"messages": [{"role": "user", "content": "x"}], "tools": tools})[1] == [
        {"type": "function", "function": {"name": "f", "description": None, "parameters": {"type": "object"}}},
        {
            "type": "function",
            "function": {"name": "g", "description": "d", "parameters": None, "strict": True, "defer_loading": True},
            "defer_loading": True,
        },
    ]
    assert seen({"messages": [{"role": "user", "content": "x"}]})[1] is None


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
        {"role": "user", "content": [{"type": "mystery", "text": "x"}]},
        {"role": "user", "content": [{"type": "text", "text": "x", "uuid": "u"}]},
        {"role": "user", "content": 7},
        {"role": 3, "content": "x"},
        {"role": "assistant", "tool_calls": [{"type": "custom", "function": {}}]},
    ],
)
def test_what_vllm_renders_otherwise_is_unrenderable(message: dict[str, Any]) -> None:
    with pytest.raises(Unrenderable):
        one(message)


def test_continue_final_message_and_request_templates_are_unrenderable() -> None:
    t = ChatTemplate(DUMP, {})
    for extra in ({"continue_final_message": True}, {"chat_template": "{{ 1 }}"}):
        with pytest.raises(Unrenderable):
            render_chat(t, {"messages": [{"role": "user", "content": "x"}], **extra})


def test_template_variables_follow_vllms_merge() -> None:
    src = "{{ add_generation_prompt }} {{ enable_thinking }} {{ custom }} {{ reasoning_effort }}"
    t = ChatTemplate(src, {})
    msgs = [{"role": "user", "content": "x"}]
    assert render_chat(t, {"messages": msgs}) == "True   "
    body = {
        "messages": msgs,
        "add_generation_prompt": False,
        "reasoning_effort": "none",
        "chat_template_kwargs": {"custom": 1},
    }
    assert render_chat(t, body) == "False False 1 none"
    assert render_chat(t, {"messages": msgs}, {"custom": "d"}) == "True  d "  # the model's default
    over = {"messages": msgs, "chat_template_kwargs": {"custom": None, "enable_thinking": True}}
    assert render_chat(t, over, {"custom": "d"}) == "True True d "  # None never overrides
    own = {"messages": msgs, "chat_template_kwargs": {"tokenize": 1}}  # apply_chat_template's own parameter
    assert render_chat(ChatTemplate("{{ tokenize }}", {}), own) == ""


def test_the_environment_is_transformers() -> None:
    src = (
        "{{ bos_token }}{% for m in messages %}\n  {% if loop.index > 1 %}{% break %}{% endif %}"
        "{% generation %}{{ m.content | tojson }}{% endgeneration %}\n{% endfor %}{{ x | tojson(indent=1) }}"
    )
    t = ChatTemplate(src, {"bos_token": "<s>"})
    out = t.render([{"content": "<é>"}, {"content": "b"}], variables={"x": {"a": 1}})
    assert out == '<s>"<é>"{\n "a": 1\n}'  # trim/lstrip blocks, no HTML escaping, ensure_ascii off
    with pytest.raises(jinja2.TemplateError, match="nope"):
        ChatTemplate("{{ raise_exception('nope') }}", {}).render([])
    assert ChatTemplate("{{ strftime_now('%Y') | length }}", {}).render([]) == "4"
    with pytest.raises(jinja2.exceptions.SecurityError):  # sandboxed: no attribute escapes
        ChatTemplate("{{ messages.__class__.__mro__ }}", {}).render([])


@pytest.mark.parametrize(
    ("source", "fmt"),
    [
        ("{% for m in messages %}{{ m.content }}{% endfor %}", "string"),
        ("{% for m in messages %}{% for p in m['content'] %}{{ p.text }}{% endfor %}{% endfor %}", "openai"),
        ("{% set ms = messages[1:] %}{% for m in ms %}{% for p in m.content %}x{% endfor %}{% endfor %}", "openai"),
        (
            "{% for m in messages %}{% set content = m.content %}{% for p in content %}x{% endfor %}{% endfor %}",
            "openai",
        ),
        (
            "{% macro r(c) %}{% for p in c %}{{ p.text }}{% endfor %}{% endmacro %}"
            "{% for m in messages %}{{ r(m.content) }}{% endfor %}",
            "openai",
        ),
        ("{% for a, b in messages %}{% for p in a.content %}x{% endfor %}{% endfor %}", "string"),
    ],
)
def test_content_format_is_detected_like_vllm(source: str, fmt: str) -> None:
    assert ChatTemplate(source, {}).content_format == fmt


def test_the_body_is_left_as_it_came() -> None:
    """Plain messages reach the template as the client's own dicts (no copy per step): nothing may change them."""
    body = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "developer", "content": "d", "tools": [1]},
            {"role": "user", "content": "u"},
            {"content": "reordered", "role": "user"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    before = json.dumps(body)
    msgs = seen(body)[0]
    assert json.dumps(body) == before
    assert list(msgs[2]) == ["role", "content"]  # vLLM's key order, whatever the client's
