"""The chat/completions codec: parse OpenAI request bodies, write OpenAI-shaped answers (pure, no I/O)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from concurproxy.tokens import prompt_text, tokenize
from concurproxy.worker.codec import (
    BadRequest,
    Generation,
    opt_bool,
    opt_int,
    priority,
    require_object,
    sse,
)
from concurproxy.worker.engine import RequestOutput

__all__ = ["BadRequest", "ChatCodec", "ChatExchange", "error_body", "parse_request", "usage"]


def error_body(
    message: str, status: int, param: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def openai_error(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope (chat, completions and Responses share it, as in vLLM)."""
    return error_body(message, status, param, "invalid_request_error" if status < 500 else "internal_error")


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    chat: bool
    gen: Generation
    include_usage: bool
    model: str | None


def parse_request(body: Any, chat: bool) -> ParsedRequest:
    body = require_object(body)
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' is required and must be a non-empty list", "messages")
        if not all(isinstance(m, Mapping) for m in messages):
            raise BadRequest("each message must be an object", "messages")
        prompt_ids = tokenize(prompt_text(body))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            prompt_ids = list(prompt)  # token ids, as vLLM accepts
        elif isinstance(prompt, str) or (
            isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
        ):
            prompt_ids = tokenize(prompt_text(body))
        else:
            raise BadRequest("'prompt' is required: a string, a list of strings or a list of token ids", "prompt")
    if not prompt_ids:
        raise BadRequest("the prompt is empty", "messages" if chat else "prompt")
    n = body.get("n", 1)
    if n not in (1, None):
        raise BadRequest("only n=1 is supported", "n")
    max_tokens = opt_int(body, "max_completion_tokens") if chat else None
    if max_tokens is None:
        max_tokens = opt_int(body, "max_tokens")
    stream = opt_bool(body, "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, Mapping):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    model = body.get("model")
    gen = Generation(prompt_ids, max_tokens, stream, opt_bool(body, "ignore_eos"), priority(body))
    return ParsedRequest(chat, gen, bool(opts and opts.get("include_usage")), model if isinstance(model, str) else None)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def _usage_of(out: RequestOutput) -> dict[str, Any]:
    return usage(out.prompt_tokens, out.output_tokens, out.cached_tokens)


@dataclass(slots=True)
class ChatExchange:
    """One chat or completions request. Streams ``data:`` chunks ending in ``data: [DONE]``."""

    parsed: ParsedRequest
    model: str
    req_id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.req_id = f"{'chatcmpl' if self.parsed.chat else 'cmpl'}-{uuid.uuid4().hex}"

    @property
    def gen(self) -> Generation:
        return self.parsed.gen

    def _chunk(self, text: str | None, finish_reason: str | None, first: bool = False) -> bytes:
        if self.parsed.chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        out = {"id": self.req_id, "object": self._object(True), "created": self.created, "model": self.model}
        out["choices"] = [choice]
        if self.parsed.include_usage:
            out["usage"] = None
        return sse(out)

    def _object(self, chunk: bool) -> str:
        if not self.parsed.chat:
            return "text_completion"
        return "chat.completion.chunk" if chunk else "chat.completion"

    def opening(self) -> bytes:
        return b""

    def first(self, out: RequestOutput) -> bytes:
        # as vLLM: the role chunk goes out with the first engine output, not on arrival,
        # so a client's (and the proxy's) time to the first event is the engine's TTFT
        return self._chunk("", None, first=True) if self.parsed.chat else b""

    def delta(self, text: str) -> bytes:
        return self._chunk(text, None)

    def closing(self, last: RequestOutput, text: str) -> bytes:
        frames = self._chunk(None if self.parsed.chat else "", last.finish_reason)
        if self.parsed.include_usage:
            head = {"id": self.req_id, "object": self._object(True), "created": self.created, "model": self.model}
            frames += sse({**head, "choices": [], "usage": _usage_of(last)})
        return frames + b"data: [DONE]\n\n"

    def body(self, last: RequestOutput, text: str) -> dict[str, Any]:
        if self.parsed.chat:
            msg = {"role": "assistant", "content": text}
            choice: dict[str, Any] = {"index": 0, "message": msg, "logprobs": None, "finish_reason": last.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason}
        return {
            "id": self.req_id,
            "object": self._object(False),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": _usage_of(last),
        }


@dataclass(frozen=True, slots=True)
class ChatCodec:
    """``/v1/chat/completions`` (``chat=True``) or ``/v1/completions``."""

    model: str
    chat: bool

    def parse(self, body: Any) -> ChatExchange:
        return ChatExchange(parse_request(body, self.chat), self.model)

    def error(self, message: str, status: int, param: str | None = None) -> dict[str, Any]:
        return openai_error(message, status, param)
