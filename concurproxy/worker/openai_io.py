"""Parse OpenAI request bodies and build OpenAI-shaped responses (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from concurproxy.tokens import prompt_text, tokenize


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def error_body(
    message: str, status: int, param: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    chat: bool
    prompt_ids: list[int]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    ignore_eos: bool
    model: str | None
    priority: int = 0  # vLLM's extra parameter: lower = scheduled earlier (needs the priority policy)


def _opt_int(body: Mapping[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"'{key}' must be an integer", key)
    if v < 1:
        raise BadRequest(f"'{key}' must be at least 1", key)
    return v


def _opt_bool(body: Mapping[str, Any], key: str) -> bool:
    v = body.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise BadRequest(f"'{key}' must be a boolean", key)
    return v


def parse_request(body: Any, chat: bool) -> ParsedRequest:
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
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
    max_tokens = _opt_int(body, "max_completion_tokens") if chat else None
    if max_tokens is None:
        max_tokens = _opt_int(body, "max_tokens")
    stream = _opt_bool(body, "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, Mapping):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    include_usage = bool(opts and opts.get("include_usage"))
    model = body.get("model")
    priority = body.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise BadRequest("'priority' must be an integer", "priority")
    return ParsedRequest(
        chat=chat,
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        stream=stream,
        include_usage=include_usage,
        ignore_eos=_opt_bool(body, "ignore_eos"),
        model=model if isinstance(model, str) else None,
        priority=priority,
    )


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def chunk(
    req_id: str,
    created: int,
    model: str,
    chat: bool,
    text: str | None,
    finish_reason: str | None,
    first: bool = False,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    if chat:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    out: dict[str, Any] = {
        "id": req_id,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if with_usage_field:
        out["usage"] = None
    return out


def usage_chunk(req_id: str, created: int, model: str, chat: bool, usage_obj: dict[str, Any]) -> dict[str, Any]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    return {
        "id": req_id,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_obj,
    }


def completion(
    req_id: str,
    created: int,
    model: str,
    chat: bool,
    text: str,
    finish_reason: str | None,
    usage_obj: dict[str, Any],
) -> dict[str, Any]:
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {
        "id": req_id,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_obj,
    }
