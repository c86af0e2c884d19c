"""One conversation model for the three chat-like APIs (pure, no I/O).

The Responses API (input items, ``instructions``, ``previous_response_id``) and
the Anthropic Messages API (``system``, content blocks) are both turned into
the OpenAI chat ``messages`` list that ``/v1/chat/completions`` takes, and only
that list is tokenized (:func:`prompt_ids`, the chat path's own rendering). So
the same conversation sent through any of the three APIs gives the engine the
same token ids: identical KV blocks, prefix-cache hits and preemption
behaviour. This is also how vLLM serves them (``construct_input_messages`` for
Responses, ``_convert_anthropic_to_openai_request`` for Messages: both build
chat messages and apply the one chat template), and the mapping rules below
follow those two functions:

- Responses: ``instructions`` → a leading system message (never carried over
  from a previous response: its system messages are dropped); the previous
  response's conversation, then its output as an assistant message; a string
  ``input`` → one user message; ``function_call`` items join the preceding
  assistant message's ``tool_calls``; ``function_call_output`` → a ``tool``
  message; ``reasoning`` items carry no prompt text here and are skipped.
- Messages: ``system`` (string or text blocks) → one system message; text
  blocks → content parts (one part collapses to a string); ``tool_use`` →
  ``tool_calls``; a user's ``tool_result`` → a ``tool`` message placed before
  the rest of that user turn; ``thinking``/``image`` blocks carry no text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from concurproxy.tokens import render_chat, tokenize
from concurproxy.worker.codec import BadRequest

ChatMessage = dict[str, Any]

_RESPONSES_ROLES = frozenset({"user", "assistant", "system", "developer"})


def prompt_ids(messages: Sequence[ChatMessage]) -> list[int]:
    """Token ids of a chat conversation, exactly as ``/v1/chat/completions`` tokenizes it."""
    return tokenize(render_chat(messages))


def _text_parts(content: Any, param: str) -> str | list[dict[str, Any]]:
    """Responses/Anthropic content (a string or a list of typed parts) as chat content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest("'content' must be a string or a list of content parts", param)
    parts = []
    for p in content:
        if not isinstance(p, Mapping):
            raise BadRequest("each content part must be an object", param)
        text = p.get("text")
        if isinstance(text, str):  # input_text / output_text / text; images etc. carry no prompt text
            parts.append({"type": "text", "text": text})
    return parts[0]["text"] if len(parts) == 1 else parts


def _copy(m: ChatMessage) -> ChatMessage:
    return {**m, "tool_calls": list(m["tool_calls"])} if "tool_calls" in m else dict(m)


def _last_assistant(messages: list[ChatMessage]) -> ChatMessage | None:
    return messages[-1] if messages and messages[-1].get("role") == "assistant" else None


def _tool_call(call_id: Any, name: Any, arguments: str) -> dict[str, Any]:
    return {"id": str(call_id or ""), "type": "function", "function": {"name": str(name or ""), "arguments": arguments}}


def responses_messages(
    instructions: str | None, input_: Any, previous: Sequence[ChatMessage] = ()
) -> list[ChatMessage]:
    """Chat messages of a Responses request; ``previous`` is the stored conversation (incl. its output)."""
    out: list[ChatMessage] = []
    if instructions:
        out.append({"role": "system", "content": instructions})
    # copies: a function_call below may extend the last stored message's tool_calls
    out.extend(_copy(m) for m in previous if m.get("role") != "system")
    if isinstance(input_, str):
        out.append({"role": "user", "content": input_})
        return out
    if not isinstance(input_, list):
        raise BadRequest("'input' must be a string or a list of input items", "input")
    for item in input_:
        if not isinstance(item, Mapping):
            raise BadRequest("each input item must be an object", "input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _RESPONSES_ROLES:
                raise BadRequest(f"unsupported input message role {role!r}", "input")
            content = _text_parts(item.get("content", ""), "input")
            prev = _last_assistant(out) if role == "assistant" else None
            if prev is not None and prev.get("content") is None:
                prev["content"] = content  # text after a function call of the same turn (vLLM merges them)
            else:
                out.append({"role": role, "content": content})
        elif kind == "function_call":
            args = item.get("arguments", "")
            call = _tool_call(item.get("call_id"), item.get("name"), args if isinstance(args, str) else "")
            prev = _last_assistant(out)
            if prev is not None:
                prev.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            content = output if isinstance(output, str) else _text_parts(output, "input")
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": content})
        elif kind == "reasoning":
            continue
        else:
            raise BadRequest(f"unsupported input item type {kind!r}", "input")
    return out


def _system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise BadRequest("'system' must be a string or a list of text blocks", "system")
    return "".join(b["text"] for b in system if isinstance(b, Mapping) and isinstance(b.get("text"), str))


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b["text"] for b in content if isinstance(b, Mapping) and isinstance(b.get("text"), str))
    return ""


def anthropic_messages(system: Any, messages: Any) -> list[ChatMessage]:
    """Chat messages of an Anthropic Messages request (``system`` + ``messages``)."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: field required (a non-empty list)", "messages")
    sys_parts = [_system_text(system)]
    out: list[ChatMessage] = []
    for m in messages:
        if not isinstance(m, Mapping) or m.get("role") not in ("user", "assistant", "system"):
            raise BadRequest("each message must be an object with role 'user' or 'assistant'", "messages")
        role, content = m["role"], m.get("content")
        if role == "system":  # tolerated like vLLM: folded into the one system message
            sys_parts.append(_system_text(content))
            continue
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise BadRequest("message content must be a string or a list of content blocks", "messages")
        texts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for b in content:
            if not isinstance(b, Mapping):
                raise BadRequest("each content block must be an object", "messages")
            kind = b.get("type")
            if kind == "text" and isinstance(b.get("text"), str) and b["text"]:
                texts.append({"type": "text", "text": b["text"]})
            elif kind == "tool_use":
                args = orjson.dumps(b.get("input") or {}).decode()
                calls.append(_tool_call(b.get("id"), b.get("name"), args))
            elif kind == "tool_result" and role == "user":
                tool_text = _tool_result_text(b.get("content"))
                out.append({"role": "tool", "tool_call_id": str(b.get("tool_use_id") or ""), "content": tool_text})
            elif kind == "tool_result":
                texts.append({"type": "text", "text": f"Tool result: {_tool_result_text(b.get('content'))}"})
        msg: ChatMessage = {"role": role}
        if calls:
            msg["tool_calls"] = calls
        if texts:
            msg["content"] = texts[0]["text"] if len(texts) == 1 else texts
        if role == "user" and "content" not in msg:
            continue  # a turn of tool results only
        out.append(msg)
    system_text = "".join(sys_parts)
    return ([{"role": "system", "content": system_text}] if system_text else []) + out
