"""HTTP server against a real aiohttp client: OpenAI shapes, SSE, usage, errors, /metrics, aborts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from concurproxy.tokens import count_tokens, synth_text
from concurproxy.worker.fleet import Worker, run_fleet, run_workers

CHAT = {
    "model": "any",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there, worker"},
    ],
}


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    async with run_fleet("tiny", 1, time_scale=50.0) as ws:
        yield ws[0]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def sse_events(raw: str) -> list[str]:
    return [line[len("data: ") :] for line in raw.split("\n") if line.startswith("data: ")]


async def test_chat_non_streaming(worker: Worker, http: aiohttp.ClientSession) -> None:
    async with http.post(worker.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 7}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["object"] == "chat.completion" and body["model"] == "concurworker-tiny"
    msg = body["choices"][0]
    assert msg["message"] == {"role": "assistant", "content": synth_text(7)}
    assert msg["finish_reason"] == "length"
    u = body["usage"]
    assert u["completion_tokens"] == 7 and u["total_tokens"] == u["prompt_tokens"] + 7
    assert u["prompt_tokens"] == count_tokens("<system>: be brief\n<user>: hello there, worker\n")


async def test_chat_streaming_with_include_usage(worker: Worker, http: aiohttp.ClientSession) -> None:
    req = {**CHAT, "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(worker.url + "/v1/chat/completions", json=req) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(await r.text())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == synth_text(5)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


async def test_completions_streaming_without_usage_and_non_streaming(
    worker: Worker, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        worker.url + "/v1/completions", json={"prompt": "one two three", "max_tokens": 4, "stream": True}
    ) as r:
        events = sse_events(await r.text())
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == synth_text(4)
    async with http.post(worker.url + "/v1/completions", json={"prompt": [5, 6, 7, 8], "max_tokens": 2}) as r:
        body = await r.json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == synth_text(2)
    assert body["usage"]["prompt_tokens"] == 4


async def test_prefix_cache_shows_in_usage(worker: Worker, http: aiohttp.ClientSession) -> None:
    prompt = " ".join(f"w{i}" for i in range(40))
    for _ in range(2):
        async with http.post(worker.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 1}) as r:
            body = await r.json()
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 32


@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("/v1/chat/completions", b"{not json", None),
        ("/v1/chat/completions", b'{"model": "m"}', "messages"),
        ("/v1/completions", b'{"max_tokens": 3}', "prompt"),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": 0}', "max_tokens"),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": 5000}', None),
        ("/v1/completions", b'{"prompt": "x", "n": 2}', "n"),
    ],
)
async def test_bad_requests_get_openai_errors(
    worker: Worker, http: aiohttp.ClientSession, path: str, payload: bytes, param: str | None
) -> None:
    async with http.post(worker.url + path, data=payload, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        err = (await r.json())["error"]
    assert err["code"] == 400 and err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


async def test_models_and_health(worker: Worker, http: aiohttp.ClientSession) -> None:
    async with http.get(worker.url + "/health") as r:
        assert r.status == 200
    async with http.get(worker.url + "/v1/models") as r:
        data = (await r.json())["data"]
    assert data[0]["id"] == "concurworker-tiny" and data[0]["max_model_len"] == 1024


async def test_metrics_use_vllm_names_and_agree_with_the_engine(worker: Worker, http: aiohttp.ClientSession) -> None:
    for n in (3, 4):
        async with http.post(worker.url + "/v1/completions", json={"prompt": "a b c d e", "max_tokens": n}) as r:
            assert r.status == 200
    async with http.get(worker.url + "/metrics") as r:
        text = await r.text()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    base = (("engine", "0"), ("model_name", "concurworker-tiny"))

    def val(name: str, extra: tuple = ()) -> float:
        return samples[(name, tuple(sorted(base + extra)))]

    s = worker.engine.stats
    assert val("vllm:generation_tokens_total") == s.generation_tokens == 7
    assert val("vllm:prompt_tokens_total") == s.prompt_tokens == 10
    assert val("vllm:prefix_cache_queries_total") == s.prefix_queries
    assert val("vllm:prefix_cache_hits_total") == s.prefix_hits
    assert val("vllm:num_preemptions_total") == 0
    assert val("vllm:request_success_total", (("finished_reason", "length"),)) == 2
    assert val("vllm:num_requests_running") == 0 and val("vllm:num_requests_waiting") == 0
    assert 0.0 <= val("vllm:kv_cache_usage_perc") <= 1.0
    assert val("vllm:time_to_first_token_seconds_count") == 2
    assert val("vllm:e2e_request_latency_seconds_count") == 2
    assert val("vllm:request_queue_time_seconds_count") == 2
    assert val("concurworker_recomputed_prefill_tokens_total") == 0
    assert val("concurworker_host_lag_seconds_total") == worker.driver.lag_s  # the driver's, read at scrape time
    info = [k for k in samples if k[0] == "vllm:cache_config_info"]
    labels = dict(info[0][1])
    assert labels["block_size"] == "16" and labels["num_gpu_blocks"] == "64"
    assert labels["enable_prefix_caching"] == "True"


async def test_client_disconnect_aborts_the_request(worker: Worker, http: aiohttp.ClientSession) -> None:
    req = {"prompt": "x y z", "max_tokens": 900, "stream": True}
    async with http.post(worker.url + "/v1/completions", json=req) as r:
        await r.content.readline()  # the first chunk arrived: the request is running
        assert worker.engine.num_running == 1
    # response closed early: the server notices and aborts in the engine
    for _ in range(500):
        if worker.engine.stats.finished["abort"] == 1:
            break
        await asyncio.sleep(0.01)
    assert worker.engine.stats.finished["abort"] == 1
    assert worker.engine.pool.num_used == 0 and not worker.engine.has_work()


async def test_run_workers_starts_replicas_on_distinct_ports() -> None:
    async with run_workers("tiny", 3, time_scale=50.0) as urls, aiohttp.ClientSession() as http:
        assert len(set(urls)) == 3
        for u in urls:
            async with http.get(u + "/health") as r:
                assert r.status == 200


async def test_concurrent_requests_past_capacity_preempt_and_all_complete() -> None:
    async with run_fleet("tiny", 1, time_scale=100.0) as [w], aiohttp.ClientSession() as http:

        async def one(i: int) -> str:
            prompt = " ".join(f"a{i}w{j}" for j in range(200))
            req = {"prompt": prompt, "max_tokens": 150, "stream": True}
            async with http.post(w.url + "/v1/completions", json=req) as r:
                assert r.status == 200
                chunks = [json.loads(e) for e in sse_events(await r.text())[:-1]]
            return "".join(c["choices"][0]["text"] for c in chunks)

        texts = await asyncio.gather(*(one(i) for i in range(8)))
        assert all(t == synth_text(150) for t in texts)
        s = w.engine.stats
        assert s.preemptions > 0 and s.recomputed_prefill_tokens >= 0
        assert s.finished["length"] == 8 and s.generation_tokens == 8 * 150
        assert w.engine.pool.num_used == 0


async def test_non_streaming_client_gone_aborts(worker: Worker, http: aiohttp.ClientSession) -> None:
    async def call() -> None:
        body = {"prompt": "p q r", "max_tokens": 1000}
        async with http.post(worker.url + "/v1/completions", json=body) as r:
            await r.read()

    task = asyncio.create_task(call())
    for _ in range(500):
        if worker.engine.num_running == 1:
            break
        await asyncio.sleep(0.01)
    assert worker.engine.num_running == 1
    task.cancel()  # the client goes away mid-generation
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):
        if worker.engine.stats.finished["abort"] == 1:
            break
        await asyncio.sleep(0.01)
    assert worker.engine.stats.finished["abort"] == 1 and not worker.engine.has_work()


async def test_legacy_metric_names_on_request() -> None:
    async with run_fleet("tiny", 1, legacy_metric_names=True) as [w], aiohttp.ClientSession() as http:
        async with http.get(w.url + "/metrics") as r:
            names = {s.name for f in text_string_to_metric_families(await r.text()) for s in f.samples}
    assert {
        "vllm:gpu_cache_usage_perc",
        "vllm:gpu_prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_hits_total",
        "vllm:kv_cache_usage_perc",
    } <= names


async def test_engine_crash_ends_pending_requests_and_refuses_new_ones(
    worker: Worker,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(now: float) -> None:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(worker.engine, "step", broken)
    async with http.post(worker.url + "/v1/completions", json={"prompt": "a b", "max_tokens": 3}) as r:
        body = await r.json()
    assert r.status == 200 and body["choices"][0]["finish_reason"] == "abort"
    async with http.post(worker.url + "/v1/completions", json={"prompt": "a b", "max_tokens": 3}) as r:
        assert r.status == 500 and "engine crashed" in (await r.json())["error"]["message"]
    assert "engine stepping task crashed" in caplog.text


async def test_priority_field_follows_the_scheduling_policy(http: aiohttp.ClientSession) -> None:
    """As vLLM: a non-zero 'priority' is a 400 under fcfs and is queued under --scheduling-policy priority."""
    async with (
        run_fleet("tiny", 1, time_scale=50.0) as (fcfs,),
        run_fleet("tiny", 1, time_scale=50.0, scheduling_policy="priority") as (prio,),
    ):
        url = "/v1/chat/completions"
        async with http.post(fcfs.url + url, json={**CHAT, "max_tokens": 2, "priority": 0}) as r:
            assert r.status == 200
        async with http.post(fcfs.url + url, json={**CHAT, "max_tokens": 2, "priority": 2}) as r:
            assert r.status == 400
            assert "Priority scheduling is not enabled" in (await r.json())["error"]["message"]
        async with http.post(prio.url + url, json={**CHAT, "max_tokens": 2, "priority": -3}) as r:
            assert r.status == 200
        async with http.post(prio.url + url, json={**CHAT, "max_tokens": 2, "priority": "high"}) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "priority"
        assert prio.engine.config.scheduling_policy == "priority"
        assert prio.engine.stats.requests_added == 1


async def test_first_stream_event_waits_for_the_first_token(http: aiohttp.ClientSession) -> None:
    """As vLLM: no SSE event (not even the role chunk) before the engine produced the first token,
    so time-to-first-event measured by clients and the proxy is the engine's TTFT."""
    async with run_fleet("tiny", 1, time_scale=1e-3) as (w,):  # a first step of ms takes seconds of wall time
        body = {**CHAT, "model": w.served_model, "max_tokens": 2, "stream": True}
        async with http.post(w.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r.content.readline(), timeout=0.3)
