"""Soak: steady multi-agent load through a real proxy to bundled workers, watching for leaks.

``python -m benchmarks.soak --duration 600`` starts two bundled workers
(`concurproxy worker --profile tiny`) and `concurproxy serve` in front of them
(all subprocesses on free loopback ports, killed at the end), then runs a
closed loop of ``--agents`` agents: each agent does 2-6 steps (mixed streamed /
non-streamed, the last one sends ``X-Agent-Done``), then starts over as a new
agent. After a warm-up it samples the proxy's RSS and open fds from /proc, and
at the end it reads ``/admin/state`` once the load has stopped.

Verdict: zero unexplained errors (503/429 with Retry-After are the admission
controller throttling, counted apart), RSS growth < 5% after warm-up, zero
leaked slots (running steps, waiting entries, in-flight counts all back to 0).
Exit status 0 when all three hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

MODEL = "concurworker-tiny"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Tally:
    requests: int = 0
    ok: int = 0
    throttled: int = 0  # 503/429 with Retry-After: admission or rate limit doing its job
    errors: Counter[str] = field(default_factory=Counter)  # unexplained: anything else
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss, fds)


async def _wait_http(url: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _step(s: aiohttp.ClientSession, base: str, agent: str, last: bool, stream: bool, t: Tally) -> None:
    headers = {"X-Agent-Id": agent, "X-Task-Id": agent, "X-Agent-Role": random.choice(["planner", "coder"])}
    if last:
        headers["X-Agent-Done"] = "1"
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "soak " * random.randint(5, 60)}],
        "max_tokens": random.randint(4, 48),
        "stream": stream,
    }
    t.requests += 1
    try:
        async with s.post(base + "/v1/chat/completions", json=body, headers=headers) as r:
            data = await r.read()
            if r.status == 200 and (not stream or data.rstrip().endswith(b"data: [DONE]")):
                if stream and b'"error"' in data:
                    t.errors["stream error event"] += 1
                else:
                    t.ok += 1
            elif r.status in (429, 503) and r.headers.get("Retry-After"):
                t.throttled += 1
                await asyncio.sleep(min(float(r.headers["Retry-After"]), 2.0))
            else:
                t.errors[f"http {r.status}"] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        t.errors[type(exc).__name__] += 1


async def _agent_loop(base: str, idx: int, stop: asyncio.Event, t: Tally) -> None:
    n = 0
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        while not stop.is_set():
            n += 1
            agent = f"soak-{idx}-{n}"
            steps = random.randint(2, 6)
            for i in range(steps):
                if stop.is_set():
                    break
                await _step(s, base, agent, i == steps - 1, random.random() < 0.5, t)


async def _leaks(base: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as s, s.get(base + "/admin/state") as r:
        st = await r.json()
    adm = st["admission"]
    reps = adm.get("replicas", {}).values()
    return {
        "running_steps": sum(r["running_steps"] for r in reps),
        "waiting": adm.get("waiting_steps", 0) + sum(r["waiting"] for r in reps),
        "in_flight": sum(r["in_flight"] for r in st["replicas"]),
    }


def _spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONCURPROXY_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


async def soak(duration_s: float, agents: int, warmup_s: float, workdir: Path) -> int:
    wports, pport = [_free_port(), _free_port()], _free_port()
    cfg = workdir / "soak-policy.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "upstreams": [{"url": f"http://127.0.0.1:{p}", "name": f"w{i}"} for i, p in enumerate(wports)],
                "roles": {"planner": {"priority": "high"}, "coder": {"tokens_per_min": 10_000_000}},
                "telemetry": {"log_level": "WARNING"},
            }
        )
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in wports:
            cmd = [sys.executable, "-m", "concurproxy", "worker", "--profile", "tiny", "--port", str(port)]
            procs.append(_spawn(cmd))
        for port in wports:
            await _wait_http(f"http://127.0.0.1:{port}/v1/models")
        cmd = [sys.executable, "-m", "concurproxy", "serve", "--config", str(cfg), "--port", str(pport)]
        proxy = _spawn(cmd)
        procs.append(proxy)
        base = f"http://127.0.0.1:{pport}"
        await _wait_http(base + "/ready")
        t, stop = Tally(), asyncio.Event()
        loops = [asyncio.create_task(_agent_loop(base, i, stop, t)) for i in range(agents)]
        t0 = time.monotonic()
        await asyncio.sleep(warmup_s)
        warm = (t.requests, t.ok, t.throttled, sum(t.errors.values()))
        t.samples.append((time.monotonic() - t0, rss_bytes(proxy.pid), open_fds(proxy.pid)))
        print(f"warm-up done after {warmup_s:.0f}s: {warm[0]} requests; sampling every 10 s", flush=True)
        while (elapsed := time.monotonic() - t0) < duration_s:
            await asyncio.sleep(min(10.0, duration_s - elapsed))
            t.samples.append((time.monotonic() - t0, rss_bytes(proxy.pid), open_fds(proxy.pid)))
            _, rss, fds = t.samples[-1]
            print(
                f"  t={t.samples[-1][0]:6.0f}s requests={t.requests} ok={t.ok} throttled={t.throttled} "
                f"errors={sum(t.errors.values())} rss={rss / 2**20:.1f}MiB fds={fds}",
                flush=True,
            )
        stop.set()
        await asyncio.gather(*loops)
        await asyncio.sleep(1.0)  # let the proxy finish its bookkeeping
        leaks = await _leaks(base)
        rss0, rss1 = t.samples[0][1], t.samples[-1][1]
        fds0, fds1 = t.samples[0][2], t.samples[-1][2]
        growth = (rss1 - rss0) / rss0
        n_err = sum(t.errors.values())
        print(
            f"soak {duration_s:.0f}s, {agents} agents, 2 tiny workers: requests={t.requests} ok={t.ok} "
            f"throttled={t.throttled} ({t.requests / duration_s:.1f} req/s) unexplained_errors={n_err} "
            f"{dict(t.errors) if n_err else ''}"
        )
        print(
            f"proxy RSS after warm-up {rss0 / 2**20:.1f} MiB -> end {rss1 / 2**20:.1f} MiB ({growth:+.1%}); "
            f"max {max(s[1] for s in t.samples) / 2**20:.1f} MiB; open fds {fds0} -> {fds1}; leaked {leaks}"
        )
        ok = n_err == 0 and growth < 0.05 and not any(leaks.values())
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load, warm-up included (default 600)")
    ap.add_argument("--agents", type=int, default=16, help="concurrent closed-loop agents (default 16)")
    ap.add_argument("--warmup", type=float, help="seconds before the first RSS sample (default: 10%% of duration)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    random.seed(args.seed)
    warmup = args.warmup if args.warmup is not None else min(60.0, max(5.0, args.duration * 0.1))
    with tempfile.TemporaryDirectory(prefix="concurproxy-soak-") as d:
        return asyncio.run(soak(args.duration, args.agents, warmup, Path(d)))


if __name__ == "__main__":
    sys.exit(main())
