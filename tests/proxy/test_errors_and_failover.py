"""Bad input and upstream trouble: OpenAI-shaped errors, retries before the first byte, health."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from concurproxy.testing.poll import wait_until
from concurproxy.testing.stub_upstream import StubBehaviour

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def assert_openai_error(data: dict, code: str) -> None:
    assert set(data) == {"error"}
    assert data["error"]["code"] == code
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    assert data["error"]["type"]


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "invalid_request", "model"),
        (b'{"model": "stub-model"}', "invalid_request", "messages"),
        (b'{"model": "stub-model", "messages": []}', "invalid_request", "messages"),
        (b'{"model": "stub-model", "messages": ["x"]}', "invalid_request", "messages[0]"),
        (b'{"model": "stub-model", "messages": [{"role": "user"}], "max_tokens": -1}', "invalid_request", "max_tokens"),
        (b'{"model": "stub-model", "messages": [{"role": "user"}], "stream": "yes"}', "invalid_request", "stream"),
        (
            b'{"model": "stub-model", "messages": [{"role": "user"}], "stream_options": 3}',
            "invalid_request",
            "stream_options",
        ),
    ],
)
async def test_malformed_requests_get_400(proxy_factory, raw, code, param):
    async with proxy_factory() as h:
        r = await h.session.post(h.url + "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
        assert r.status == 400
        data = await r.json()
        assert_openai_error(data, code)
        assert data["error"]["param"] == param
        assert h.stubs[0].seen == []  # nothing reached the engine


async def test_invalid_identity_header_is_400(proxy_factory):
    async with proxy_factory() as h:
        r = await h.post("/v1/chat/completions", CHAT, headers={"X-Agent-Id": "bad id\twith space"})
        assert r.status == 400
        assert_openai_error(await r.json(), "invalid_identity")


async def test_unknown_routes_are_relayed_not_invented(proxy_factory):
    """A path the proxy does not own goes to the engine, whose answer (a 404 too) is relayed as it is;
    the proxy's own paths keep their 405, and an unknown model is still the proxy's 404."""
    async with proxy_factory() as h:
        r = await h.session.get(h.url + "/v1/nothing")
        assert r.status == 404 and r.headers["x-concurproxy-replica"] == "r0"
        assert await r.json() == {"detail": "Not Found"}  # the stub's (FastAPI-like) answer, not ours
        r = await h.session.get(h.url + "/v1/chat/completions")  # another method on an admitted path: 405, as vLLM
        assert r.status == 405 and r.headers["Allow"] == "POST"
        r = await h.session.post(h.url + "/v1/agents/a1")
        assert r.status == 405 and r.headers["Allow"] == "DELETE"
        r = await h.post("/v1/chat/completions", {**CHAT, "model": "nope"})
        assert r.status == 404
        assert_openai_error(await r.json(), "model_not_found")


async def test_unrouted_requests_get_json_errors_and_the_request_id(proxy_factory):
    """No middleware: the catch-all route answers the proxy's own paths with 404/405 (also on a path
    with a variable part) and relays the others, echoing the request id like every other answer."""
    async with proxy_factory() as h:
        for method, path, status, code in [
            ("POST", "/v1/agents/a1", 405, "method_not_allowed"),
            ("PUT", "/admin/replicas/r0/drain", 405, "method_not_allowed"),
            ("GET", "/admin/nothing", 404, "not_found"),
            ("GET", "/", 404, None),
            ("GET", "/v1/models/extra", 404, None),
            ("GET", "/%0A", 404, None),  # a newline in the decoded path (found by the fuzz test)
            ("GET", "/v1/%0D%0Ax", 404, None),
        ]:
            r = await h.session.request(method, h.url + path, headers={"X-Request-Id": "req-123"})
            assert r.status == status, (method, path)
            if code is None:  # relayed: the engine's own answer
                assert r.headers["x-concurproxy-replica"] == "r0", (method, path)
            else:
                assert_openai_error(await r.json(), code)
            assert r.headers["X-Request-Id"] == "req-123"
        r = await h.session.get(h.url + "/health", headers={"X-Request-Id": "req-456"})
        assert r.status == 200 and r.headers["X-Request-Id"] == "req-456"


@pytest.mark.parametrize("size", [100, 400_000])  # the stub takes bodies up to 1 MB
async def test_compressed_body_is_read_whole(proxy_factory, size):
    """The body is taken from the buffer when it has all arrived (decoded by then), else read."""
    import gzip

    body = {**CHAT, "messages": [{"role": "user", "content": "w " * size}]}
    async with proxy_factory(listen={"max_body_bytes": 16_000_000}) as h:
        r = await h.session.post(
            h.url + "/v1/chat/completions",
            data=gzip.compress(json.dumps(body).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert r.status == 200, await r.text()
        assert len(h.stubs[0].seen[-1]["messages"][0]["content"]) == 2 * size


async def test_body_over_limit_is_413(proxy_factory):
    async with proxy_factory(listen={"max_body_bytes": 4096}) as h:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 10000}]}
        r = await h.post("/v1/chat/completions", big)
        assert r.status == 413
        assert_openai_error(await r.json(), "request_too_large")


async def test_dead_replica_is_skipped_by_retry_and_taken_out(proxy_factory):
    bad, good = StubBehaviour(status=503), StubBehaviour()
    async with proxy_factory(behaviours=[bad, good], health={"unhealthy_after": 1, "interval_s": 60}) as h:
        for _ in range(4):
            r = await h.post("/v1/chat/completions", CHAT)
            assert r.status == 200
            assert r.headers["x-concurproxy-replica"] == "r1"
        assert len(bad.seen) <= 1  # tried at most once, then out of rotation


async def test_connect_failure_retries_then_502_with_retry_after(proxy_factory):
    async with proxy_factory(
        behaviours=[StubBehaviour(status=502), StubBehaviour(status=502)], health={"interval_s": 60}
    ) as h:
        r = await h.post("/v1/chat/completions", CHAT)
        assert r.status == 502
        assert int(r.headers["Retry-After"]) >= 1
        assert_openai_error(await r.json(), "upstream_unavailable")
        assert sum(len(s.seen) for s in h.stubs) == 2  # one try per replica
        assert h.listener.steps[-1].outcome == "error"


async def test_no_healthy_replica_is_503_without_panic_routing(proxy_factory):
    health = {"interval_s": 60, "panic_threshold": 0}
    async with proxy_factory(behaviours=[StubBehaviour(healthy=False)], health=health) as h:
        # the startup check took the only replica out
        r = await h.post("/v1/chat/completions", CHAT)
        assert r.status == 503 and r.headers["Retry-After"]
        assert_openai_error(await r.json(), "no_healthy_replica")
        assert (await h.session.get(h.url + "/ready")).status == 503


async def test_a_lone_replica_out_of_rotation_still_gets_the_steps(proxy_factory):
    """Panic routing (Envoy's): the only replica's /health fails (a loaded CPU engine answering it late) but it
    serves steps: they go to it instead of 503s, visible on /admin/state and in the metrics; /ready stays 503
    (it tells a load balancer in front that this proxy has no healthy replica)."""
    async with proxy_factory(behaviours=[StubBehaviour(healthy=False)], health={"interval_s": 60}) as h:
        assert not h.components.pool.get("r0").healthy
        for _ in range(2):
            r = await h.post("/v1/chat/completions", CHAT)
            assert r.status == 200, await r.text()
        assert (await h.session.get(h.url + "/ready")).status == 503
        state = await (await h.session.get(h.url + "/admin/state")).json()
        assert state["panic_routing"] == {"active": True, "steps": 2}
        text = await (await h.session.get(h.url + "/metrics")).text()
        assert "concurproxy_upstream_panic 1.0" in text and "concurproxy_upstream_panic_steps_total 2.0" in text


async def test_panic_routing_leaves_out_a_replica_nothing_listens_on(proxy_factory):
    """A refused connection is no flapping check: the replica is down for certain. Its steps are answered 503 at
    once (with panic routing they would wait in its admission queue for pressure data that cannot come)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: connections are refused
        async with proxy_factory(upstream_urls=[dead], health={"interval_s": 60}) as h:
            r0 = h.components.pool.get("r0")
            assert not r0.healthy and r0.unreachable
            r = await h.post("/v1/chat/completions", CHAT)
            assert r.status == 503  # not admission_timeout: it never entered an admission queue
            assert_openai_error(await r.json(), "no_healthy_replica")
            h.components.pool.mark_failure(r0, "health check: TimeoutError")  # a slow check, not a refusal
            assert not r0.unreachable and h.components.pool.available() == [r0]  # panic routing: it may serve


async def test_panic_routing_spares_draining_replicas_and_a_dead_one_still_answers_502(proxy_factory):
    async with proxy_factory(behaviours=[StubBehaviour(healthy=False, status=502)], health={"interval_s": 60}) as h:
        r = await h.post("/v1/chat/completions", CHAT)
        assert r.status == 502 and r.headers["Retry-After"]  # tried (health ignored), failed: the usual answer
        h.components.pool.get("r0").draining = True
        r = await h.post("/v1/chat/completions", CHAT)
        assert r.status == 503
        assert_openai_error(await r.json(), "no_healthy_replica")


async def test_replica_back_in_rotation_after_health_check(proxy_factory):
    stub = StubBehaviour(healthy=False)
    async with proxy_factory(behaviours=[stub], health={"interval_s": 60}) as h:
        assert (await h.session.get(h.url + "/ready")).status == 503
        stub.healthy = True
        await h.components.pool.check_once(h.components.session)
        assert (await h.session.get(h.url + "/ready")).status == 200
        assert (await h.post("/v1/chat/completions", CHAT)).status == 200


async def test_a_reused_connection_closed_unanswered_costs_neither_the_step_nor_the_replica(proxy_factory):
    """The keep-alive race (the engine's timer closes a connection as a step arrives on it): with one
    replica there is nowhere else to go, so the step goes once more on a fresh connection; the replica
    stays in rotation even where one failure would take it out. Seen in CI: a 502 to the client."""
    stub = StubBehaviour(drop_reused=2)
    async with proxy_factory(behaviours=[stub], health={"unhealthy_after": 1, "interval_s": 60}) as h:
        for _ in range(3):
            r = await h.post("/v1/chat/completions", CHAT)
            assert r.status == 200, await r.text()
        assert (stub.drop_reused, len(stub.seen)) == (0, 5)  # 3 steps, 2 of them sent twice
        assert (await h.session.get(h.url + "/ready")).status == 200
        assert h.components.pool.get("r0").consecutive_failures == 0


async def test_an_answer_between_two_failures_keeps_a_replica_in_rotation(proxy_factory):
    """Passive health: failures count only while consecutive. A loaded engine whose /health answered
    late twice, with steps answered in between, is not taken out (it was: every step then got a 503)."""
    async with proxy_factory(health={"unhealthy_after": 2, "interval_s": 60, "panic_threshold": 0}) as h:
        pool = h.components.pool
        r0 = pool.get("r0")
        for _ in range(3):
            pool.mark_failure(r0, "health check: TimeoutError")
            assert (await h.post("/v1/chat/completions", CHAT)).status == 200
        assert r0.healthy and r0.consecutive_failures == 0
        pool.mark_failure(r0, "health check: TimeoutError")
        pool.mark_failure(r0, "health check: TimeoutError")
        assert not r0.healthy  # two in a row still take it out
        assert (await h.post("/v1/chat/completions", CHAT)).status == 503


async def test_first_byte_timeout_is_504(proxy_factory):
    async with proxy_factory(
        behaviours=[StubBehaviour(hang_s=5)], retry={"attempts": 1}, timeouts={"first_byte_s": 0.2}
    ) as h:
        r = await h.post("/v1/chat/completions", CHAT)
        assert r.status == 504
        assert_openai_error(await r.json(), "upstream_timeout")


async def test_mid_stream_upstream_failure_ends_with_error_event(proxy_factory):
    async with proxy_factory(behaviours=[StubBehaviour(cut_after_chunks=2)]) as h:
        r = await h.post("/v1/chat/completions", {**CHAT, "max_tokens": 10, "stream": True})
        assert r.status == 200
        events = [e for e in (await r.text()).split("\n\n") if e]
        assert '"error"' in events[-2] and events[-1] == "data: [DONE]"
        assert h.listener.steps[-1].outcome == "error"


async def test_idle_stream_times_out_with_error_event(proxy_factory):
    stub = StubBehaviour(chunks=3, chunk_delay_s=2.0)
    async with proxy_factory(behaviours=[stub], timeouts={"idle_s": 0.2}) as h:
        r = await h.post("/v1/chat/completions", {**CHAT, "stream": True})
        events = [e for e in (await r.text()).split("\n\n") if e]
        assert "upstream_timeout" in events[-2]
        assert h.listener.steps[-1].outcome == "timeout"


async def test_openai_client_works_unchanged(proxy_factory):
    import openai

    async with proxy_factory() as h:
        client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="k", max_retries=0)
        try:
            out = await client.chat.completions.create(
                model="stub-model",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=4,
                extra_body={"ignore_eos": True},
            )
            assert out.choices[0].message.content == " tok" * 4 and out.usage.completion_tokens == 4
            stream = await client.chat.completions.create(
                model="stub-model", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
            )
            parts = [c.choices[0].delta.content async for c in stream if c.choices]
            assert "".join(p or "" for p in parts) == " tok" * 3
            comp = await client.completions.create(model="stub-model", prompt="abc", max_tokens=2)
            assert comp.choices[0].text == " tok tok"
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(model="stub-model", messages=[], max_tokens=1)
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
            models = await client.models.list()
            assert [m.id for m in models.data] == ["stub-model"]
        finally:
            await client.close()


