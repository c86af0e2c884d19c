"""Per-step overhead of the proxy: the same load direct to a stub upstream and through the proxy.

    python -m benchmarks.overhead [--duration 5] [--out overhead.json]

Layout on a 2-core machine: the proxy runs alone on CPU 0 (``taskset``); the
stub upstream and the load client share CPU 1. Both paths are measured in the
same run, alternating, so the ratio is meaningful on a noisy machine; absolute
numbers move ±30% between runs.

Prints: added p50/p99 latency at concurrency 1 and 32, requests/s at
concurrency 128 (non-streamed) with the CPU time each server spent per request
(read from /proc: robust on a shared machine, where throughput is not), and
added time-to-first-chunk for streamed answers at concurrency 32 in two
settings:

* *saturated*: the stub sends every chunk at once, so 32 back-to-back streams
  keep the single proxy core busy and the figure is mostly queueing;
* *engine-like*: a second stub waits ``PACED_PREFILL_S`` (a prefill), then sends
  ``PACED_TOKENS`` chunks ``PACED_ITL_S`` apart, like an engine decoding; the
  added first-chunk latency there is the per-step overhead an agent sees.

Load comes from ``wrk`` when installed (apt-get install wrk), otherwise from a
Python client (which then caps the req/s figure).
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

MAX_TOKENS = 8
BODY = {"model": "stub-model", "messages": [{"role": "user", "content": "hello " * 64}], "max_tokens": MAX_TOKENS}
PACED_PREFILL_S, PACED_ITL_S, PACED_TOKENS = 0.005, 0.020, 32
IDENTITY = {"X-Agent-Id": "bench-agent", "X-Task-Id": "bench-task", "X-Agent-Role": "executor"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


@contextmanager
def process(  # type: ignore[no-untyped-def]
    cmd: list[str],
    health_url: str,
    env: dict[str, str] | None = None,
    start_timeout_s: float = 60.0,
    stop_timeout_s: float = 10.0,
    capture_stderr: bool = True,
):
    """Run ``cmd`` until the block ends, once ``health_url`` answers 200 (within ``start_timeout_s``: a loaded
    2-core box can take tens of seconds). A process that does not come up is killed, then its stderr (when
    captured) goes into the error. On exit: SIGTERM, ``stop_timeout_s`` to finish (valgrind writes its
    profile then), SIGKILL."""
    import urllib.request

    stderr = subprocess.PIPE if capture_stderr else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(health_url, timeout=1) as r:  # loopback only
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()  # still running (too slow): reading its stderr would wait for it forever
                _, err = proc.communicate(timeout=10)
                text = err.decode(errors="replace")[-2000:] if err else ""
                raise RuntimeError(f"{cmd[0:5]} did not start: {text}")  # within start_timeout_s
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


WRK_LUA = """
wrk.method = "POST"
wrk.body   = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
{headers}
"""


def wrk(url: str, connections: int, duration: float, cpu: int, body: dict[str, Any] | None = None) -> dict[str, float]:
    """``body``: the request to repeat (default: the chat ``BODY``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        hdrs = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in IDENTITY.items())
        f.write(WRK_LUA.format(body=json.dumps(BODY if body is None else body), headers=hdrs))
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
    done = re.search(r"(\d+) requests in", out)
    return {
        "requests": float(done.group(1)) if done else 0.0,
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": float(errors.group(1)) if errors else 0,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _py_load(
    url: str,
    connections: int,
    duration: float,
    stream: bool,
    max_tokens: int,
    spread_s: float,
    base: dict[str, Any] | None = None,
) -> dict[str, float]:
    lat: list[float] = []
    ttft: list[float] = []
    limit = "max_output_tokens" if base is not None and "input" in base else "max_tokens"
    body = {**(BODY if base is None else base), "stream": stream, limit: max_tokens}
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **IDENTITY}
    stop = time.perf_counter() + duration
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker(i: int) -> None:
            # Spread the starts over spread_s so that long streams do not arrive in lockstep bursts.
            await asyncio.sleep(spread_s * i / connections)
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with s.post(url, data=payload, headers=headers) as r:
                    if stream:
                        await r.content.readany()
                        ttft.append(time.perf_counter() - t0)
                    await r.read()
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(connections)))
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


def py_load(
    url: str,
    connections: int,
    duration: float,
    stream: bool = False,
    max_tokens: int = MAX_TOKENS,
    spread_s: float = 0.0,
    body: dict[str, Any] | None = None,
) -> dict[str, float]:
    """``body``: the request to repeat (default: the chat ``BODY``); its output limit is set to ``max_tokens``."""
    try:
        import uvloop

        return uvloop.run(_py_load(url, connections, duration, stream, max_tokens, spread_s, body))
    except ImportError:  # pragma: no cover
        return asyncio.run(_py_load(url, connections, duration, stream, max_tokens, spread_s, body))


def _servers(stub_args: list[str]):  # type: ignore[no-untyped-def]
    """(stub, proxy, bare) commands on free ports, and their base URLs."""
    stub_port, proxy_port, bare_port = free_port(), free_port(), free_port()
    stub, proxy, bare = (f"http://127.0.0.1:{p}" for p in (stub_port, proxy_port, bare_port))
    py = sys.executable
    stub_cmd = [*_pin(1), py, "-m", "concurproxy.testing.stub_upstream", "--port", str(stub_port), *stub_args]
    proxy_cmd = [*_pin(0), py, "-m", "concurproxy", "serve", "--upstream", stub, "--port", str(proxy_port)]
    bare_cmd = [*_pin(0), py, "-m", "benchmarks.bare_passthrough", "--upstream", stub, "--port", str(bare_port)]
    return (stub_cmd, proxy_cmd, bare_cmd), (stub, proxy, bare)


