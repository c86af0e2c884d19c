"""The conversation a step carries, as session inference reads it, and adapters from request bodies.

`Message` has the fields of the API codecs' ``Turn`` (``concurproxy.server.api.conversation``,
branch h-codecs) in the same order: role, text, tool calls, and for a tool result the call it
answers. The fingerprints read only these attributes (the `TurnLike` protocol), so a codec's
conversation can be passed as it is. What matters is that a step's messages and the reply
remembered at its end are read by the same rules, so that the next step's resent history hashes
like the remembered one: the adapters here and in `replies.py` follow the codecs' rules.

Adapters never raise: a body that is not the API's shape gives ``None`` (the step is then its own
one-step agent and is served as usual). Content parts that carry no text (images, audio, files,
unknown types) add nothing, as in the codecs' view; thinking blocks add nothing either (clients
drop or keep them between steps, so they must not decide identity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import orjson


class ToolCallLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def arguments(self) -> Any: ...  # JSON text (or a JSON value: serialised canonically either way)


class TurnLike(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def tool_calls(self) -> Sequence[ToolCallLike]: ...
    @property
    def tool_call_id(self) -> str | None: ...


class ToolCall(NamedTuple):
    id: str
    name: str
    arguments: str


class Message(NamedTuple):
    role: str
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


Conversation = tuple[Message, ...]
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
BILLING_HEADER = "x-anthropic-billing-header"  # Claude Code's per-request system line (its hash changes)
_NEW = tuple.__new__


def _str(value: Any) -> str:
    return value if value.__class__ is str else ""


def text_of(content: Any) -> str:
    """A string, or the text parts of a list joined with a space (as the codecs join them)."""
    if content.__class__ is str:
        return content
    if content.__class__ is list:
        return " ".join(
            p["text"] for p in content if p.__class__ is dict and p.get("type", "text") in TEXT_PARTS and _is_text(p)
        )
    return ""


def _is_text(part: dict[str, Any]) -> bool:
    return part.get("text").__class__ is str


def _json_text(value: Any) -> str:
    if value.__class__ is str:
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # (orjson.JSONEncodeError) not a JSON value: never the case for a parsed body
        return ""


def _chat_calls(calls: Any) -> tuple[ToolCall, ...]:
    if calls.__class__ is not list:
        return ()
    out = []
    for c in calls:
        fn = c.get("function") if c.__class__ is dict else None
        if fn.__class__ is dict:
            out.append(ToolCall(_str(c.get("id")), _str(fn.get("name")), _json_text(fn.get("arguments", ""))))
    return tuple(out)


def chat_message(m: Any) -> Message | None:
    """One /v1/chat/completions message (request history or the answer's ``message``)."""
    if m.__class__ is not dict:
        return None
    role, content = m.get("role"), m.get("content")
    if role.__class__ is not str:
        return None
    calls, call_id = m.get("tool_calls"), m.get("tool_call_id")
    # tuple.__new__: half the cost of Message(...) on the hot path (one per message per step)
    return _NEW(
        Message,
        (
            role,
            content if content.__class__ is str else text_of(content),
            _chat_calls(calls) if calls else (),
            call_id if call_id.__class__ is str else None,
        ),
    )


def _opt(value: Any) -> str | None:
    return value if value.__class__ is str else None


def from_chat(body: Mapping[str, Any]) -> Conversation | None:
    """``messages`` of a chat body; None when it is not a list of objects with a string role."""
    messages = body.get("messages")
    if messages.__class__ is not list or not messages:
        return None
    out = []
    for m in messages:
        msg = chat_message(m)
        if msg is None:
            return None
        out.append(msg)
    return tuple(out)


def messages_turns(role: str, content: Any) -> list[Message] | None:
    """One Anthropic message: ``tool_result`` blocks become tool turns placed first (as vLLM converts
    them), ``text`` blocks the turn's text, ``tool_use`` blocks its tool calls."""
    if content.__class__ is str:
        return [Message(role, content)]
    if content.__class__ is not list:
        return None
    out: list[Message] = []
    texts, calls = [], []
    for b in content:
        kind = b.get("type") if b.__class__ is dict else None
        if kind == "text" and _is_text(b):
            texts.append(b["text"])
        elif kind == "tool_use":
            calls.append(ToolCall(_str(b.get("id")), _str(b.get("name")), _json_text(b.get("input", {}))))
        elif kind == "tool_result":
            out.append(Message("tool", text_of(b.get("content")), (), _opt(b.get("tool_use_id"))))
    if texts or calls or not out:
        out.append(Message(role, " ".join(texts), tuple(calls)))
    return out


def from_messages(body: Mapping[str, Any]) -> Conversation | None:
    """``system`` + ``messages`` of an Anthropic Messages body."""
    messages = body.get("messages")
    if messages.__class__ is not list or not messages:
        return None
    system = body.get("system")
    if system.__class__ is list:  # Claude Code sends its billing line as a block of its own
        system = [b for b in system if not (b.__class__ is dict and _str(b.get("text")).startswith(BILLING_HEADER))]
    out = [Message("system", text_of(system))] if system else []
    for m in messages:
        role = m.get("role") if m.__class__ is dict else None
        turns = messages_turns(role, m.get("content")) if role.__class__ is str else None
        if turns is None:
            return None
        out += turns
    return tuple(out)


def responses_item(item: Any) -> Message | None:
    """One Responses input/output item; None for items that carry no turn (reasoning, references)."""
    if item.__class__ is not dict:
        return None
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        return Message(role if role.__class__ is str else "user", text_of(item.get("content")))
    if kind == "function_call":
        call = ToolCall(_str(item.get("call_id")), _str(item.get("name")), _json_text(item.get("arguments", "")))
        return Message("assistant", "", (call,))
    if kind == "function_call_output":
        return Message("tool", _json_text(item.get("output", "")), (), _opt(item.get("call_id")))
    return None


def from_responses(body: Mapping[str, Any]) -> Conversation | None:
    """``instructions`` + ``input`` of a Responses body."""
    items = body.get("input")
    instructions = body.get("instructions")
    out = [Message("system", instructions)] if instructions.__class__ is str and instructions else []
    if items.__class__ is str:
        return (*out, Message("user", items))
    if items.__class__ is not list or not items:
        return None
    out += [m for m in map(responses_item, items) if m is not None]
    return tuple(out)
