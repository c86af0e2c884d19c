"""End-to-end forwarding through a real proxy to stub upstreams (all real sockets)."""

from __future__ import annotations

import asyncio

import orjson

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}


async def test_non_streamed_chat_is_relayed_with_usage_learned(proxy_factory):
    async with proxy_factory() as h:
        r = await h.post("/v1/chat/completions", CHAT)
        assert r.status == 200
        data = await r.json()
        assert data["choices"][0]["message"]["content"] == " tok" * 5
        assert r.headers["x-concurproxy-replica"] == "r0"
        assert r.headers["X-Request-Id"]
        step = h.listener.steps[-1]
        assert step.usage is not None and step.usage.completion_tokens == 5
        assert step.outcome == "success" and step.replica is not None and step.replica.id == "r0"


async def test_unknown_body_fields_pass_through_untouched(proxy_factory):
    async with proxy_factory() as h:
        body = {**CHAT, "ignore_eos": True, "top_k": 7, "vendor": {"nested": [1, 2]}}
        r = await h.post("/v1/chat/completions", body)
        assert r.status == 200
        assert h.stubs[0].seen[-1] == body


async def test_completions_route(proxy_factory):
    async with proxy_factory() as h:
        r = await h.post("/v1/completions", {"model": "stub-model", "prompt": "once upon", "max_tokens": 2})
        assert r.status == 200
        assert (await r.json())["choices"][0]["text"] == " tok tok"


async def test_stream_strips_injected_usage_chunk_but_learns_usage(proxy_factory):
    async with proxy_factory() as h:
        r = await h.post("/v1/chat/completions", {**CHAT, "stream": True})
        text = await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        assert all('"usage"' not in e for e in events)  # the client did not ask for usage
        assert len(events) == 6  # 5 content chunks + [DONE]
        # the upstream was asked for usage, and the proxy learned it
        assert h.stubs[0].seen[-1]["stream_options"] == {"include_usage": True}
        assert h.listener.steps[-1].usage.completion_tokens == 5


async def test_stream_keeps_usage_chunk_when_client_asked(proxy_factory):
    async with proxy_factory() as h:
        r = await h.post("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
        events = [e for e in (await r.text()).split("\n\n") if e]
        usage = orjson.loads(events[-2][len("data: ") :])
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5


async def test_models_is_union_of_replicas(proxy_factory):
    from concurproxy.testing.stub_upstream import StubBehaviour

    async with proxy_factory(behaviours=[StubBehaviour(model="a"), StubBehaviour(model="b")]) as h:
        r = await h.session.get(h.url + "/v1/models")
        assert sorted(m["id"] for m in (await r.json())["data"]) == ["a", "b"]
        # a step for model b only goes to the replica serving b
        for _ in range(3):
            r = await h.post("/v1/chat/completions", {**CHAT, "model": "b"})
            assert r.headers["x-concurproxy-replica"] == "r1"


async def test_health_and_ready(proxy_factory):
    async with proxy_factory() as h:
        assert (await h.session.get(h.url + "/health")).status == 200
        r = await h.session.get(h.url + "/ready")
        assert r.status == 200 and (await r.json())["replicas"][0]["healthy"] is True


async def test_client_disconnect_mid_stream_cancels_upstream(proxy_factory):
    from concurproxy.testing.stub_upstream import StubBehaviour

    stub = StubBehaviour(chunks=1000, chunk_delay_s=0.01)
    async with proxy_factory(behaviours=[stub]) as h:
        r = await h.post("/v1/chat/completions", {**CHAT, "max_tokens": 1000, "stream": True})
        await r.content.readline()
        r.close()  # the client goes away mid-stream
        for _ in range(300):  # bounded wait for the cancellation to propagate upstream
            if stub.cancelled:
                break
            await asyncio.sleep(0.01)
        assert stub.cancelled == 1 and stub.active == 0
        for _ in range(300):
            if h.listener.steps:
                break
            await asyncio.sleep(0.01)
        assert h.listener.steps[-1].outcome == "cancelled"
