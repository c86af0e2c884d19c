"""The OpenAI Responses API codec (``POST /v1/responses``), shaped as vLLM serves it (pure, no I/O).

Request: ``input`` (a string or input items), ``instructions``,
``max_output_tokens``, ``previous_response_id``, ``store`` (default true),
``stream``, and vLLM's ``ignore_eos`` / ``priority``. The conversation becomes
chat messages (:mod:`concurproxy.worker.conversation`), so its tokens equal
the chat path's for the same conversation.

Answer: a Response object with ``usage`` {input_tokens,
input_tokens_details.cached_tokens, output_tokens, total_tokens}. As in vLLM,
a reply cut by ``max_output_tokens`` has status ``incomplete`` (with
``incomplete_details.reason``) and the stream still ends with
``response.completed`` carrying it. Streamed events, each named and numbered
(``sequence_number`` from 0): ``response.created`` and
``response.in_progress`` at once; with the first generated text
``response.output_item.added`` and ``response.content_part.added``; then
``response.output_text.delta`` per piece; ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``,
``response.completed``. Time to the first delta is the engine's TTFT.
Errors use the OpenAI envelope; an unknown ``previous_response_id`` is a 404.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from concurproxy.worker.codec import BadRequest, Generation, opt_bool, opt_int, priority, require_object, sse
from concurproxy.worker.conversation import ChatMessage, prompt_ids, responses_messages
from concurproxy.worker.engine import RequestOutput
from concurproxy.worker.openai_io import openai_error
from concurproxy.worker.responses_store import ResponseStore, StoredResponse

# a finish reason → the Response status (vLLM: "length" is incomplete, everything else completed)
_STATUS = {"length": "incomplete", "abort": "failed"}
_ABORTED = {"code": "server_error", "message": "the engine aborted the request"}


def not_found(resp_id: str, param: str) -> BadRequest:
    return BadRequest(f"Response with id '{resp_id}' not found.", param, 404)


@dataclass(slots=True)
class ResponsesExchange:
    gen: Generation
    model: str
    request: Mapping[str, Any]
    conversation: list[ChatMessage]
    store: ResponseStore | None  # None: store=false
    req_id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    item_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    seq: int = 0
    opened: bool = False

    def _event(self, type_: str, **fields: Any) -> bytes:
        obj = {"type": type_, **fields, "sequence_number": self.seq}
        self.seq += 1
        return sse(obj, type_)

    def _message(self, text: str, status: str) -> dict[str, Any]:
        content = [_output_text(text)] if text else []
        return {"id": self.item_id, "type": "message", "role": "assistant", "status": status, "content": content}

    def _response(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None, finish: str | None = None
    ) -> dict[str, Any]:
        r = self.request
        return {
            "id": self.req_id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "error": _ABORTED if finish == "abort" else None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": r.get("instructions"),
            "max_output_tokens": self.gen.max_tokens,
            "metadata": r.get("metadata") or {},
            "model": self.model,
            "output": output,
            "parallel_tool_calls": r.get("parallel_tool_calls", True),
            "previous_response_id": r.get("previous_response_id"),
            "store": self.store is not None,
            "temperature": r.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": r.get("tool_choice", "auto"),
            "tools": r.get("tools") or [],
            "top_p": r.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": r.get("user"),
        }

    def opening(self) -> bytes:
        pending = self._response("in_progress", [], None)
        return self._event("response.created", response=pending) + self._event("response.in_progress", response=pending)

    def first(self, out: RequestOutput) -> bytes:
        return b""  # as vLLM: the output item opens with the first piece of text

    def delta(self, text: str) -> bytes:
        head = b""
        if not self.opened:
            self.opened = True
            loc = {"output_index": 0, "item_id": self.item_id, "content_index": 0}
            head = self._event("response.output_item.added", output_index=0, item=self._message("", "in_progress"))
            head += self._event("response.content_part.added", **loc, part=_output_text(""))
        return head + self._event(
            "response.output_text.delta", output_index=0, item_id=self.item_id, content_index=0, delta=text, logprobs=[]
        )

    def closing(self, last: RequestOutput, text: str) -> bytes:
        frames = b""
        if self.opened:
            loc = {"output_index": 0, "item_id": self.item_id, "content_index": 0}
            frames += self._event("response.output_text.done", **loc, text=text, logprobs=[])
            frames += self._event("response.content_part.done", **loc, part=_output_text(text))
            frames += self._event("response.output_item.done", output_index=0, item=self._message(text, "completed"))
        return frames + self._event("response.completed", response=self.body(last, text))

    def body(self, last: RequestOutput, text: str) -> dict[str, Any]:
        usage = {
            "input_tokens": last.prompt_tokens,
            "input_tokens_details": {"cached_tokens": last.cached_tokens},
            "output_tokens": last.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": last.prompt_tokens + last.output_tokens,
        }
        status = _STATUS.get(last.finish_reason or "", "completed")
        output = [self._message(text, "completed")] if text else []
        resp = self._response(status, output, usage, last.finish_reason)
        if self.store is not None:
            reply = [{"role": "assistant", "content": text}] if text else []
            self.store.put(self.req_id, StoredResponse(resp, self.conversation + reply, self.req_id))
        return resp


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


@dataclass(frozen=True, slots=True)
class ResponsesCodec:
    model: str
    store: ResponseStore

    def parse(self, body: Any) -> ResponsesExchange:
        body = require_object(body)
        input_ = body.get("input")
        if input_ is None:
            raise BadRequest("'input' is required: a string or a list of input items", "input")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise BadRequest("'instructions' must be a string", "instructions")
        if opt_bool(body, "background"):
            raise BadRequest("background responses are not supported", "background")
        previous: list[ChatMessage] = []
        prev_id = body.get("previous_response_id")
        if prev_id is not None:
            if not isinstance(prev_id, str):
                raise BadRequest("'previous_response_id' must be a string", "previous_response_id")
            stored = self.store.get(prev_id)
            if stored is None:
                raise not_found(prev_id, "previous_response_id")
            previous = stored.conversation
        conversation = responses_messages(instructions, input_, previous)
        ids = prompt_ids(conversation)
        if not ids:
            raise BadRequest("the prompt is empty", "input")
        max_tokens = opt_int(body, "max_output_tokens")
        gen = Generation(ids, max_tokens, opt_bool(body, "stream"), opt_bool(body, "ignore_eos"), priority(body))
        store = self.store if opt_bool(body, "store", default=True) else None
        return ResponsesExchange(gen, self.model, body, conversation, store)

    def error(self, message: str, status: int, param: str | None = None) -> dict[str, Any]:
        return openai_error(message, status, param)
