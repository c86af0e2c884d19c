"""The stub upstream's other routes, in the wire formats vLLM serves and the official SDKs parse.

* ``POST /v1/responses`` (OpenAI Responses): a ``response`` object, or its event
  stream (``event: <type>`` + ``data:``; ``response.created`` … ``response.completed``
  with ``usage``, no ``[DONE]``), as vLLM's ``api_router`` writes it. Answers are
  stored by id in this stub only, like vLLM's in-memory store: a
  ``previous_response_id`` this stub did not make is a 404, which is how tests see
  that a chain stayed on one replica. ``GET``/``DELETE /v1/responses/{id}`` and
  ``POST /v1/responses/{id}/cancel`` read the same store.
* ``POST /v1/messages`` (Anthropic Messages): a ``message``, or ``message_start``,
  ``content_block_*``, ``message_delta`` (usage), ``message_stop``;
  ``/v1/messages/count_tokens``.
* ``POST /v1/embeddings`` (``float`` or ``base64`` vectors: the openai SDK asks for
  base64), ``POST /tokenize`` / ``/detokenize`` (vLLM's shapes).
* anything else: ``404 {"detail": "Not Found"}`` (FastAPI's answer, which vLLM sends).

Token counts use the proxy's own canonical prompt (`concurproxy.server.api`), so a
proxy in front of the stub estimates exactly what the stub reports.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from concurproxy.errors import ProxyError
from concurproxy.server.api import MESSAGES, RESPONSES
from concurproxy.testing.stub_upstream import MAX_TOKENS
from concurproxy.tokens import count_tokens, prompt_text, tokenize

Prelude = Callable[[web.Request], Awaitable[tuple[Any, dict[str, Any]] | web.Response]]
_DIM = 8


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": status}}, status
    )


def _event(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class _ResponseEvents:
    """Responses stream events, numbered as vLLM numbers them (``sequence_number`` from 0)."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return _event(kind, obj)


def _message_event(kind: str, **fields: Any) -> bytes:
    return _event(kind, {"type": kind, **fields})


def _response_obj(
    body: dict[str, Any], rid: str, text: str, status: str, usage: dict[str, Any] | None
) -> dict[str, Any]:
    output = []
    if text:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        msg = {"type": "message", "id": f"msg_{rid}", "status": "completed", "role": "assistant", "content": [part]}
        output.append(msg)
    return {
        "id": rid,
        "object": "response",
        "created_at": 0,
        "model": body.get("model"),
        "status": status,
        "output": output,
        "usage": usage,
        "previous_response_id": body.get("previous_response_id"),
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "metadata": None,
        "text": {"format": {"type": "text"}},
    }


