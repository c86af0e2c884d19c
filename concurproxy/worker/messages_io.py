"""The Anthropic Messages API codec (``POST /v1/messages``), shaped as vLLM serves it (pure, no I/O).

Request: ``model``, ``messages`` (content a string or blocks: text, tool_use,
tool_result), ``system`` (a string or text blocks), ``max_tokens``
(required), ``stream``, and vLLM's ``ignore_eos`` / ``priority``. The
conversation becomes chat messages (:mod:`concurproxy.worker.conversation`),
so its tokens equal the chat path's for the same conversation.

Usage follows Anthropic's contract (and vLLM's since it reports cache use):
``input_tokens`` are the prompt tokens *not* read from the cache,
``cache_read_input_tokens`` the prefix-cache hit, ``cache_creation_input_tokens``
0 (the engine has no separate cache write), so the whole prompt is their sum.
Streamed events, each named (the SDK ignores unnamed ones): ``message_start``
(with ``message.usage``) goes out with the engine's first output, as vLLM does;
``content_block_start`` with the first text, ``content_block_delta``
(``text_delta``) per piece, ``content_block_stop``, ``message_delta``
(``stop_reason`` and cumulative ``usage``), ``message_stop``. Errors:
``{"type": "error", "error": {"type": "invalid_request_error", "message": …}}``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from concurproxy.worker.codec import BadRequest, Generation, opt_bool, opt_int, priority, require_object, sse
from concurproxy.worker.conversation import anthropic_messages, prompt_ids
from concurproxy.worker.engine import RequestOutput

_STOP_REASON = {"stop": "end_turn", "length": "max_tokens"}
_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def anthropic_error(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    type_ = _ERROR_TYPE.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": type_, "message": message}}


def _usage(out: RequestOutput, final: bool = True) -> dict[str, Any]:
    return {
        "input_tokens": out.prompt_tokens - out.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": out.cached_tokens,
        "output_tokens": out.output_tokens if final else 0,
    }


@dataclass(slots=True)
class MessagesExchange:
    gen: Generation
    model: str
    req_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    opened: bool = False

    def _message(self, content: list[dict[str, Any]], stop: str | None, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.req_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    def opening(self) -> bytes:
        return b""

    def first(self, out: RequestOutput) -> bytes:
        start = {"type": "message_start", "message": self._message([], None, _usage(out, final=False))}
        return sse(start, "message_start")

    def delta(self, text: str) -> bytes:
        head = b""
        if not self.opened:
            self.opened = True
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            head = sse(block, "content_block_start")
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        return head + sse(delta, "content_block_delta")

    def closing(self, last: RequestOutput, text: str) -> bytes:
        frames = sse({"type": "content_block_stop", "index": 0}, "content_block_stop") if self.opened else b""
        stop = {"stop_reason": _STOP_REASON.get(last.finish_reason or ""), "stop_sequence": None}
        frames += sse({"type": "message_delta", "delta": stop, "usage": _usage(last)}, "message_delta")
        return frames + sse({"type": "message_stop"}, "message_stop")

    def body(self, last: RequestOutput, text: str) -> dict[str, Any]:
        content = [{"type": "text", "text": text}] if text else []
        return self._message(content, _STOP_REASON.get(last.finish_reason or ""), _usage(last))


def conversation_ids(body: Any) -> list[int]:
    """Prompt token ids of a Messages (or count_tokens) body."""
    body = require_object(body)
    ids = prompt_ids(anthropic_messages(body.get("system"), body.get("messages")))
    if not ids:
        raise BadRequest("the prompt is empty", "messages")
    return ids


@dataclass(frozen=True, slots=True)
class MessagesCodec:
    model: str

    def parse(self, body: Any) -> MessagesExchange:
        body = require_object(body)
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise BadRequest("model: field required", "model")
        max_tokens = opt_int(body, "max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: field required", "max_tokens")
        ids = conversation_ids(body)
        gen = Generation(ids, max_tokens, opt_bool(body, "stream"), opt_bool(body, "ignore_eos"), priority(body))
        return MessagesExchange(gen, self.model)

    def error(self, message: str, status: int, param: str | None = None) -> dict[str, Any]:
        return anthropic_error(message, status, param)
