"""Chat templates and conversations the tokenizer tier renders both in the proxy and in vLLM."""

from __future__ import annotations

from typing import Any

# Hermes/Qwen-style tool calling over the tiny model's ChatML specials: a BOS written by the template
# (so vLLM must not add another), tools and tool-call arguments through tojson, tool results as user
# turns, loop controls, raise_exception on an unknown role, trim_blocks/lstrip_blocks whitespace.
TOOL_TEMPLATE = """{{- bos_token }}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] + '\\n\\n' }}
    {%- endif %}
    {{- '# Tools\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}{% continue %}{% endif %}
    {%- if message.role not in ['system', 'user', 'assistant', 'tool'] %}
        {{- raise_exception('unknown role ' + message.role) }}
    {%- endif %}
    {%- if message.role == 'assistant' %}
        {{- '<|im_start|>assistant\\n' + (message.content or '') }}
        {%- for tc in message.tool_calls or [] %}
            {{- '\\n<tool_call>\\n{"name": "' + tc.function.name + '", "arguments": ' }}
            {{- tc.function.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + ('(' + message.name + ')' if message.name else '') + '\\n' }}
        {{- message.content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Iterates over content parts: vLLM detects the "openai" content format and passes lists of parts.
OPENAI_TEMPLATE = """{% for message in messages %}<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}
{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city — in °C",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
]

SYSTEM = "You are a careful agent. Use tools when they help; answer in one sentence."


def _call(i: str, name: str, args: str) -> dict[str, Any]:
    return {"id": i, "type": "function", "function": {"name": name, "arguments": args}}


CONVERSATIONS: dict[str, dict[str, Any]] = {
    "system+user": {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi there."}]},
    "multi-turn": {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one, please.\n\nThanks!"},
        ]
    },
    "tool call": {
        "tools": TOOLS,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [_call("c1", "get_weather", '{"city": "Paris"}')]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21, "unit": "°C"}'},
            {"role": "assistant", "content": "It is 21 °C."},
            {"role": "user", "content": "And now?"},
        ],
    },
    "parallel calls": {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Time, and weather in Zürich and 東京?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    _call("a", "get_weather", '{"city": "Zürich", "nested": {"x": [1, 2.5, null]}}'),
                    _call("b", "get_weather", '{"city": "東京"}'),
                    _call("c", "now", ""),
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "12"},
            {
                "role": "tool",
                "tool_call_id": "b",
                "content": [{"type": "text", "text": "18"}, {"type": "text", "text": "sunny"}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "09:30"},
        ],
    },
    "unicode": {
        "messages": [
            {"role": "user", "content": "naïve café — 日本語のテキスト 🙂👍🏽 e\u0301 tab\there\r\nwindows line"},
            {"role": "assistant", "content": "ok ✓"},
            {"role": "user", "content": "  leading and trailing spaces  "},
        ]
    },
    "content parts": {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
        ]
    },
    "named user": {"messages": [{"role": "user", "name": "alice", "content": "Hello from Alice."}]},
    "developer": {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Why is the sky blue?"},
        ]
    },
}


def agent_step(
    agent: int, reply: str | None, step: int, history: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Agent ``agent``'s messages for ``step``: its history, the engine's ``reply`` as a tool-calling
    assistant turn, and a tool result (even steps) or a user turn (odd steps), as an agent loop resends them."""
    if history is None:
        task = f"Task {agent}: " + " ".join(f"item-{agent}-{i} costs {i * 7 % 13} euros" for i in range(6))
        return [{"role": "system", "content": SYSTEM * 2}, {"role": "user", "content": task}]
    call = _call(f"call-{agent}-{step}", "get_weather", f'{{"city": "city {agent}.{step}"}}')
    out = [*history, {"role": "assistant", "content": reply or "", "tool_calls": [call]}]
    if step % 2:
        out.append({"role": "tool", "tool_call_id": call["id"], "content": f"result {step}: " + "fine " * 6})
    else:
        out.append({"role": "user", "content": f"step {step}: continue with the next items " + "please " * 4})
    return out