async def _stream(request: web.Request, b: Any, events: list[bytes], deltas: tuple[int, int]) -> web.StreamResponse:
    """Send ``events``; those in ``deltas`` (a range) are the content events the stub's pacing and
    cut switches apply to, like the chat stream's chunks."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    b.active += 1
    try:
        for i, ev in enumerate(events):
            n = i - deltas[0]
            if 0 <= n < deltas[1]:
                if b.cut_after_chunks is not None and n == b.cut_after_chunks:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if b.chunk_delay_s:
                    await asyncio.sleep(b.chunk_delay_s)
            await resp.write(ev)
        await resp.write_eof()
    except (asyncio.CancelledError, ConnectionResetError):
        b.cancelled += 1
        raise
    finally:
        b.active -= 1
    return resp


def register(app: web.Application, prelude: Prelude, behaviour: Callable[[web.Request], Any]) -> None:
    """Add the routes; ``prelude`` parses the body and applies the stub's switches (status, hang, record);
    ``behaviour`` gives the switches to routes without a body."""
    b_of = behaviour
    stored: dict[str, dict[str, Any]] = {}
    counter = iter(range(1, 1 << 62))
    prefix = secrets.token_hex(4)  # ids differ between stubs, as between engines

    async def responses(request: web.Request) -> web.StreamResponse:
        got = await prelude(request)
        if isinstance(got, web.Response):
            return got
        b, body = got
        prompt = round(count_tokens(RESPONSES.prompt_text(body)) * b.prompt_token_factor)
        parent = body.get("previous_response_id")
        if parent:
            if parent not in stored:
                return _error(404, f"Response with id '{parent}' not found.")
            prompt += stored[parent]["usage"]["total_tokens"]  # the engine re-reads the whole chain
        n = min(int(body.get("max_output_tokens") or b.chunks), MAX_TOKENS)
        rid = f"resp_{prefix}{next(counter):06d}"
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": n,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + n,
        }
        done = _response_obj(body, rid, " tok" * n, "completed", usage)
        stored[rid] = done
        if not body.get("stream"):
            return _json(done)
        ev = _ResponseEvents()
        start = _response_obj(body, rid, "", "in_progress", None)
        item = {"type": "message", "id": f"msg_{rid}", "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        at = {"item_id": f"msg_{rid}", "output_index": 0, "content_index": 0}
        text = " tok" * n
        events = [
            ev("response.created", response=start),
            ev("response.in_progress", response=start),
            ev("response.output_item.added", output_index=0, item=item),
            ev("response.content_part.added", **at, part=part),
        ]
        first = len(events)
        events += [ev("response.output_text.delta", **at, delta=" tok", logprobs=[]) for _ in range(n)]
        events += [
            ev("response.output_text.done", **at, text=text, logprobs=[]),
            ev("response.content_part.done", **at, part={**part, "text": text}),
            ev("response.output_item.done", output_index=0, item=done["output"][0] if n else item),
            ev("response.completed", response=done),
        ]
        return await _stream(request, b, events, (first, n))

    async def stored_response(request: web.Request) -> web.StreamResponse:
        rid = request.match_info["rid"]
        if rid not in stored:
            return _error(404, f"Response with id '{rid}' not found.")
        if request.method == "DELETE":
            del stored[rid]
            return _json({"id": rid, "object": "response", "deleted": True})
        if request.path.endswith("/cancel"):
            return _json({**stored[rid], "status": "cancelled"})
        if request.query.get("stream") == "true":  # vLLM replays a stored response as its event stream
            ev, done = _ResponseEvents(), stored[rid]
            deltas = [ev("response.output_text.delta", delta=" tok") for _ in range(b_of(request).chunks)]
            events = [ev("response.created", response=done), *deltas, ev("response.completed", response=done)]
            return await _stream(request, b_of(request), events, (1, len(deltas)))
        return _json(stored[rid])

    async def version(request: web.Request) -> web.Response:
        b = b_of(request)
        if b.status != 200:
            return _error(b.status, "stub failure")
        return _json({"version": "stub"})

    async def messages(request: web.Request) -> web.StreamResponse:
        got = await prelude(request)
        if isinstance(got, web.Response):
            return got
        b, body = got
        prompt = round(count_tokens(MESSAGES.prompt_text(body)) * b.prompt_token_factor)
        n = min(int(body.get("max_tokens") or b.chunks), MAX_TOKENS)
        mid = f"msg_{next(counter):08d}"
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": " tok" * n}],
            "stop_reason": "max_tokens",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": n},
        }
        if not body.get("stream"):
            return _json(message)
        head = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": prompt, "output_tokens": 0}}
        text_delta = {"type": "text_delta", "text": " tok"}
        stop = {"stop_reason": "max_tokens", "stop_sequence": None}
        events = [
            _message_event("message_start", message=head),
            _message_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            _message_event("ping"),
        ]
        events += [_message_event("content_block_delta", index=0, delta=text_delta) for _ in range(n)]
        events += [
            _message_event("content_block_stop", index=0),
            _message_event("message_delta", delta=stop, usage={"output_tokens": n}),
            _message_event("message_stop"),
        ]
        return await _stream(request, b, events, (3, n))

    async def count_message_tokens(request: web.Request) -> web.Response:
        got = await prelude(request)
        if isinstance(got, web.Response):
            return got
        _, body = got
        try:
            MESSAGES.validate({**body, "max_tokens": 1})
        except ProxyError as err:
            return _json({"type": "error", "error": {"type": "invalid_request_error", "message": err.message}}, 400)
        return _json({"input_tokens": count_tokens(MESSAGES.prompt_text(body))})

    async def embeddings(request: web.Request) -> web.Response:
        got = await prelude(request)
        if isinstance(got, web.Response):
            return got
        _, body = got
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "'input' must be a string or a non-empty list")
        data, total = [], 0
        for i, x in enumerate(inputs):
            text = x if isinstance(x, str) else " ".join(map(str, x))
            total += count_tokens(text)
            seed = zlib.crc32(text.encode("utf-8", "surrogatepass"))
            vec = [((seed >> k) % 1000) / 1000.0 for k in range(_DIM)]
            emb: Any = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{_DIM}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        usage = {"prompt_tokens": total, "total_tokens": total}
        return _json({"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    async def tokenize_route(request: web.Request) -> web.Response:
        got = await prelude(request)
        if isinstance(got, web.Response):
            return got
        _, body = got
        if not isinstance(body.get("prompt"), str) and not isinstance(body.get("messages"), list):
            return _error(400, "'prompt' (a string) or 'messages' (a list) is required")
        text = body["prompt"] if isinstance(body.get("prompt"), str) else prompt_text(body)
        ids = tokenize(text)
        return _json({"count": len(ids), "max_model_len": 4096, "tokens": ids, "token_strs": None})

    async def detokenize(request: web.Request) -> web.Response:
        got = await prelude(request)
        if isinstance(got, web.Response):
            return got
        _, body = got
        tokens = body.get("tokens")
        if not isinstance(tokens, list):
            return _error(400, "'tokens' must be a list")
        return _json({"prompt": " tok" * len(tokens)})

    async def not_found(request: web.Request) -> web.Response:
        return _json({"detail": "Not Found"}, 404)

    app.router.add_post("/v1/responses", responses)
    app.router.add_get("/v1/responses/{rid}", stored_response)
    app.router.add_delete("/v1/responses/{rid}", stored_response)
    app.router.add_post("/v1/responses/{rid}/cancel", stored_response)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_message_tokens)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/tokenize", tokenize_route)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_get("/version", version)
    app.router.add_route("*", "/{tail:.*}", not_found)  # last
