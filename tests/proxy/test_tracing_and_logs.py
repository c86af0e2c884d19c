"""Traces and request ids through the live proxy (in-memory span exporter, real sockets)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import aiohttp
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from concurproxy.config import load_policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_step_spans_continue_the_client_trace_into_the_engine():
    exporter = InMemorySpanExporter()
    stub = StubBehaviour()
    async with AsyncExitStack() as stack:
        up = await stack.enter_async_context(running_stub(stub))
        policy = load_policy(overrides={"upstreams": [{"url": up}]}, env={})
        url = await stack.enter_async_context(running_proxy(policy, build_components(policy, span_exporter=exporter)))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        r = await session.post(
            url + "/v1/chat/completions",
            json=CHAT,
            headers={"traceparent": PARENT, "X-Agent-Id": "a1", "X-Agent-Role": "planner"},
        )
        assert r.status == 200
        await r.read()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"step", "routing", "admission_wait", "upstream"} <= set(spans)
    step = spans["step"]
    assert format(step.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert step.attributes["concurproxy.outcome"] == "success"
    sent = stub.seen_headers[-1]["traceparent"]
    assert sent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"  # same trace, new parent span
    assert sent.split("-")[2] == format(spans["upstream"].context.span_id, "016x")


async def test_request_id_is_echoed_on_success_and_error(proxy_factory):
    async with proxy_factory() as h:
        r = await h.post("/v1/chat/completions", CHAT, headers={"X-Request-Id": "my-req-1"})
        assert r.headers["X-Request-Id"] == "my-req-1"
        sent = {k.lower(): v for k, v in h.stubs[0].seen_headers[-1].items()}
        assert sent["x-request-id"] == "my-req-1"  # the engine's logs can be joined to ours
        r = await h.session.post(h.url + "/v1/chat/completions", data=b"{")
        assert r.status == 400 and r.headers["X-Request-Id"]
