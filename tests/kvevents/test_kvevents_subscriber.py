"""The async subscriber against real ZMQ sockets on 127.0.0.1 (XPUB publisher, ROUTER replay)."""

import asyncio
from collections.abc import AsyncIterator

import msgpack
import pytest
import zmq
import zmq.asyncio

from concurproxy.kvevents import KvEventIndex, KvMessage
from concurproxy.kvevents.subscriber import KvEventSubscriber
from concurproxy.routing.prefix import hash_tokens

TOK = list(range(2000, 2064))
KEYS = hash_tokens(TOK, 16)


def stored(hashes: list[int], parent: int | None, tokens: list[int]) -> bytes:
    return msgpack.packb([1.0, [["BlockStored", hashes, parent, tokens, 16, None, "GPU"]], 0])


def frames(seq: int, payload: bytes) -> list[bytes]:
    return [b"kv", seq.to_bytes(8, "big"), payload]


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.cond = asyncio.Condition()

    def __call__(self, replica: str, msg: KvMessage) -> None:
        self.n += 1
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(5):
            async with self.cond:
                await self.cond.wait_for(lambda: self.n >= n)


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.destroy(linger=0)


async def publisher(ctx: zmq.asyncio.Context) -> tuple[zmq.asyncio.Socket, str]:
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    return pub, f"tcp://127.0.0.1:{port}"


async def test_stream_builds_the_exact_index(ctx: zmq.asyncio.Context) -> None:
    pub, url = await publisher(ctx)
    idx, seen = KvEventIndex(16), Counter()
    async with KvEventSubscriber("r0", url, idx, context=ctx, on_message=seen) as sub:
        await asyncio.wait_for(pub.recv(), 5)  # the subscription arrived: no slow-joiner loss
        assert not sub.synced
        await pub.send_multipart(frames(0, stored([1, 2], None, TOK[:32])))
        await pub.send_multipart(frames(1, stored([3], 2, TOK[32:48])))
        await pub.send_multipart([b"kv", b"bad", b"x"])  # counted, not fatal
        await pub.send_multipart(frames(2, msgpack.packb([1.0, [["BlockRemoved", [3], "GPU"]]])))
        await seen.wait_for(3)
        assert sub.synced and sub.stats.decode_errors == 1 and sub.stats.gaps == 0
        assert idx.match(KEYS, 0.0) == {"r0": 2}
    assert not sub.synced
    pub.close(linger=0)


async def test_gap_without_replay_forgets_the_replica(ctx: zmq.asyncio.Context) -> None:
    pub, url = await publisher(ctx)
    idx, seen = KvEventIndex(16), Counter()
    async with KvEventSubscriber("r0", url, idx, context=ctx, on_message=seen) as sub:
        await asyncio.wait_for(pub.recv(), 5)
        await pub.send_multipart(frames(0, stored([1, 2], None, TOK[:32])))
        await pub.send_multipart(frames(3, stored([9], None, TOK[:16])))  # 1 and 2 lost
        await seen.wait_for(2)
        assert sub.stats.gaps == 1 and idx.stats["r0"].gaps == 1
        assert idx.match(KEYS, 0.0) == {"r0": 1}  # only what came after the gap
    pub.close(linger=0)


@pytest.mark.parametrize("topic", [None, b"kv"], ids=["seq-payload", "vllm-0.32-topic-seq-payload"])
async def test_gap_is_filled_from_the_replay_socket(ctx: zmq.asyncio.Context, topic: bytes | None) -> None:
    """Both reply shapes: [b"", seq, payload] (older vLLM, the bundled worker) and vLLM 0.32's
    [b"", topic, seq, payload] (its end marker: [b"", b"", -1, b""])."""
    pub, url = await publisher(ctx)
    head = [b""] if topic is None else [b"", topic]
    end = [b""] if topic is None else [b"", b""]
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    rport = router.bind_to_random_port("tcp://127.0.0.1")
    buffer = {1: stored([3], 2, TOK[32:48]), 2: stored([4], 3, TOK[48:64])}

    async def serve_replay() -> None:
        ident, _empty, start = await router.recv_multipart()
        for seq in sorted(buffer):
            if seq >= int.from_bytes(start, "big"):
                await router.send_multipart([ident, *head, seq.to_bytes(8, "big"), buffer[seq]])
        await router.send_multipart([ident, *end, (-1).to_bytes(8, "big", signed=True), b""])

    idx, seen = KvEventIndex(16), Counter()
    server = asyncio.create_task(serve_replay())
    try:
        async with KvEventSubscriber(
            "r0", url, idx, context=ctx, on_message=seen, replay_endpoint=f"tcp://127.0.0.1:{rport}"
        ) as sub:
            await asyncio.wait_for(pub.recv(), 5)
            await pub.send_multipart(frames(0, stored([1, 2], None, TOK[:32])))
            await seen.wait_for(1)
            await pub.send_multipart(frames(3, msgpack.packb([1.0, [], 0])))  # 1, 2 missed
            await seen.wait_for(4)
            assert sub.stats.gaps == 1 and sub.stats.replayed == 2 and sub.stats.replay_failures == 0
            assert idx.stats["r0"].gaps == 0
            assert idx.match(KEYS, 0.0) == {"r0": 4}
        await asyncio.wait_for(server, 5)
    finally:
        server.cancel()
        router.close(linger=0)
        pub.close(linger=0)