def run(duration: float, policy: str | None) -> dict[str, Any]:
    (stub_cmd, proxy_cmd, bare_cmd), (stub_url, proxy_url, bare_url) = _servers([])
    if policy:
        proxy_cmd += ["--config", policy]
    env = {**os.environ, "CONCURPROXY_LOG_LEVEL": "WARNING"}
    use_wrk = shutil.which("wrk") is not None
    results: dict[str, Any] = {"load_client": "wrk" if use_wrk else "python-aiohttp", "duration_s": duration}
    path = "/v1/chat/completions"
    with (
        process(stub_cmd, stub_url + "/health"),
        process(proxy_cmd, proxy_url + "/ready", env=env) as proxy,
        process(bare_cmd, bare_url + "/ready") as bare,
    ):
        for base in (proxy_url, stub_url, bare_url):
            py_load(base + path, 8, 1.0)  # warm-up: connections, caches
        targets = (("direct", stub_url, None), ("proxy", proxy_url, proxy.pid), ("bare", bare_url, bare.pid))
        for conc in (1, 32, 128):
            for name, base, pid in targets:
                cpu0 = cpu_seconds(pid) if pid else 0.0
                if use_wrk:
                    r = wrk(base + path, conc, duration, cpu=1)
                else:
                    r = py_load(base + path, conc, duration)
                    r["requests"] = r["rps"] * duration
                if pid and r["requests"]:
                    r["cpu_us_per_request"] = (cpu_seconds(pid) - cpu0) / r["requests"] * 1e6
                results[f"{name}_c{conc}"] = r
        for name, base, _ in targets:
            results[f"{name}_stream_c32"] = py_load(base + path, 32, duration, stream=True)
    paced = ["--prefill-s", str(PACED_PREFILL_S), "--chunk-delay-s", str(PACED_ITL_S)]
    (stub_cmd, proxy_cmd, bare_cmd), (stub_url, proxy_url, bare_url) = _servers(paced)
    if policy:
        proxy_cmd += ["--config", policy]
    with (
        process(stub_cmd, stub_url + "/health"),
        process(proxy_cmd, proxy_url + "/ready", env=env),
        process(bare_cmd, bare_url + "/ready"),
    ):
        for name, base in (("direct", stub_url), ("proxy", proxy_url), ("bare", bare_url)):
            py_load(base + path, 4, 1.0, stream=True, max_tokens=2)  # warm-up
            spread = PACED_PREFILL_S + PACED_TOKENS * PACED_ITL_S  # one stream's length: arrivals even
            r = py_load(base + path, 32, max(duration, 3.0), stream=True, max_tokens=PACED_TOKENS, spread_s=spread)
            results[f"{name}_paced_c32"] = r
    return results


def report(r: dict[str, Any]) -> str:
    def row(label: str, d: float, p: float, b: float, fmt: str = "9.3f", added: bool = True) -> str:
        pa, ba = (f"{p - d:{fmt}}", f"{b - d:{fmt}}") if added else ("", "")
        return f"{label:58} {d:{fmt}} {p:{fmt}} {pa:>9} {b:{fmt}} {ba:>9}"

    def three(key: str, m: str) -> tuple[float, float, float]:
        return tuple(r[f"{k}_{key}"].get(m, float("nan")) for k in ("direct", "proxy", "bare"))

    lines = [
        f"load client: {r['load_client']}, {r['duration_s']:g}s per point; proxy (and the bare pass-through) "
        "pinned to CPU 0, stub + client on CPU 1",
        f"{'measure':58} {'direct':>9} {'proxy':>9} {'added':>9} {'bare':>9} {'added':>9}",
    ]
    for conc in (1, 32):
        for m in ("p50_ms", "p99_ms"):
            lines.append(row(f"latency {m[:3]} (ms), concurrency {conc}", *three(f"c{conc}", m)))
    lines.append(row("requests/s, concurrency 128, non-streamed", *three("c128", "rps"), fmt="9.0f", added=False))
    _, p, b = three("c128", "cpu_us_per_request")
    lines.append(f"{'server CPU per request (us), concurrency 128':58} {'':>9} {p:9.1f} {'':>9} {b:9.1f}")
    for m in ("ttft_p50_ms", "ttft_mean_ms"):
        label = f"first chunk {m[5:8]} (ms), streamed, c32, saturated"
        lines.append(row(label, *three("stream_c32", m)))
    for m in ("ttft_p50_ms", "ttft_p99_ms"):
        label = f"first chunk {m[5:8]} (ms), streamed, c32, engine-like"
        lines.append(row(label, *three("paced_c32", m)))
    lines.append(
        f"engine-like: the stub waits {PACED_PREFILL_S * 1000:g} ms, then sends {PACED_TOKENS} chunks "
        f"{PACED_ITL_S * 1000:g} ms apart; saturated: all chunks at once (the figure is mostly queueing)"
    )
    p_rps, b_rps = r["proxy_c128"]["rps"], r["bare_c128"]["rps"]
    p_cpu, b_cpu = r["proxy_c128"].get("cpu_us_per_request"), r["bare_c128"].get("cpu_us_per_request")
    ratio = f"; CPU per request proxy/bare {p_cpu / b_cpu:.2f}" if p_cpu and b_cpu else ""
    lines.append(f"proxy/bare throughput ratio at concurrency 128: {p_rps / b_rps:.2f}{ratio}")
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
