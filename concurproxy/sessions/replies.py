"""The reply a step produced, as the client will resend it in its next step.

A reply is a tuple of `Message` read by the same rules as the request adapters in
`conversation.py` (so ``prompt + reply`` hashes like the next step's history). Non-streamed
answers are read whole; a stream is read by a small accumulator fed the parsed JSON of each SSE
event (``feed``), then ``reply()``. Anything unexpected yields an empty reply (nothing is
remembered; the next step still continues the agent through its previous prompt).

Chat: ``choices[0].message`` (content + tool calls; ``reasoning_content`` is not resent by clients
and is left out). Messages: the answer's content blocks (text, tool_use; thinking left out).
Responses: the output items (message, function_call; reasoning left out); a stream's
``response.completed`` event carries the whole response, read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concurproxy.sessions.conversation import (
    Conversation,
    Message,
    ToolCall,
    chat_message,
    messages_turns,
    responses_item,
)

EMPTY: Conversation = ()


def reply_from_chat(answer: Mapping[str, Any]) -> Conversation:
    choices = answer.get("choices")
    if choices.__class__ is not list or not choices or choices[0].__class__ is not dict:
        return EMPTY
    msg = chat_message(choices[0].get("message"))
    return (msg,) if msg is not None else EMPTY


def reply_from_messages(answer: Mapping[str, Any]) -> Conversation:
    turns = messages_turns("assistant", answer.get("content"))
    return tuple(turns) if turns else EMPTY


def reply_from_responses(answer: Mapping[str, Any]) -> Conversation:
    output = answer.get("output")
    if output.__class__ is not list:
        return EMPTY
    return tuple(m for m in map(responses_item, output) if m is not None)


class ChatStreamReply:
    """Chat chunks: ``choices[0].delta`` content pieces and tool-call fragments by ``index``."""

    __slots__ = ("_calls", "_text")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]

    def feed(self, chunk: Any) -> None:
        choices = chunk.get("choices") if chunk.__class__ is dict else None
        if choices.__class__ is not list or not choices or choices[0].__class__ is not dict:
            return
        delta = choices[0].get("delta")
        if delta.__class__ is not dict:
            return
        piece = delta.get("content")
        if piece.__class__ is str:
            self._text.append(piece)
        calls = delta.get("tool_calls")
        for c in calls if calls.__class__ is list else ():
            index = c.get("index") if c.__class__ is dict else None
            if index.__class__ is not int:
                continue
            slot = self._calls.setdefault(index, ["", "", ""])
            if c.get("id").__class__ is str:
                slot[0] = c["id"]
            fn = c.get("function")
            if fn.__class__ is dict:
                if fn.get("name").__class__ is str:
                    slot[1] += fn["name"]
                if fn.get("arguments").__class__ is str:
                    slot[2] += fn["arguments"]

    def reply(self) -> Conversation:
        calls = tuple(ToolCall(*self._calls[i]) for i in sorted(self._calls))
        return (Message("assistant", "".join(self._text), calls),)


class MessagesStreamReply:
    """Messages events: ``content_block_start`` opens a text or tool_use block, ``content_block_delta``
    adds ``text_delta`` / ``input_json_delta`` to it; thinking blocks are skipped."""

    __slots__ = ("_blocks",)

    def __init__(self) -> None:
        self._blocks: dict[int, list[str]] = {}  # index -> [kind, id, name, text or partial JSON]

    def feed(self, event: Any) -> None:
        if event.__class__ is not dict or event.get("index").__class__ is not int:
            return
        kind, index = event.get("type"), event["index"]
        if kind == "content_block_start" and event.get("content_block").__class__ is dict:
            b = event["content_block"]
            if b.get("type") == "text":
                self._blocks[index] = ["text", "", "", b.get("text") if b.get("text").__class__ is str else ""]
            elif b.get("type") == "tool_use":
                ident, name = b.get("id"), b.get("name")
                self._blocks[index] = ["tool_use", ident if ident.__class__ is str else "", _s(name), ""]
        elif kind == "content_block_delta" and index in self._blocks and event.get("delta").__class__ is dict:
            d = event["delta"]
            piece = d.get("text") if d.get("type") == "text_delta" else d.get("partial_json")
            if piece.__class__ is str:
                self._blocks[index][3] += piece

    def reply(self) -> Conversation:
        blocks = [self._blocks[i] for i in sorted(self._blocks)]
        text = " ".join(b[3] for b in blocks if b[0] == "text")
        calls = tuple(ToolCall(b[1], b[2], b[3] or "{}") for b in blocks if b[0] == "tool_use")
        return (Message("assistant", text, calls),)


def _s(value: Any) -> str:
    return value if value.__class__ is str else ""
