"""The worker publishes KV cache events like vLLM, and they make the router's index exact.

Engine level: replaying the engine's events (through the wire format) into a
:class:`KvEventIndex` gives, for every prompt at every moment, exactly the prefix the engine's
own cache would reuse. Process level: ``concurproxy worker --kv-events-config`` publishes over
ZMQ and a proxy subscribed to it sees the worker's real cache, evictions included.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys

import aiohttp

from concurproxy.config import load_policy
from concurproxy.kvevents import KvEventIndex, decode_frames
from concurproxy.kvevents.encode import encode_batch, frames
from concurproxy.routing.prefix import hash_text, hash_tokens
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.tokens import prompt_text, tokenize
from concurproxy.worker.engine import Engine
from concurproxy.worker.engine.hashing import block_hashes
from concurproxy.worker.kvpublish import KvEventsConfig
from concurproxy.worker.profile import load_profile

BT = 16


def test_engine_events_replayed_into_the_index_match_the_engine_cache_exactly() -> None:
    engine = Engine(load_profile("tiny").engine_config(seed=3))  # 64 blocks of 16: evicts constantly
    engine.enable_kv_events()
    index = KvEventIndex(BT)
    rng = random.Random(7)
    systems = [tokenize(" ".join(f"sys{s}w{i}" for i in range(rng.randint(20, 90)))) for s in range(4)]
    prompts: list[list[int]] = []
    now, seq, checked = 0.0, 0, 0
    for r in range(60):
        prompt = systems[r % 4] + tokenize(" ".join(f"r{r}t{i}" for i in range(rng.randint(5, 200))))
        prompts.append(prompt)
        engine.add_request(f"q{r}", prompt, max_tokens=rng.randint(4, 40), arrival=now)
        for _ in range(rng.randint(1, 6)):
            if not engine.has_work():
                break
            now = engine.step(now).end
            events = engine.drain_kv_events()
            if events:  # through the wire format, as the publisher sends it
                msg = decode_frames(frames(b"", seq, encode_batch(now, events)))
                index.apply("w0", msg.seq, msg.batch)
                seq += 1
            for p in prompts[-12:]:
                engine_hit = len(engine.pool.lookup(block_hashes(p, BT)))
                assert index.match(hash_tokens(p, BT), now).get("w0", 0) == engine_hit
                checked += 1
    assert engine.pool.evictions > 100 and checked > 500  # the property was tested under eviction
    assert index.stats["w0"].removed > 0 and not index.stats["w0"].dropped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_worker(http: int, zport: int) -> subprocess.Popen[bytes]:
    cfg = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://127.0.0.1:{zport}"}
    return subprocess.Popen(
        [sys.executable, "-m", "concurproxy", "worker", "--port", str(http), "--kv-events-config", json.dumps(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CONCURPROXY_LOG_LEVEL": "WARNING"},
    )


async def test_worker_process_publishes_and_the_proxy_index_follows_its_cache() -> None:
    http, zport = _free_port(), _free_port()
    worker = _spawn_worker(http, zport)
    try:
        url = f"http://127.0.0.1:{http}"
        policy = load_policy(
            overrides={
                "upstreams": [{"url": url, "name": "w0", "kv_events": {"endpoint": f"tcp://127.0.0.1:{zport}"}}],
                "admission": {"controller": "none"},
                "telemetry": {"log_level": "WARNING"},
            },
            env={},
        )
        async with aiohttp.ClientSession() as s:
            for _ in range(600):  # start-up (bounded)
                try:
                    async with s.get(url + "/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            components = build_components(policy)
            async with running_proxy(policy, components) as proxy:
                feed = components.kv_events
                assert feed is not None
                router = components.router.router  # type: ignore[attr-defined]

                async def step(agent: str, words: int) -> list[int]:
                    body = {
                        "model": "concurworker-tiny",
                        "messages": [{"role": "user", "content": " ".join(f"{agent}w{i}" for i in range(words))}],
                        "max_tokens": 4,
                    }
                    r = await s.post(proxy + "/v1/chat/completions", json=body, headers={"X-Agent-Id": agent})
                    assert r.status == 200, await r.text()
                    return hash_text(prompt_text(body), BT)

                async def exact_match(keys: list[int], want: int) -> None:
                    for _ in range(200):  # events arrive asynchronously after the answer (bounded)
                        if feed.is_exact("w0") and router.locator.match(keys, 0.0).get("w0", 0) == want:
                            return
                        await asyncio.sleep(0.02)
                    raise AssertionError((feed.state(), router.locator.match(keys, 0.0)))

                first = await step("a", 300)  # 300+ tokens: 18 full blocks, all cached by the engine
                await exact_match(first, len(first))
                for k in range(6):  # 6 × 400 tokens through a 1024-token cache: "a"'s blocks are evicted
                    await step(f"b{k}", 400)
                await exact_match(first, 0)
                assert router.index.match_one("w0", first, 0.0) == len(first)  # the approximate index would guess
                state = (await (await s.get(proxy + "/admin/state")).json())["kv_events"]["w0"]
                assert state["synced"] and state["gaps"] == 0 and state["blocks"] > 0 and not state["dropped"]
    finally:
        worker.kill()
        worker.wait(10)


def test_kv_events_config_takes_vllms_json() -> None:
    assert KvEventsConfig.from_json('{"enable_kv_cache_events": false}') is None
    cfg = KvEventsConfig.from_json(
        '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558"}'
    )
    assert cfg is not None and cfg.for_replica(2).endpoint == "tcp://*:5559"
    assert cfg.for_replica(2).replay_endpoint == "tcp://*:5560"


async def test_late_subscriber_replays_from_zero_and_only_then_counts_as_exact() -> None:
    from concurproxy.kvevents.decode import BlockStored
    from concurproxy.kvevents.subscriber import KvEventSubscriber
    from concurproxy.worker.kvpublish import KvEventPublisher

    tokens = tokenize(" ".join(f"t{i}" for i in range(64)))
    stored = [
        BlockStored((k,), k - 1 if k else None, tuple(tokens[k * BT : (k + 1) * BT]), BT, medium="GPU")
        for k in range(4)
    ]
    pub_port, replay_port = _free_port(), _free_port()
    publisher = KvEventPublisher(KvEventsConfig(f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{replay_port}"))
    await publisher.start()
    try:
        for k in range(3):  # published before anyone listens: lost on PUB, kept for replay
            publisher.publish(float(k), [stored[k]])
        full = KvEventIndex(BT)
        no_replay = KvEventIndex(BT)
        with_replay = KvEventSubscriber("w0", f"tcp://127.0.0.1:{pub_port}", full,
                                        replay_endpoint=f"tcp://127.0.0.1:{replay_port}")  # fmt: skip
        without = KvEventSubscriber("w0", f"tcp://127.0.0.1:{pub_port}", no_replay)
        async with with_replay, without:
            keys = hash_tokens(tokens, BT)
            for _ in range(200):  # resend the newest batch until both subscriptions are live (bounded)
                publisher.publish(3.0, [stored[3]])  # a duplicate store changes nothing
                await asyncio.sleep(0.02)
                if full.blocks("w0") == 4 and without.stats.messages:
                    break
            assert with_replay.synced and full.match(keys, 0.0) == {"w0": 4}
            assert with_replay.stats.replayed >= 3
            assert (
                without.stats.messages and not without.synced
            )  # joined late, no replay: its index is partial, routing stays approximate
    finally:
        await publisher.stop()
