"""A fast, scriptable OpenAI-compatible upstream for tests and overhead benchmarks.

It answers instantly (no model): non-streamed answers carry ``usage``; streamed
answers send ``chunks`` content chunks, then the usage chunk when asked for
(``stream_options.include_usage``), then ``[DONE]`` — the shapes vLLM sends.
Responses, Messages, embeddings and tokenize routes are in ``stub_apis.py``.
Behaviour switches (``StubBehaviour``) let tests make it fail, hang or cut a
stream, and every request it saw is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from concurproxy.tokens import estimate_prompt_tokens

_STUB_KEY = web.AppKey("stub", object)
MAX_TOKENS = 65_536  # most tokens one answer has (an engine stops at its context length; a fuzz sends 2^63)


@dataclass
class StubBehaviour:
    model: str = "stub-model"
    chunks: int = 4
    chunk_delay_s: float = 0.0
    status: int = 200  # answer this status (with an error body) instead of a completion
    hang_s: float = 0.0  # wait this long before answering (timeouts)
    cut_after_chunks: int | None = None  # close the connection mid-stream after N chunks
    healthy: bool = True
    prompt_token_factor: float = 1.0  # reported prompt tokens = local count × this (a different tokenizer)
    kv_usage: float = 0.1  # what /metrics reports (vLLM names), so admission sees a healthy engine
    metrics_status: int = 200
    kv_capacity_tokens: int | None = None  # also reported, as vLLM does (cache_config_info, 16-token blocks)
    release: asyncio.Event | None = None  # answer only once it is set (a step kept in flight as long as a test needs)
    busy_s_per_step: float = 0.0  # an engine whose latency grows with load: each step waits this × steps in flight
    max_running: int = 0  # > 0: an engine that runs at most this many steps at once (hang_s each); the rest queue
    flood_bytes: int = 0  # streamed chat: after the first chunk, this many bytes of one event that never ends
    eof_after: asyncio.Event | None = None  # streamed: end the body (after [DONE]) only once this is set
    drop_reused: int = 0  # the next N steps that arrive on a connection which carried one already are read, then
    # the connection closes unanswered (uvicorn's keep-alive timer firing as a request arrives)
    record: bool = True
    seen: list[dict[str, Any]] = field(default_factory=list)
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    cancelled: int = 0  # streams whose client (the proxy) went away
    active: int = 0
    in_flight: int = 0  # steps inside the busy_s_per_step wait
    slots: asyncio.Semaphore | None = None  # (max_running)
    carried: set[object] = field(default_factory=set)  # connections (transports) that carried a step (drop_reused)


def _completion(body: dict[str, Any], chat: bool, n: int, factor: float = 1.0) -> dict[str, Any]:
    text = " tok" * n
    prompt_tokens = round(estimate_prompt_tokens(body) * factor)
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "cmpl-stub",
        "object": "chat.completion" if chat else "text_completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n},
    }


def _chunk(body: dict[str, Any], chat: bool, i: int) -> bytes:
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": {"content": " tok"}, "finish_reason": None}
        if i == 0:
            choice["delta"]["role"] = "assistant"
    else:
        choice = {"index": 0, "text": " tok", "finish_reason": None}
    obj = {
        "id": "cmpl-stub",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [choice],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _prelude(request: web.Request) -> tuple[StubBehaviour, dict[str, Any]] | web.Response:
    """Every API route's start: the JSON body (a 400 when it is not an object), recorded, then the
    behaviour switches (hang, release, forced status). A Response is the answer already."""
    b: StubBehaviour = request.app[_STUB_KEY]  # type: ignore[assignment]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        err = {"error": {"message": "the body must be a JSON object", "type": "BadRequestError", "code": 400}}
        return web.Response(status=400, body=orjson.dumps(err), content_type="application/json")
    if b.record:
        b.seen.append(body)
        b.seen_headers.append(dict(request.headers))
    if b.drop_reused and request.transport is not None:
        if request.transport in b.carried:
            b.drop_reused -= 1
            request.transport.close()
            return web.Response(status=500)  # never reaches the client: the connection is closed
        b.carried.add(request.transport)
    if b.max_running:
        if b.slots is None:
            b.slots = asyncio.Semaphore(b.max_running)
        async with b.slots:
            await asyncio.sleep(b.hang_s)
    elif b.hang_s:
        await asyncio.sleep(b.hang_s)
    if b.busy_s_per_step:
        b.in_flight += 1
        try:
            await asyncio.sleep(b.busy_s_per_step * b.in_flight)
        finally:
            b.in_flight -= 1
    if b.release is not None:
        await b.release.wait()
    if b.status != 200:
        err = {"error": {"message": "stub failure", "type": "server_error", "code": b.status}}
        return web.Response(status=b.status, body=orjson.dumps(err), content_type="application/json")
    return b, body


async def _handle(request: web.Request, chat: bool) -> web.StreamResponse:
    got = await _prelude(request)
    if isinstance(got, web.Response):
        return got
    b, body = got
    # An engine stops at its context length whatever max_tokens says; the stub at MAX_TOKENS (an API
    # fuzz sends up to 2^63-1, which would otherwise be built in memory or streamed for ever).
    n = min(int(body.get("max_tokens") or b.chunks), MAX_TOKENS)
    if not body.get("stream"):
        return web.Response(
            body=orjson.dumps(_completion(body, chat, n, b.prompt_token_factor)), content_type="application/json"
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    b.active += 1
    try:
        for i in range(n):
            if b.cut_after_chunks is not None and i == b.cut_after_chunks:
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(_chunk(body, chat, i))
            if b.flood_bytes:  # an event that never ends: the proxy's line bound must stop it
                await resp.write(b"data: ")
                for _ in range(0, b.flood_bytes, 65536):
                    await resp.write(b"x" * 65536)
                return resp
            if b.chunk_delay_s:
                await asyncio.sleep(b.chunk_delay_s)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = _completion(body, chat, n)["usage"]
            obj = {
                "id": "cmpl-stub",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body.get("model"),
                "choices": [],
                "usage": usage,
            }
            await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        if b.eof_after is not None:
            await b.eof_after.wait()
        await resp.write_eof()
    except (asyncio.CancelledError, ConnectionResetError):
        b.cancelled += 1
        raise
    finally:
        b.active -= 1
    return resp


def build_stub_app(behaviour: StubBehaviour | None = None) -> web.Application:
    b = behaviour or StubBehaviour()
    app = web.Application()
    app[_STUB_KEY] = b

    async def chat(r: web.Request) -> web.StreamResponse:
        return await _handle(r, True)

    async def comp(r: web.Request) -> web.StreamResponse:
        return await _handle(r, False)

    async def models(r: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": b.model, "object": "model"}]})

    async def health(r: web.Request) -> web.Response:
        return web.Response(status=200 if b.healthy else 503, text="ok" if b.healthy else "down")

    async def metrics(r: web.Request) -> web.Response:
        text = (
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="{b.model}"}} {b.kv_usage}\n'
            f'vllm:num_requests_running{{engine="0",model_name="{b.model}"}} {b.active}\n'
            f'vllm:num_requests_waiting{{engine="0",model_name="{b.model}"}} 0\n'
            f'vllm:num_preemptions_total{{engine="0",model_name="{b.model}"}} 0\n'
        )
        if b.kv_capacity_tokens is not None:
            blocks = b.kv_capacity_tokens // 16
            text += f'vllm:cache_config_info{{block_size="16",engine="0",num_gpu_blocks="{blocks}"}} 1.0\n'
        return web.Response(status=b.metrics_status, text=text)

    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", comp)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    from concurproxy.testing import stub_apis  # (it imports the proxy's codecs: only when a stub is built)

    stub_apis.register(app, _prelude, lambda request: request.app[_STUB_KEY])
    return app


@asynccontextmanager
async def running_stub(
    behaviour: StubBehaviour | None = None, port: int = 0, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    runner = web.AppRunner(build_stub_app(behaviour), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """``python -m concurproxy.testing.stub_upstream --port N``: serve the stub until killed."""
    import argparse

    parser = argparse.ArgumentParser(description="fast OpenAI-compatible stub upstream (no model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--chunks", type=int, default=4, help="streamed chunks when max_tokens is not given")
    parser.add_argument("--chunk-delay-s", type=float, default=0.0, help="pause after each streamed chunk")
    parser.add_argument("--prefill-s", type=float, default=0.0, help="wait before answering (an engine's prefill)")
    args = parser.parse_args(argv)
    behaviour = StubBehaviour(chunks=args.chunks, chunk_delay_s=args.chunk_delay_s, hang_s=args.prefill_s, record=False)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(
        build_stub_app(behaviour),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
