"""Anthropic Messages (``POST /v1/messages``), as vLLM and Anthropic serve it.

Prompt: ``system`` (a string or text blocks: one system turn) then
``messages``: each a ``role`` with ``content`` as a string or blocks: ``text``
blocks make the turn's text, ``tool_use`` blocks its tool calls (``input``
serialized as JSON), and each ``tool_result`` block a tool turn answering
``tool_use_id`` (placed before the rest of its message, as vLLM converts it).
Output limit: ``max_tokens`` (required by the API). Usage: ``usage`` with
``input_tokens`` (+ ``cache_read_input_tokens`` and
``cache_creation_input_tokens``, which Anthropic counts apart) and
``output_tokens``; in a stream ``message_start.message.usage`` gives the
input and ``message_delta.usage`` the final (cumulative) output. End of stream:
``message_stop``. Mid-stream error: ``event: error`` with
``{"type": "error", "error": {"type", "message"}}``, then the stream ends.
Errors that are not streams use Anthropic's shape too (`shapes.py`). Events
must carry their ``event:`` line: the Anthropic SDK skips events without one.
"""

from __future__ import annotations

from typing import Any

import orjson

from concurproxy.errors import ProxyError, bad_request
from concurproxy.server.api.base import ApiCodec, positive_int
from concurproxy.server.api.conversation import Conversation, ToolCall, Turn, parts_text, text_of
from concurproxy.server.api.shapes import ANTHROPIC, anthropic_body
from concurproxy.server.api.usage import Usage
from concurproxy.server.sse import SSERelay, data_of

_CACHE_INPUT = ("cache_read_input_tokens", "cache_creation_input_tokens")


class MessagesRelay(SSERelay):
    """``message_start`` / ``message_delta`` carry usage; ``message_stop`` ends the stream."""

    __slots__ = ()

    FAST_A = b'"usage":'
    FAST_B = b"message_stop"

    def _keep(self, event: bytes) -> bool:
        try:
            obj = orjson.loads(data_of(event))
        except orjson.JSONDecodeError:
            return True
        if obj.__class__ is not dict:
            return True
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            self.usage = Usage.from_io(obj["message"].get("usage"), extra_input=_CACHE_INPUT) or self.usage
        elif kind == "message_delta":
            delta = Usage.from_io(obj.get("usage"), extra_input=_CACHE_INPUT)
            if delta is not None:
                # output_tokens is cumulative; input_tokens only when the server repeats it here
                start = self.usage or Usage()
                prompt = delta.prompt_tokens or start.prompt_tokens
                self.usage = Usage(prompt, delta.completion_tokens, start.cached_tokens)
        elif kind == "message_stop":
            self.done_seen = True
        return True


class MessagesCodec(ApiCodec):
    name = "messages"
    route = "/v1/messages"
    error_shape = ANTHROPIC
    items_field = "messages"

    def validate(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("messages: field required (a non-empty list)", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise bad_request(f"messages.{i}: must be an object with a string 'role'", param=f"messages.{i}")
            if not isinstance(m.get("content"), str | list):
                raise bad_request(f"messages.{i}.content: a string or a list of blocks", param=f"messages.{i}")
        if body.get("max_tokens") is None:
            raise bad_request("max_tokens: field required", param="max_tokens")
        positive_int(body, "max_tokens")
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            raise bad_request("system: a string or a list of text blocks", param="system")

    def conversation(self, body: dict[str, Any]) -> Conversation:
        turns: list[Turn] = []
        system = body.get("system")
        if system:
            turns.append(Turn("system", parts_text(system, "")))
        for m in body["messages"]:
            content = m["content"]
            if isinstance(content, str):
                turns.append(Turn(m["role"], content))
                continue
            texts, calls = [], []
            for block in content:
                if not isinstance(block, dict):
                    continue
                kind = block.get("type")
                if kind == "text" and isinstance(block.get("text"), str):
                    texts.append(block["text"])
                elif kind == "tool_use":
                    args = orjson.dumps(block.get("input") or {}).decode()
                    calls.append(ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), args))
                elif kind == "tool_result":
                    call_id = block.get("tool_use_id")
                    turns.append(
                        Turn("tool", text_of(block.get("content")), (), call_id if isinstance(call_id, str) else None)
                    )
            if texts or calls:
                turns.append(Turn(m["role"], " ".join(texts), tuple(calls)))
        return tuple(turns)

    def max_output(self, body: dict[str, Any]) -> int:
        return body["max_tokens"]  # type: ignore[no-any-return]

    def clamp_output(self, body: dict[str, Any], tokens: int) -> None:
        body["max_tokens"] = tokens

    def relay(self, strip_usage: bool, max_event_bytes: int) -> SSERelay:
        return MessagesRelay(strip_usage, max_event_bytes)

    def usage_of(self, answer: dict[str, Any]) -> Usage | None:
        return Usage.from_io(answer.get("usage"), extra_input=_CACHE_INPUT)

    def stream_error(self, err: ProxyError, events_sent: int) -> bytes:
        return b"event: error\ndata: " + orjson.dumps(anthropic_body(err)) + b"\n\n"
