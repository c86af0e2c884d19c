"""A tiny in-process OpenAI-compatible server for loadgen tests (aiohttp, 127.0.0.1, port 0).

Answers /v1/models, /v1/chat/completions (streaming or not, ``max_tokens`` words,
usage included) and /metrics (a vLLM-named gauge and counter). It records every
request (headers + body) and can answer the first ``fail_first`` requests with 429.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from concurproxy.tokens import estimate_prompt_tokens, synth_text


@dataclass
class Seen:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class StubState:
    fail_first: int = 0
    seen: list[Seen] = field(default_factory=list)
    running: int = 0


class OpenAIStub:
    def __init__(self, fail_first: int = 0, queue_wait_ms: float | None = 1.5, delay_s: float = 0.0):
        self.state = StubState(fail_first=fail_first)
        self.delay_s = delay_s
        self.queue_wait_ms = queue_wait_ms
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        n = len(self.state.seen)
        text = (
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="stub"}} {min(1.0, n / 100):.3f}\n'
            "# TYPE vllm:num_preemptions counter\n"
            f'vllm:num_preemptions_total{{engine="0",model_name="stub"}} {n // 10}\n'
        )
        return web.Response(text=text, content_type="text/plain")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.state.seen.append(Seen(dict(request.headers), body))
        if self.state.fail_first > 0:
            self.state.fail_first -= 1
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0"})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # a slow engine (used to test the hard end), not for sync
        n_out = int(body.get("max_tokens", 16))
        usage = {"prompt_tokens": estimate_prompt_tokens(body), "completion_tokens": n_out}
        headers = {"x-concurproxy-replica": "stub-0"}
        if self.queue_wait_ms is not None:
            headers["x-concurproxy-queue-wait-ms"] = f"{self.queue_wait_ms:.1f}"
        text = synth_text(n_out)
        if not body.get("stream"):
            doc = {
                "id": "x",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
                "usage": usage,
            }
            return web.json_response(doc, headers=headers)
        resp = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        half = len(text) // 2
        for part in (text[:half], text[half:]):
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": None}],
            }
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: " + orjson.dumps({"id": "x", "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def __aenter__(self) -> OpenAIStub:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
