"""OpenAI-compatible HTTP front of the simulated engine (aiohttp).

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (SSE streaming
with ``stream_options.include_usage``, or one JSON body with ``usage``),
``GET /v1/models``, ``GET /health``, ``GET /metrics`` (vLLM names, see
:mod:`concurproxy.worker.metrics`).

A client that disconnects mid-request has its request aborted in the engine
(its blocks are freed): the server runs with handler cancellation on, and a
failed write while streaming aborts too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from concurproxy.worker.driver import EngineDead, EngineDriver
from concurproxy.worker.engine import RequestOutput, RequestRejected
from concurproxy.worker.openai_io import (
    BadRequest,
    ParsedRequest,
    chunk,
    completion,
    error_body,
    parse_request,
    usage,
    usage_chunk,
)


@dataclass(frozen=True, slots=True)
class WorkerState:
    driver: EngineDriver
    registry: CollectorRegistry
    model_name: str
    max_model_len: int


STATE: web.AppKey[WorkerState] = web.AppKey("concurworker_state", WorkerState)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _error(message: str, status: int, param: str | None = None) -> web.Response:
    type_ = "invalid_request_error" if status < 500 else "internal_error"
    return _json(error_body(message, status, param, type_), status)


async def _generate(request: web.Request, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _error(f"invalid JSON body: {exc}", 400)
    try:
        parsed = parse_request(body, chat)
    except BadRequest as exc:
        return _error(str(exc), exc.status, exc.param)
    req_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    try:
        queue = state.driver.submit(req_id, parsed.prompt_ids, parsed.max_tokens, parsed.ignore_eos, parsed.priority)
    except RequestRejected as exc:
        return _error(str(exc), 400)
    except EngineDead as exc:
        return _error(str(exc), 500)
    finished = False
    try:
        if parsed.stream:
            resp = await _stream(request, state, parsed, req_id, queue)
        else:
            resp = await _collect(state, parsed, req_id, queue)
        finished = True
        return resp
    except ConnectionResetError:
        return web.Response(status=499)
    finally:
        if not finished:
            state.driver.abort(req_id)


async def _collect(
    state: WorkerState, parsed: ParsedRequest, req_id: str, queue: asyncio.Queue[RequestOutput]
) -> web.Response:
    parts: list[str] = []
    while True:
        out = await queue.get()
        parts.append(out.new_text)
        if out.finished:
            break
    body = completion(
        req_id,
        int(time.time()),
        state.model_name,
        parsed.chat,
        "".join(parts),
        out.finish_reason,
        usage(out.prompt_tokens, out.output_tokens, out.cached_tokens),
    )
    return _json(body)


async def _stream(
    request: web.Request,
    state: WorkerState,
    parsed: ParsedRequest,
    req_id: str,
    queue: asyncio.Queue[RequestOutput],
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    created, model, chat, inc = int(time.time()), state.model_name, parsed.chat, parsed.include_usage

    async def send(obj: dict[str, Any]) -> None:
        await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")

    role_pending = chat  # as vLLM: the role chunk goes out with the first engine output, not on arrival,
    while True:  # so a client's (and the proxy's) time to the first event is the engine's TTFT
        out = await queue.get()
        if role_pending:
            await send(chunk(req_id, created, model, chat, "", None, first=True, with_usage_field=inc))
            role_pending = False
        if out.new_text:
            await send(chunk(req_id, created, model, chat, out.new_text, None, with_usage_field=inc))
        if out.finished:
            break
    await send(chunk(req_id, created, model, chat, None if chat else "", out.finish_reason, with_usage_field=inc))
    if inc:
        await send(
            usage_chunk(req_id, created, model, chat, usage(out.prompt_tokens, out.output_tokens, out.cached_tokens))
        )
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(
        {
            "object": "list",
            "data": [
                {
                    "id": state.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "concurworker",
                    "root": state.model_name,
                    "parent": None,
                    "max_model_len": state.max_model_len,
                }
            ],
        }
    )


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[STATE].registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(state: WorkerState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
