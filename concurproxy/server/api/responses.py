"""OpenAI Responses (``POST /v1/responses``), as vLLM and OpenAI serve it.

Prompt: ``instructions`` (a system turn) then ``input``: a string (one user
turn) or a list of items: messages (``role`` + ``content`` string or parts),
``function_call`` (an assistant turn carrying the call), and
``function_call_output`` (a tool turn answering ``call_id``); other items
(reasoning, references) add nothing. ``previous_response_id`` continues a
stored response: the prompt then holds only the new input, and the step must
go to the replica that stored its parent (`concurproxy.state.responses`).
Output limit: ``max_output_tokens``. Usage: ``usage`` of the response object
(``input_tokens``/``output_tokens``); in a stream the ``response.completed``
(or ``.incomplete``/``.failed``) event carries the final response, which ends
the stream (there is no ``[DONE]``). ``response.created`` carries the id.
Mid-stream error: an ``error`` event (``ResponseErrorEvent``: ``type``,
``code``, ``message``, ``param``, ``sequence_number``), then the stream ends.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from concurproxy.errors import ProxyError, bad_request
from concurproxy.server.api.base import ApiCodec, positive_int
from concurproxy.server.api.conversation import Conversation, ToolCall, Turn, parts_text, text_of
from concurproxy.server.api.usage import Usage
from concurproxy.server.sse import SSERelay, data_of

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# The response object's id when it is the object's first member (vLLM, OpenAI): read without parsing the
# whole object; any other layout is parsed.
_LEADING_ID = re.compile(rb'"response":\s*\{\s*"id":\s*"([A-Za-z0-9_.:-]{1,256})"')


class ResponsesRelay(SSERelay):
    """Reads the events that carry the response object: its id (first seen) and, at the end, its usage."""

    __slots__ = ()

    # Every event carrying the response object has a "usage" member (null until the end);
    # response.created is named too, for servers that leave out null members.
    FAST_A = b'"usage":'
    FAST_B = b'"response.created"'

    def _keep(self, event: bytes) -> bool:
        if not (b'"response.completed"' in event or b'"response.incomplete"' in event or b'"response.failed"' in event):
            if self.response_id is not None:
                return True  # the id is known and this is not the final event (response.in_progress)
            found = _LEADING_ID.search(event)
            if found is not None:  # response.created as vLLM and OpenAI write it: the id leads the object
                self.response_id = found[1].decode()
                return True
        try:
            obj = orjson.loads(data_of(event))
        except orjson.JSONDecodeError:
            return True
        response = obj.get("response") if obj.__class__ is dict else None
        if response.__class__ is dict:
            rid = response.get("id")
            if self.response_id is None and rid.__class__ is str:
                self.response_id = rid
            if obj.get("type") in _TERMINAL:
                self.done_seen = True
                usage = Usage.from_io(response.get("usage"))
                if usage is not None:
                    self.usage = usage
        return True


def _turn(item: Any) -> Turn | None:
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message")
    if kind == "message" or (kind is None and "role" in item):
        role = item.get("role")
        return Turn(role if isinstance(role, str) else "user", parts_text(item.get("content")))
    if kind == "function_call":
        call = ToolCall(str(item.get("call_id") or ""), str(item.get("name") or ""), text_of(item.get("arguments")))
        return Turn("assistant", "", (call,))
    if kind == "function_call_output":
        call_id = item.get("call_id")
        return Turn("tool", text_of(item.get("output")), (), call_id if isinstance(call_id, str) else None)
    return None


class ResponsesCodec(ApiCodec):
    name = "responses"
    route = "/v1/responses"
    items_field = "input"

    def validate(self, body: dict[str, Any]) -> None:
        items = body.get("input")
        if isinstance(items, list):
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise bad_request(f"input[{i}] must be an object", param=f"input[{i}]")
        elif not isinstance(items, str):
            raise bad_request("'input' is required: a string or a list of input items", param="input")
        for field in ("instructions", "previous_response_id"):
            value = body.get(field)
            if value is not None and not isinstance(value, str):
                raise bad_request(f"'{field}' must be a string", param=field)
        positive_int(body, "max_output_tokens")

    def conversation(self, body: dict[str, Any]) -> Conversation:
        turns: list[Turn] = []
        instructions = body.get("instructions")
        if instructions:
            turns.append(Turn("system", instructions))
        items = body["input"]
        if isinstance(items, str):
            turns.append(Turn("user", items))
            return tuple(turns)
        for item in items:
            turn = _turn(item)
            if turn is not None:
                turns.append(turn)
        return tuple(turns)

    def max_output(self, body: dict[str, Any]) -> int:
        return body.get("max_output_tokens") or 0

    def clamp_output(self, body: dict[str, Any], tokens: int) -> None:
        body["max_output_tokens"] = tokens

    def parent_id(self, body: dict[str, Any]) -> str | None:
        return body.get("previous_response_id") or None

    def relay(self, strip_usage: bool, max_event_bytes: int) -> SSERelay:
        return ResponsesRelay(strip_usage, max_event_bytes)

    def usage_of(self, answer: dict[str, Any]) -> Usage | None:
        return Usage.from_io(answer.get("usage"))

    def response_id_of(self, answer: dict[str, Any]) -> str | None:
        rid = answer.get("id")
        return rid if isinstance(rid, str) else None

    def stream_error(self, err: ProxyError, events_sent: int) -> bytes:
        # sequence_number continues the upstream's count (0 for its first event, one per event)
        event = {
            "type": "error",
            "code": err.code,
            "message": err.message,
            "param": err.param,
            "sequence_number": events_sent,
        }
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"
