"""Benchmark the shared state against a local redis-server.

    python -m benchmarks.shared_state [--redis-url URL] [--seconds 2] [--agents 16]

Without ``--redis-url`` it starts ``redis-server`` on a free loopback port (no
persistence) and stops it at the end. It prints:

1. the Redis calls themselves: ``claim`` (the one round trip of a step that
   admits an agent new to this instance) and ``sync_once`` (the background
   renewal, off the request path, with 16 shared token buckets and the VTC
   counters of 2 replica queues riding on it), p50/p99 in ms;
2. end to end through in-process proxies in front of one instant stub engine:
   steps/s and mean step latency with the memory backend (1 instance) and the
   Redis backend with 1 and 3 instances (clients spread round-robin over the
   instances, each agent's steps hopping to the next instance at every step:
   the worst case, a lease claim and a hand-over per step), the same with each
   agent staying on one instance ("sticky", a held agent costs no round trip),
   and the latency added per step over the memory backend. Every row has a
   (never exhausted) token budget, so each step reserves and settles one
   bucket, which the Redis rows share across the instances.

Everything (clients, proxies, stub) shares one event loop, so absolute numbers
are a floor set by this process's CPU; compare the rows with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp

from concurproxy.config import load_policy
from concurproxy.config.budgets import FairnessConfig, RoleConfig
from concurproxy.control.budgets import BudgetEngine, BudgetLimits
from concurproxy.control.fairness.base import FairQueue
from concurproxy.control.fairness.vtc import VTCPolicy
from concurproxy.control.types import StepInfo
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.state.config import SharedStateSettings
from concurproxy.state.fleet_sync import BudgetSync, FairnessSync
from concurproxy.state.redis_state import RedisState
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub


@dataclass(frozen=True)
class Row:
    name: str
    steps: int
    seconds: float
    mean_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.steps / self.seconds


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else 0.0


async def bench_calls(url: str, n: int = 2000) -> None:
    st = RedisState(url, SharedStateSettings(instance_id="bench-calls", key_prefix="{cpbench}:"))
    claim: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        await st.claim("r0", f"a{i % 64}", 1 << 20)
        claim.append(time.perf_counter() - t)
    st.held = lambda: {"r0": {f"a{i}" for i in range(64)}, "r1": set()}
    plain = await _time_syncs(st)
    _add_budgets_and_fairness(st)
    shared = await _time_syncs(st)
    await st.stop()
    print(f"claim (1 round trip, Lua):              p50 {_pct(claim, 0.5):.3f} ms  p99 {_pct(claim, 0.99):.3f} ms")
    print(f"sync_once (64 leases, 2 replicas):      p50 {_pct(plain, 0.5):.3f} ms  p99 {_pct(plain, 0.99):.3f} ms")
    print(f"  + 16 token buckets, 2 VTC queues:     p50 {_pct(shared, 0.5):.3f} ms  p99 {_pct(shared, 0.99):.3f} ms")


async def _time_syncs(st: RedisState, n: int = 200) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        await st.sync_once()
        out.append(time.perf_counter() - t)
    return out


def _add_budgets_and_fairness(st: RedisState) -> None:
    """16 buckets in use and 2 VTC queues charged by 16 tenants, riding on the sync pipeline."""
    engine = BudgetEngine(BudgetLimits.from_policy({"default": RoleConfig(tokens_per_min=10**9)}, [], FairnessConfig()))
    st.parts.append(BudgetSync(engine, st, time.monotonic))
    fairness = FairnessSync(st)
    st.parts.append(fairness)
    queues = [fairness.track(lambda _r: FairQueue(VTCPolicy()))(r) for r in ("r0", "r1")]
    for t in range(16):
        step = StepInfo(f"t{t}", "default", "a", "", est_prompt_tokens=100, max_tokens=10)
        engine.check(step, time.monotonic())
        for q in queues:
            q.charge(step, 100, 10, 0.0)


async def bench_proxies(name: str, redis_url: str | None, n: int, seconds: float, agents: int, hop: bool = True) -> Row:
    async with AsyncExitStack() as stack:
        up = await stack.enter_async_context(running_stub(StubBehaviour(chunks=1, record=False)))
        urls = []
        for i in range(n):
            doc: dict[str, object] = {
                "upstreams": [{"url": up, "name": "r0"}],
                "admission": {"controller": "static", "static": {"window": 1 << 20}},
                "roles": {"default": {"tokens_per_min": 10**12}},
            }
            if redis_url:
                doc["state"] = {"backend": "redis", "redis_url": redis_url}
            policy = load_policy(overrides=doc, env={})
            comps = build_components(policy)
            if comps.shared_state is not None:
                comps.shared_state.configure(SharedStateSettings(instance_id=f"bench-{name}-{i}"))
            urls.append(await stack.enter_async_context(running_proxy(policy, comps)))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        lat: list[float] = []
        deadline = time.perf_counter() + seconds

        async def agent(k: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
                t = time.perf_counter()
                async with session.post(
                    urls[(k + i * hop) % n] + "/v1/chat/completions", json=body, headers={"X-Agent-Id": f"a{k}"}
                ) as r:
                    await r.read()
                    assert r.status == 200, (r.status, await r.text())
                lat.append(time.perf_counter() - t)
                i += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(agent(k) for k in range(agents)))
        elapsed = time.perf_counter() - t0
    return Row(name, len(lat), elapsed, statistics.fmean(lat) * 1000, _pct(lat, 0.99))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main_async(args: argparse.Namespace) -> None:
    url = args.redis_url
    await bench_calls(url)
    rows = [await bench_proxies("memory x1", None, 1, args.seconds, args.agents)]
    for n in (1, 3):
        rows.append(await bench_proxies(f"redis x{n}", url, n, args.seconds, args.agents))
    rows.append(await bench_proxies("redis x3 sticky", url, 3, args.seconds, args.agents, hop=False))
    base = rows[0].mean_ms
    print(f"\n{'backend':<17}{'steps/s':>10}{'mean ms':>10}{'p99 ms':>10}{'added ms':>10}")
    for r in rows:
        print(f"{r.name:<17}{r.rate:>10.0f}{r.mean_ms:>10.2f}{r.p99_ms:>10.2f}{r.mean_ms - base:>10.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shared_state", description=__doc__.split("\n")[0])
    p.add_argument("--redis-url", help="an existing Redis (default: start redis-server on a free port)")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--agents", type=int, default=16)
    args = p.parse_args(argv)
    proc = None
    if not args.redis_url:
        binary = shutil.which("redis-server")
        if binary is None:
            p.error("no redis-server on PATH; pass --redis-url")
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        args.redis_url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.3)
    try:
        asyncio.run(main_async(args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
