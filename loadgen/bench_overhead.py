"""Per-step overhead of the proxy: the same load direct to a stub upstream and through the proxy.

    python -m loadgen.bench_overhead [--duration 5] [--out overhead.json]

Layout on a 2-core machine: the proxy runs alone on CPU 0 (``taskset``); the
stub upstream and the load client share CPU 1. Both paths are measured in the
same run, alternating, so the ratio is meaningful on a noisy machine; absolute
numbers move ±30% between runs.

Prints: added p50/p99 latency at concurrency 1 and 32, requests/s at
concurrency 128 (non-streamed), and added time-to-first-chunk for streamed
answers at concurrency 32. Load comes from ``wrk`` when installed (apt-get
install wrk), otherwise from a Python client (which then caps the req/s figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

BODY = {"model": "stub-model", "messages": [{"role": "user", "content": "hello " * 64}], "max_tokens": 8}
IDENTITY = {"X-Agent-Id": "bench-agent", "X-Task-Id": "bench-task", "X-Agent-Role": "executor"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


@contextmanager
def process(cmd: list[str], health_url: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                import urllib.request

                with urllib.request.urlopen(health_url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{cmd[0:4]} did not start: {err[-2000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


WRK_LUA = """
wrk.method = "POST"
wrk.body   = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
{headers}
"""


def wrk(url: str, connections: int, duration: float, cpu: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        hdrs = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in IDENTITY.items())
        f.write(WRK_LUA.format(body=json.dumps(BODY), headers=hdrs))
        script = f.name
    cmd = [
        *_pin(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        script,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        return float(m.group(1)) * scale

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": float(errors.group(1)) if errors else 0,
    }


async def _py_load(url: str, connections: int, duration: float, stream: bool) -> dict[str, float]:
    lat: list[float] = []
    ttft: list[float] = []
    body = {**BODY, "stream": stream}
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **IDENTITY}
    stop = time.perf_counter() + duration
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with s.post(url, data=payload, headers=headers) as r:
                    if stream:
                        await r.content.readany()
                        ttft.append(time.perf_counter() - t0)
                    await r.read()
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    ttft.sort()

    def q(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")

    return {
        "rps": len(lat) / elapsed,
        "p50_ms": q(lat, 0.5),
        "p99_ms": q(lat, 0.99),
        "ttft_p50_ms": q(ttft, 0.5),
        "ttft_p99_ms": q(ttft, 0.99),
        "ttft_mean_ms": statistics.fmean(ttft) * 1000 if ttft else float("nan"),
    }


def py_load(url: str, connections: int, duration: float, stream: bool = False) -> dict[str, float]:
    try:
        import uvloop

        return uvloop.run(_py_load(url, connections, duration, stream))
    except ImportError:  # pragma: no cover
        return asyncio.run(_py_load(url, connections, duration, stream))


def run(duration: float, policy: str | None) -> dict[str, Any]:
    stub_port, proxy_port, bare_port = free_port(), free_port(), free_port()
    bare_url = f"http://127.0.0.1:{bare_port}"
    stub_url = f"http://127.0.0.1:{stub_port}"
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    py = sys.executable
    stub_cmd = [*_pin(1), py, "-m", "concurproxy.testing.stub_upstream", "--port", str(stub_port)]
    proxy_cmd = [
        *_pin(0),
        py,
        "-m",
        "concurproxy",
        "serve",
        "--upstream",
        stub_url,
        "--port",
        str(proxy_port),
    ]
    if policy:
        proxy_cmd += ["--config", policy]
    env = {**os.environ, "CONCURPROXY_LOG_LEVEL": "WARNING"}
    use_wrk = shutil.which("wrk") is not None
    results: dict[str, Any] = {"load_client": "wrk" if use_wrk else "python-aiohttp", "duration_s": duration}
    bare_cmd = [
        *_pin(0),
        py,
        "-m",
        "loadgen.bare_passthrough",
        "--upstream",
        stub_url,
        "--port",
        str(bare_port),
    ]
    with (
        process(stub_cmd, stub_url + "/health"),
        process(proxy_cmd, proxy_url + "/ready", env=env),
        process(bare_cmd, bare_url + "/ready"),
    ):
        path = "/v1/chat/completions"
        for base in (proxy_url, stub_url, bare_url):
            py_load(base + path, 8, 1.0)  # warm-up: connections, caches
        targets = (("direct", stub_url), ("proxy", proxy_url), ("bare", bare_url))
        for conc in (1, 32, 128):
            for name, base in targets:
                if use_wrk:
                    r = wrk(base + path, conc, duration, cpu=1)
                else:
                    r = py_load(base + path, conc, duration)
                results[f"{name}_c{conc}"] = r
        for name, base in targets:
            results[f"{name}_stream_c32"] = py_load(base + path, 32, duration, stream=True)
    return results


def report(r: dict[str, Any]) -> str:
    lines = [
        f"load client: {r['load_client']}, {r['duration_s']:g}s per point; proxy (and the bare pass-through) "
        f"pinned to CPU 0, stub + client on CPU 1",
        f"{'measure':46} {'direct':>9} {'proxy':>9} {'added':>9} {'bare':>9} {'added':>9}",
    ]
    for conc in (1, 32):
        for m in ("p50_ms", "p99_ms"):
            d, p, b = (r[f"{k}_c{conc}"][m] for k in ("direct", "proxy", "bare"))
            lines.append(
                f"{'latency ' + m[:3] + ' (ms) at concurrency ' + str(conc):46} {d:9.3f} {p:9.3f} "
                f"{p - d:9.3f} {b:9.3f} {b - d:9.3f}"
            )
    d, p, b = (r[f"{k}_c128"]["rps"] for k in ("direct", "proxy", "bare"))
    lines.append(f"{'requests/s at concurrency 128 (non-streamed)':46} {d:9.0f} {p:9.0f} {'':9} {b:9.0f}")
    for m in ("ttft_p50_ms", "ttft_mean_ms"):
        d, p, b = (r[f"{k}_stream_c32"][m] for k in ("direct", "proxy", "bare"))
        lines.append(
            f"{'first chunk ' + m[5:8] + ' (ms), streamed, concurrency 32':46} {d:9.3f} {p:9.3f} "
            f"{p - d:9.3f} {b:9.3f} {b - d:9.3f}"
        )
    lines.append(
        f"proxy/bare throughput ratio at concurrency 128: {r['proxy_c128']['rps'] / r['bare_c128']['rps']:.2f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured point")
    ap.add_argument("--policy", help="policy file for the proxy (default: built-in defaults)")
    ap.add_argument("--out", type=Path, help="write the raw figures as JSON")
    args = ap.parse_args(argv)
    r = run(args.duration, args.policy)
    print(report(r))
    if args.out:
        args.out.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