def test_openai_sync_client_streams(proxy_factory):
    """The blocking client too (its own thread talks to the proxy running in another loop)."""
    import asyncio
    import threading

    import openai

    result: dict[str, object] = {}
    ready = threading.Event()
    done = threading.Event()

    async def serve() -> None:
        async with proxy_factory() as h:
            result["url"] = h.url
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, done.wait)

    t = threading.Thread(target=lambda: asyncio.run(serve()))
    t.start()
    try:
        assert ready.wait(10)
        client = openai.OpenAI(base_url=f"{result['url']}/v1", api_key="k", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model="stub-model",
                messages=[{"role": "user", "content": "x"}],
                max_tokens=2,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
        client.close()
    finally:
        done.set()
        t.join(10)


__all__ = ["aiohttp"]


async def test_a_client_that_leaves_on_done_has_a_successful_step_with_its_usage(proxy_factory):
    """Many HTTP clients stop reading at ``[DONE]`` and close the connection, while the proxy still waits
    for the engine's end of body: the handler is cancelled then. The client had the whole answer, so
    the step is a success with its usage (admission's footprint and goodput, budgets, metrics), not a
    cancellation (seen in the real-vLLM agent loop: 3 of 80 steps)."""
    held = asyncio.Event()
    stub = StubBehaviour(eof_after=held)
    async with proxy_factory(behaviours=[stub], admission={"controller": "aimd"}) as h:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        r = await h.session.post(h.url + "/v1/chat/completions", json=body, headers={"X-Agent-Id": "a1"})
        got = b""
        while b"data: [DONE]" not in got:
            got += await r.content.readany()
        r.close()  # the connection goes, the engine's body has not ended

        async def ended() -> bool:
            return bool(h.listener.steps)

        await wait_until(ended, "the step to end")
        held.set()
        step = h.listener.steps[-1]
        assert step.outcome == "success" and step.usage is not None and step.usage.completion_tokens == 3
        state = (await (await h.session.get(h.url + "/admin/state")).json())["admission"]["replicas"]["r0"]
        assert state["counters"]["ended"] == {"success": 1}


async def test_stream_cut_before_its_first_event_is_retried_elsewhere(proxy_factory):
    # Response headers reach the client with the first event, so a replica that dies during the
    # prefill (headers sent, no event yet) costs a retry, not the step.
    cut, good = StubBehaviour(cut_after_chunks=0), StubBehaviour()
    async with proxy_factory(behaviours=[cut, good], health={"interval_s": 60, "unhealthy_after": 5}) as h:
        for i in range(4):
            r = await h.post("/v1/chat/completions", {**CHAT, "stream": True}, headers={"X-Agent-Id": f"a{i}"})
            assert r.status == 200
            assert r.headers["x-concurproxy-replica"] == "r1"
            events = [e for e in (await r.text()).split("\n\n") if e]
            assert events[-1] == "data: [DONE]" and not any('"error"' in e for e in events)
        assert cut.seen  # some steps went to the cutting replica first
        reg = h.components.metrics.registry
        retries = reg.get_sample_value("concurproxy_upstream_retries_total", {"replica": "r0", "kind": "connect"})
        assert retries == len(cut.seen)
        assert all(s.outcome == "success" for s in h.listener.steps)


async def test_stream_cut_before_its_first_event_without_a_survivor_is_a_plain_502(proxy_factory):
    async with proxy_factory(behaviours=[StubBehaviour(cut_after_chunks=0)], retry={"attempts": 1}) as h:
        r = await h.post("/v1/chat/completions", {**CHAT, "stream": True})
        assert r.status == 502  # not a 200 stream: nothing had been sent, so the client gets a real status
        assert_openai_error(await r.json(), "upstream_unavailable")
