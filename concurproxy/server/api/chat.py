"""OpenAI chat completions (``/v1/chat/completions``) and completions (``/v1/completions``).

Prompt: chat ``messages`` (role, content string or parts, ``tool_calls``, a tool
message's ``tool_call_id``); completions ``prompt`` (a string or a list of
strings; token-id prompts count as empty, the engine's usage settles them).
Output limit: ``max_tokens`` or ``max_completion_tokens``; a clamp writes
``max_tokens`` and drops the other. Usage: the ``usage`` object; in a stream
only when ``stream_options.include_usage`` asks for it, so the proxy asks and
strips the usage-only chunk (``"choices": []``) when the client did not. End of
stream: ``data: [DONE]``. Mid-stream error: ``data: {"error": {...}}`` then
``[DONE]`` (what vLLM sends, and what the OpenAI SDK raises on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from concurproxy.errors import ProxyError, bad_request
from concurproxy.server.api.base import ApiCodec, token_count
from concurproxy.server.api.conversation import Conversation, ToolCall, Turn, parts_text
from concurproxy.server.api.usage import Usage
from concurproxy.server.sse import SSERelay, data_of
from concurproxy.tokens import prompt_text

_USAGE_MARKERS = (b'"usage":{', b'"usage": {')
_DONE = b"data: [DONE]\n\n"


class ChatRelay(SSERelay):
    """Chat/completions chunks: ``[DONE]`` ends the stream; a usage chunk is read (and hidden when asked)."""

    __slots__ = ()

    def _keep(self, event: bytes) -> bool:
        if b"data: [DONE]" in event or b"data:[DONE]" in event:
            self.done_seen = True
            return True
        if not any(m in event for m in _USAGE_MARKERS):
            return True
        try:
            obj = orjson.loads(data_of(event))
        except orjson.JSONDecodeError:
            return True  # not ours to judge: relay as is
        if not isinstance(obj, dict):
            return True
        usage = Usage.from_obj(obj.get("usage"))
        if usage is not None:
            self.usage = usage
        return not (self.strip_usage and not obj.get("choices"))


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if not isinstance(raw, list):
        return ()
    calls = []
    for c in raw:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict):
            args = fn.get("arguments")
            calls.append(
                ToolCall(str(c.get("id") or ""), str(fn.get("name") or ""), args if isinstance(args, str) else "")
            )
    return tuple(calls)


class ChatCodec(ApiCodec):
    name = "chat"
    route = "/v1/chat/completions"

    def chat_body(self, body: dict[str, Any]) -> tuple[Mapping[str, Any], str]:
        return body, self.route  # (completions too: StepTokens reads its prompt by route)

    items_field: ClassVar[str | None] = "messages"

    def validate(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' is required and must be a non-empty list", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise bad_request(f"messages[{i}] must be an object with a string 'role'", param=f"messages[{i}]")
        self._common(body)

    @staticmethod
    def _common(body: dict[str, Any]) -> None:
        for field in ("max_tokens", "max_completion_tokens"):  # each one given, as openapi.yaml says
            value = body.get(field)
            if value is not None and not token_count(value):
                raise bad_request(f"'{field}' must be a positive integer", param=field)
        opts = body.get("stream_options")
        if opts is not None and not isinstance(opts, dict):
            raise bad_request("'stream_options' must be an object", param="stream_options")
        if opts is not None and opts.get("include_usage", False).__class__ is not bool:
            raise bad_request("'stream_options.include_usage' must be a boolean", param="stream_options.include_usage")

    def conversation(self, body: dict[str, Any]) -> Conversation:
        turns = []
        for m in body["messages"]:
            call_id = m.get("tool_call_id")
            turns.append(
                Turn(
                    m["role"],
                    parts_text(m.get("content")),
                    _tool_calls(m.get("tool_calls")),
                    call_id if isinstance(call_id, str) else None,
                )
            )
        return tuple(turns)

    def prompt_text(self, body: dict[str, Any]) -> str:
        # tokens.prompt_text renders the messages straight to text (no Turn per message): the hot
        # path's shortcut; a test checks it equals render(conversation) for every body shape.
        return prompt_text(body)

    def max_output(self, body: dict[str, Any]) -> int:
        return int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)

    def clamp_output(self, body: dict[str, Any], tokens: int) -> None:
        body["max_tokens"] = tokens
        body.pop("max_completion_tokens", None)

    def request_stream_usage(self, body: dict[str, Any]) -> bool:
        opts = body.get("stream_options") or {}
        if opts.get("include_usage"):
            return False
        body["stream_options"] = {**opts, "include_usage": True}
        return True

    def relay(self, strip_usage: bool, max_event_bytes: int) -> SSERelay:
        return ChatRelay(strip_usage, max_event_bytes)

    def usage_of(self, answer: dict[str, Any]) -> Usage | None:
        return Usage.from_obj(answer.get("usage"))

    def stream_error(self, err: ProxyError, events_sent: int) -> bytes:
        return b"data: " + orjson.dumps(err.body()) + b"\n\n" + _DONE


class CompletionsCodec(ChatCodec):
    name = "completions"
    route = "/v1/completions"
    items_field = None  # a batch of prompts is not a conversation: no turn limit (as before)

    def validate(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not prompt):
            raise bad_request("'prompt' is required: a string or a non-empty list", param="prompt")
        self._common(body)

    def conversation(self, body: dict[str, Any]) -> Conversation:
        return (Turn("", prompt_text(body)),)  # a raw prompt: one role-less turn, rendered as itself
