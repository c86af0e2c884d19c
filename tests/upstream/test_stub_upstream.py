"""The client against the project's own OpenAI-shaped stub upstream, used the way forward.py will use it."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from concurproxy.testing.stub_upstream import StubBehaviour, running_stub
from concurproxy.upstream.http1 import UpstreamDisconnected, UpstreamPool

ROUTE = "/v1/chat/completions"
HDRS = {"Content-Type": "application/json", "X-Request-Id": "req-1"}


def body(stream: bool, max_tokens: int = 4) -> bytes:
    doc = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    if stream:
        doc |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(doc)


async def test_non_streamed_and_streamed_answers() -> None:
    stub = StubBehaviour()
    pool = UpstreamPool(max_per_host=4)
    async with running_stub(stub) as url:
        try:
            async with await pool.request("POST", url, ROUTE, HDRS, body(False), read_timeout_s=5) as resp:
                assert resp.status == 200 and resp.content_type == "application/json"
                obj = orjson.loads(await resp.read())
            assert obj["usage"]["completion_tokens"] == 4
            assert {k.lower(): v for k, v in stub.seen_headers[-1].items()}["x-request-id"] == "req-1"
            async with await pool.request("POST", url, ROUTE, HDRS, body(True), read_timeout_s=5) as resp:
                assert resp.content_type == "text/event-stream"
                events = b"".join([c async for c in resp.iter_chunks()]).split(b"\n\n")
            assert events[-2] == b"data: [DONE]" and events[-1] == b""
            assert orjson.loads(events[-3].removeprefix(b"data: "))["usage"]["completion_tokens"] == 4
            assert pool.stats()[url.removeprefix("http://")] == (1, 1, 0)  # both on one connection
        finally:
            await pool.close()


async def test_error_status_is_a_normal_response() -> None:
    pool = UpstreamPool(max_per_host=4)
    async with running_stub(StubBehaviour(status=503)) as url:
        try:
            async with await pool.request("POST", url, ROUTE, HDRS, body(False), read_timeout_s=5) as resp:
                assert resp.status == 503
                assert orjson.loads(await resp.read())["error"]["code"] == 503
        finally:
            await pool.close()


async def test_stream_cut_by_the_engine() -> None:
    pool = UpstreamPool(max_per_host=4)
    async with running_stub(StubBehaviour(cut_after_chunks=2)) as url:
        try:
            resp = await pool.request("POST", url, ROUTE, HDRS, body(True), read_timeout_s=5)
            got = b""
            with pytest.raises(UpstreamDisconnected):
                async for chunk in resp.iter_chunks():
                    got += chunk
            assert got.count(b"data: ") == 2
            resp.release()
            assert pool.stats()[url.removeprefix("http://")] == (0, 0, 0)
        finally:
            await pool.close()


async def test_closing_mid_stream_cancels_the_engine() -> None:
    stub = StubBehaviour(chunk_delay_s=0.002)
    pool = UpstreamPool(max_per_host=4)
    async with running_stub(stub) as url:
        try:
            async with await pool.request("POST", url, ROUTE, HDRS, body(True, max_tokens=10_000)) as resp:
                async for _ in resp.iter_chunks():
                    break
                resp.close()
            for _ in range(500):
                if stub.cancelled:
                    break
                await asyncio.sleep(0.002)
            assert stub.cancelled == 1 and stub.active == 0
        finally:
            await pool.close()
