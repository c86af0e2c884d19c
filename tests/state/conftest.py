"""A real redis-server on a free loopback port (no persistence), always stopped; proxy instances sharing it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from concurproxy.config import load_policy
from concurproxy.config.models import Policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.server.components import Components
from concurproxy.state.config import SharedStateSettings
from concurproxy.state.redis_state import RedisState
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

REDIS = shutil.which("redis-server")


def make_policy(upstreams: list[str], **overrides: Any) -> Policy:
    doc: dict[str, Any] = {"upstreams": [{"url": u, "name": f"r{i}"} for i, u in enumerate(upstreams)]}
    doc.update(overrides)
    return load_policy(overrides=doc, env={})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``start``/``stop`` may be called again mid-test (outage); the port stays the same."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):  # bounded wait for a cross-process effect: the port accepts
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.05):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited at start") from None
                import time

                time.sleep(0.01)
        raise RuntimeError("redis-server did not listen within 2 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if REDIS is None:
        pytest.skip("no redis-server binary (apt-get install redis-server; scripts/test.sh installs it)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


FAST = {
    "lease_s": 1.0,
    "socket_timeout_s": 1.0,
    "sync_interval_s": 0.05,
    "leader_ttl_s": 0.5,
    "window_ttl_s": 1.0,
    "retry_after_s": 0.2,
}


@dataclass
class Instance:
    url: str
    components: Components

    @property
    def state(self) -> RedisState:
        return self.components.shared_state  # type: ignore[no-any-return]


@asynccontextmanager
async def _fleet(
    redis_url: str,
    n_instances: int,
    stubs: list[StubBehaviour],
    settings: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[list[Instance], AsyncExitStack, aiohttp.ClientSession]]:
    """``n_instances`` proxies in this process sharing ``redis_url``, in front of the same stubs."""
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(running_stub(b)) for b in stubs]
        overrides.setdefault("state", {"backend": "redis", "redis_url": redis_url})
        instances = []
        for i in range(n_instances):
            policy = make_policy(urls, **overrides)
            comps = build_components(policy)
            state: RedisState = comps.shared_state
            state.configure(SharedStateSettings(**{**FAST, **(settings or {}), "instance_id": f"proxy-{i}"}))
            url = await stack.enter_async_context(running_proxy(policy, comps))
            instances.append(Instance(url, comps))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield instances, stack, session


async def _eventually(pred: Any, timeout_s: float = 5.0) -> None:
    """Bounded wait for a cross-process effect (Redis, pub/sub); fails the test past ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not pred():  # noqa: ASYNC110 - polls state that another process (Redis) changes
            await asyncio.sleep(0.01)


StepFn = Callable[[Any, str], Awaitable[int]]


@asynccontextmanager
async def _clients(instances: list[Any], step: StepFn, n: int = 4) -> AsyncIterator[list[int]]:
    """``n`` clients, each agent's steps going round-robin over ``instances``, until the block ends;
    yields the statuses so far (a growing list)."""
    statuses: list[int] = []
    stop = asyncio.Event()

    async def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            statuses.append(await step(instances[(k + i) % len(instances)], f"c{k}"))
            i += 1

    tasks = [asyncio.create_task(client(k)) for k in range(n)]
    try:
        yield statuses
    finally:
        stop.set()
        await asyncio.gather(*tasks)


Fleet = Callable[..., AbstractAsyncContextManager[tuple[list[Instance], AsyncExitStack, aiohttp.ClientSession]]]
Eventually = Callable[..., Awaitable[None]]


@pytest.fixture
def fleet() -> Fleet:
    """``async with fleet(redis_url, n, stubs, **policy) as (instances, stack, session)``."""
    return _fleet


@pytest.fixture
def clients() -> Callable[..., AbstractAsyncContextManager[list[int]]]:
    """``async with clients(instances, step, n=4) as statuses``: clients stepping until the block ends."""
    return _clients


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(pred, timeout_s=5)``: bounded wait for a cross-process effect."""
    return _eventually
