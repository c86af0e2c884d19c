"""Per-step CPU of the proxy for each admitted API, chat as the reference, measured in one run.

    python -m benchmarks.api_overhead [--duration 3] [--rounds 3] [--out apis.json]

One stub upstream (CPU 1) and one proxy (CPU 0, default policy) serve the same
conversation as a chat, a Responses and a Messages step (a 64-word user turn,
``MAX_TOKENS`` output tokens, the benchmark's identity headers). Each round
drives every API in turn (the order rotates per round, so drift of a shared
machine spreads over all three): non-streamed at concurrency 32 with ``wrk``
(or the Python client), then streamed at concurrency 16 with the Python client.
The figure is the proxy process's CPU time per step, read from /proc: robust on
a machine whose neighbours move throughput by ±30%. Printed: the median per API
and its ratio to chat. The issue's bar: Responses and Messages within 10% of chat.

A streamed Responses step relays more events than a chat step for the same
tokens (``response.created`` … ``response.completed``: 8 more for 8 tokens) and a
Messages step 6 more; those events are part of the API, so they are in the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.overhead import BODY, MAX_TOKENS, _pin, cpu_seconds, free_port, process, py_load, wrk

TURN = BODY["messages"]
APIS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", BODY),
    "responses": ("/v1/responses", {"model": "stub-model", "input": TURN, "max_output_tokens": MAX_TOKENS}),
    "messages": ("/v1/messages", {"model": "stub-model", "messages": TURN, "max_tokens": MAX_TOKENS}),
}


def _cpu_per_step(pid: int, load: Any) -> tuple[float, float]:
    """Run ``load()`` (returns its figures with ``requests``): the proxy's CPU µs per request it served,
    and the requests per second."""
    cpu0 = cpu_seconds(pid)
    r = load()
    return (cpu_seconds(pid) - cpu0) / max(1.0, r["requests"]) * 1e6, r["rps"]


def run(duration: float, rounds: int, policy: str | None) -> dict[str, Any]:
    stub_port, proxy_port = free_port(), free_port()
    stub_url, proxy_url = f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{proxy_port}"
    py = sys.executable
    stub_cmd = [*_pin(1), py, "-m", "concurproxy.testing.stub_upstream", "--port", str(stub_port)]
    proxy_cmd = [*_pin(0), py, "-m", "concurproxy", "serve", "--upstream", stub_url, "--port", str(proxy_port)]
    if policy:
        proxy_cmd += ["--config", policy]
    env = {**os.environ, "CONCURPROXY_LOG_LEVEL": "WARNING"}
    use_wrk = shutil.which("wrk") is not None
    modes = ("plain", "stream", "plain_rps", "stream_rps")
    samples: dict[str, dict[str, list[float]]] = {api: {m: [] for m in modes} for api in APIS}
    with process(stub_cmd, stub_url + "/health"), process(proxy_cmd, proxy_url + "/ready", env=env) as proxy:
        names = list(APIS)
        for name in names:  # warm-up: connections, caches, the first import of each path
            path, body = APIS[name]
            py_load(proxy_url + path, 8, 1.0, body=body)
        for k in range(rounds):
            for name in names[k % 3 :] + names[: k % 3]:
                path, body = APIS[name]
                url = proxy_url + path

                def plain(url: str = url, body: dict[str, Any] = body) -> dict[str, float]:
                    if use_wrk:
                        return wrk(url, 32, duration, cpu=1, body=body)
                    r = py_load(url, 32, duration, body=body)
                    return {**r, "requests": r["rps"] * duration}

                def streamed(url: str = url, body: dict[str, Any] = body) -> dict[str, float]:
                    r = py_load(url, 16, duration, stream=True, body=body)
                    return {**r, "requests": r["rps"] * duration}

                for mode, load in (("plain", plain), ("stream", streamed)):
                    cpu, rps = _cpu_per_step(proxy.pid, load)
                    samples[name][mode].append(cpu)
                    samples[name][mode + "_rps"].append(rps)
    return {"load_client": "wrk" if use_wrk else "python-aiohttp", "duration_s": duration, "samples": samples}


def report(r: dict[str, Any]) -> str:
    med = {api: {m: statistics.median(v) for m, v in d.items()} for api, d in r["samples"].items()}
    rounds = len(r["samples"]["chat"]["plain"])
    lines = [
        f"proxy CPU per step (µs), median of {rounds} rounds, {r['duration_s']:g}s per point; "
        f"non-streamed c32 ({r['load_client']}), streamed c16 (python); proxy on CPU 0, stub + client on CPU 1",
        f"{'api':10} {'non-streamed':>13} {'vs chat':>8} {'req/s':>7} {'streamed':>10} {'vs chat':>8} {'req/s':>7}",
    ]
    chat = med["chat"]
    for api, m in med.items():
        p, s = m["plain"], m["stream"]
        lines.append(
            f"{api:10} {p:13.1f} {p / chat['plain']:8.3f} {m['plain_rps']:7.0f} "
            f"{s:10.1f} {s / chat['stream']:8.3f} {m['stream_rps']:7.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measured point")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the three APIs (median reported)")
    ap.add_argument("--policy", help="policy file for the proxy (default: built-in defaults)")
    ap.add_argument("--out", type=Path, help="write the raw samples as JSON")
    args = ap.parse_args(argv)
    r = run(args.duration, args.rounds, args.policy)
    print(report(r))
    if args.out:
        args.out.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
