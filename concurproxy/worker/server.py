"""HTTP front of the simulated engine (aiohttp): three chat-like APIs over one engine.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (SSE streaming
with ``stream_options.include_usage``, or one JSON body with ``usage``),
``POST /v1/responses`` (+ ``GET``/``DELETE /v1/responses/{id}``, ``POST
/v1/responses/{id}/cancel``), ``POST /v1/messages`` (+
``/v1/messages/count_tokens``), ``GET /v1/models``, ``GET /health``, ``GET
/metrics`` (vLLM names, see :mod:`concurproxy.worker.metrics`). The request
and answer shapes of each API live in its codec (``openai_io``,
``responses_io``, ``messages_io``); this module runs any of them on the engine.

A client that disconnects mid-request has its request aborted in the engine
(its blocks are freed): the server runs with handler cancellation on, and a
failed write while streaming aborts too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from concurproxy.worker.codec import BadRequest, Codec, Exchange
from concurproxy.worker.driver import EngineDead, EngineDriver
from concurproxy.worker.engine import RequestOutput, RequestRejected
from concurproxy.worker.messages_io import MessagesCodec, anthropic_error, conversation_ids
from concurproxy.worker.openai_io import ChatCodec, openai_error
from concurproxy.worker.responses_io import ResponsesCodec, not_found
from concurproxy.worker.responses_store import ResponseStore


@dataclass(frozen=True, slots=True)
class WorkerState:
    driver: EngineDriver
    registry: CollectorRegistry
    model_name: str
    max_model_len: int
    responses: ResponseStore = field(default_factory=ResponseStore)  # stored Responses (bounded LRU)


STATE: web.AppKey[WorkerState] = web.AppKey("concurworker_state", WorkerState)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _serve(codec: Codec) -> Any:
    """The aiohttp handler that runs ``codec``'s requests on the engine."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _generate(request, codec)

    return handler


async def _generate(request: web.Request, codec: Codec) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _json(codec.error(f"invalid JSON body: {exc}", 400), 400)
    try:
        ex = codec.parse(body)
    except BadRequest as exc:
        return _json(codec.error(str(exc), exc.status, exc.param), exc.status)
    gen = ex.gen
    try:
        queue = state.driver.submit(ex.req_id, gen.prompt_ids, gen.max_tokens, gen.ignore_eos, gen.priority)
    except RequestRejected as exc:
        return _json(codec.error(str(exc), 400), 400)
    except EngineDead as exc:
        return _json(codec.error(str(exc), 500), 500)
    finished = False
    try:
        resp = await (_stream(request, ex, queue) if gen.stream else _collect(ex, queue))
        finished = True
        return resp
    except ConnectionResetError:
        return web.Response(status=499)
    finally:
        if not finished:
            state.driver.abort(ex.req_id)


async def _collect(ex: Exchange, queue: asyncio.Queue[RequestOutput]) -> web.Response:
    parts: list[str] = []
    while True:
        out = await queue.get()
        parts.append(out.new_text)
        if out.finished:
            return _json(ex.body(out, "".join(parts)))


async def _stream(request: web.Request, ex: Exchange, queue: asyncio.Queue[RequestOutput]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    if head := ex.opening():
        await resp.write(head)
    parts: list[str] = []
    first = True
    while True:
        out = await queue.get()
        if first:
            first = False
            if frames := ex.first(out):
                await resp.write(frames)
        if out.new_text:
            parts.append(out.new_text)
            await resp.write(ex.delta(out.new_text))
        if out.finished:
            break
    await resp.write(ex.closing(out, "".join(parts)))
    await resp.write_eof()
    return resp


def _response_id(request: web.Request) -> tuple[WorkerState, str]:
    return request.app[STATE], request.match_info["response_id"]


def _responses_error(exc: BadRequest) -> web.Response:
    return _json(openai_error(str(exc), exc.status, exc.param), exc.status)


async def get_response(request: web.Request) -> web.Response:
    state, resp_id = _response_id(request)
    stored = state.responses.get(resp_id)
    if stored is None:
        return _responses_error(not_found(resp_id, "response_id"))
    return _json(stored.response)


async def delete_response(request: web.Request) -> web.Response:
    state, resp_id = _response_id(request)
    if not state.responses.delete(resp_id):
        return _responses_error(not_found(resp_id, "response_id"))
    return _json({"id": resp_id, "object": "response", "deleted": True})


async def cancel_response(request: web.Request) -> web.Response:
    # as vLLM: only background responses can be cancelled, and the worker runs none in the background
    state, resp_id = _response_id(request)
    if state.responses.get(resp_id) is None:
        return _responses_error(not_found(resp_id, "response_id"))
    return _responses_error(BadRequest("Cannot cancel a synchronous response.", "response_id"))


async def count_tokens(request: web.Request) -> web.Response:
    try:
        ids = conversation_ids(orjson.loads(await request.read()))
    except orjson.JSONDecodeError as exc:
        return _json(anthropic_error(f"invalid JSON body: {exc}", 400), 400)
    except BadRequest as exc:
        return _json(anthropic_error(str(exc), exc.status), exc.status)
    return _json({"input_tokens": len(ids)})


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
    model = state.model_name
    app.router.add_post("/v1/chat/completions", _serve(ChatCodec(model, chat=True)))
    app.router.add_post("/v1/completions", _serve(ChatCodec(model, chat=False)))
    app.router.add_post("/v1/responses", _serve(ResponsesCodec(model, state.responses)))
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.router.add_post("/v1/responses/{response_id}/cancel", cancel_response)
    app.router.add_post("/v1/messages", _serve(MessagesCodec(model)))
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
