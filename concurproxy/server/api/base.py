"""What the step pipeline needs to know about one generation API, behind one small class.

A codec reads a request body (validation, prompt, output limit, streaming),
writes the few edits the proxy makes (a clamped output limit, asking a stream
for its usage), reads usage from an answer or a stream, and writes an error in
the API's own shape. The pipeline (`concurproxy.server.pipeline`) calls only
these members, so admission, budgets, fairness, routing, metrics, traces and
logs apply to every API the same way. One subclass per API: `chat.ChatCodec`,
`chat.CompletionsCodec`, `responses.ResponsesCodec`, `messages.MessagesCodec`.

Codecs hold no state: one instance per API serves every step. They never see
the network; the relay they make (``relay``) is a per-stream object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from concurproxy.errors import ProxyError, bad_request
from concurproxy.server.api.conversation import Conversation, render
from concurproxy.server.api.shapes import OPENAI, ErrorShape
from concurproxy.server.api.usage import Usage
from concurproxy.server.sse import SSERelay

INT64_MAX = 2**63 - 1


def token_count(value: object) -> bool:
    """A JSON integer in [1, 2^63-1]: ``2.0`` is the integer 2 to JSON Schema (and to the engines' pydantic
    models), so the proxy may not refuse what openapi.yaml allows; a bool is not a number."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 1 <= value <= INT64_MAX
    return isinstance(value, float) and value.is_integer() and 1 <= value <= INT64_MAX


def positive_int(body: dict[str, Any], field: str) -> int:
    """``body[field]`` as a positive int, 0 when absent or null; 400 for anything else."""
    value = body.get(field)
    if value is None:
        return 0
    if not token_count(value):
        raise bad_request(f"'{field}' must be a positive integer", param=field)
    return int(value)


CHAT_ROUTE = "/v1/chat/completions"


class ApiCodec:
    """The base answers for an API that reports usage by itself and has no stored state."""

    name: ClassVar[str]
    route: ClassVar[str]  # the POST path whose steps this codec reads
    error_shape: ClassVar[ErrorShape] = OPENAI
    items_field: ClassVar[str | None] = None  # the list of turns bounded by ``limits.max_messages``

    # --- request -----------------------------------------------------------------------------
    def parse(self, raw: bytes, max_items: int) -> dict[str, Any]:
        """The body as a dict, or a 400 in the API's shape (the front renders it by path)."""
        if not raw:
            raise bad_request("the request body is empty; send a JSON object", code="invalid_json")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
        if body.__class__ is not dict:
            raise bad_request("the request body must be a JSON object", code="invalid_json")
        model = body.get("model")
        if model.__class__ is not str or not model:
            raise bad_request("'model' is required and must be a string", param="model")
        if body.get("stream", False).__class__ is not bool:
            raise bad_request("'stream' must be a boolean", param="stream")
        items = body.get(self.items_field) if self.items_field is not None else None
        if items.__class__ is list and len(items) > max_items:
            raise bad_request(
                f"'{self.items_field}' has {len(items)} entries; the limit is {max_items}", param=self.items_field
            )
        self.validate(body)
        return body

    def validate(self, body: dict[str, Any]) -> None:
        """The API's own required fields and types (after the common checks)."""
        raise NotImplementedError

    def conversation(self, body: dict[str, Any]) -> Conversation:
        """The prompt as turns (see `conversation.py`); only called on a validated body."""
        raise NotImplementedError

    def chat_body(self, body: dict[str, Any]) -> tuple[Mapping[str, Any], str]:
        """The step as the chat body (and route) an engine renders its prompt from — what
        `concurproxy.tokenizer.StepTokens` counts and hashes (a model's own template, or the estimator).
        vLLM serves Responses and Messages the same way: it turns them into chat messages first."""
        messages: list[dict[str, Any]] = []
        for t in self.conversation(body):
            m: dict[str, Any] = {"role": t.role or "user", "content": t.text}
            if t.tool_calls:
                m["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in t.tool_calls
                ]
            if t.tool_call_id is not None:
                m["tool_call_id"] = t.tool_call_id
            messages.append(m)
        return {"model": body.get("model"), "messages": messages}, CHAT_ROUTE

    def prompt_text(self, body: dict[str, Any]) -> str:
        """The canonical prompt text (token estimate, prefix hashes): always ``render(conversation)``."""
        return render(self.conversation(body))

    def max_output(self, body: dict[str, Any]) -> int:
        """The output limit the client asked for (0: none given)."""
        raise NotImplementedError

    def clamp_output(self, body: dict[str, Any], tokens: int) -> None:
        """Write a budget's lower output limit into ``body`` (the caller marks the body edited)."""
        raise NotImplementedError

    def request_stream_usage(self, body: dict[str, Any]) -> bool:
        """Make a streamed request report its usage; True when the client did not ask for it, so the
        relay must hide what the proxy added. The base API always reports usage: nothing to do."""
        return False

    def parent_id(self, body: dict[str, Any]) -> str | None:
        """The id of a stored earlier response this step continues (Responses), else None."""
        return None

    # --- answer --------------------------------------------------------------------------------
    def relay(self, strip_usage: bool, max_event_bytes: int) -> SSERelay:
        """A fresh relay for one streamed answer."""
        raise NotImplementedError

    def usage_of(self, answer: dict[str, Any]) -> Usage | None:
        """Usage in a non-streamed answer body."""
        raise NotImplementedError

    def response_id_of(self, answer: dict[str, Any]) -> str | None:
        """The id under which the engine stored this answer (Responses), else None."""
        return None

    def stream_error(self, err: ProxyError, events_sent: int) -> bytes:
        """The bytes that end a started stream with ``err``, in the API's event shape."""
        raise NotImplementedError
