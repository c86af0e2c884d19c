"""The seam between the worker's HTTP front and its API shapes (pure, no I/O).

Each API (chat/completions, Responses, Anthropic Messages) is a small
:class:`Codec`: it parses a body into a :class:`Generation` (what the engine
runs) wrapped in an :class:`Exchange` (how that one request's answer is
written), and it writes errors in its API's own shape. The server owns
everything else once: submitting to the engine, streaming, aborting on
disconnect. An exchange is stateful (a Responses stream numbers its events),
so there is one per request.

Stream protocol, called by the server in this order: ``opening()`` when the
stream starts (before the engine has produced anything), ``first(out)`` with
the engine's first output, ``delta(text)`` for each piece of generated text,
``closing(last, text)`` after the final output. A non-streamed request calls
only ``body(last, text)``. ``text`` is the whole generated text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from concurproxy.worker.engine import RequestOutput


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass(frozen=True, slots=True)
class Generation:
    """What the engine is asked to run, whichever API asked."""

    prompt_ids: list[int]
    max_tokens: int | None
    stream: bool
    ignore_eos: bool = False  # vLLM extension: output exactly max_tokens
    priority: int = 0  # vLLM extension: lower = scheduled earlier (needs the priority policy)


class Exchange(Protocol):
    @property
    def req_id(self) -> str: ...
    @property
    def gen(self) -> Generation: ...

    def opening(self) -> bytes: ...
    def first(self, out: RequestOutput) -> bytes: ...
    def delta(self, text: str) -> bytes: ...
    def closing(self, last: RequestOutput, text: str) -> bytes: ...
    def body(self, last: RequestOutput, text: str) -> dict[str, Any]: ...


class Codec(Protocol):
    """One API. Built once per server with what it needs (model name, response store)."""

    def parse(self, body: Any) -> Exchange: ...  # raises BadRequest
    def error(self, message: str, status: int, param: str | None = None) -> dict[str, Any]: ...


def sse(obj: Mapping[str, Any], event: str | None = None) -> bytes:
    """One server-sent event; Responses and Anthropic streams name each event (the SDKs dispatch on it)."""
    data = b"data: " + orjson.dumps(obj) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


def opt_int(body: Mapping[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"'{key}' must be an integer", key)
    if v < 1:
        raise BadRequest(f"'{key}' must be at least 1", key)
    return v


def opt_bool(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise BadRequest(f"'{key}' must be a boolean", key)
    return v


def priority(body: Mapping[str, Any]) -> int:
    v = body.get("priority", 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest("'priority' must be an integer", "priority")
    return v


def require_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    return body
