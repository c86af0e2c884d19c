"""The real `concurproxy serve` process: slow clients, SIGTERM with streams in flight, SIGHUP with a bad file."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from ._procs import Procs, free_port, rss_bytes, wait_http

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}]}


def write_policy(path: Path, upstream_port: int, **extra: Any) -> None:
    doc = {"upstreams": [{"url": f"http://127.0.0.1:{upstream_port}", "name": "r0"}], **extra}
    path.write_text(yaml.safe_dump(doc))


def test_slow_client_long_stream_memory_is_bounded(tmp_path):
    """A client that stops reading a ~9 MB stream: the proxy must push back, not buffer it all."""
    stub_port, port = free_port(), free_port()
    cfg = tmp_path / "p.yaml"
    write_policy(cfg, stub_port)
    with Procs() as procs:
        procs.stub(stub_port)
        proxy = procs.serve(str(cfg), port)
        warm = orjson.dumps({**CHAT, "max_tokens": 2000, "stream": True})
        urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=warm), timeout=30
        ).read()  # warm-up: first-request allocations are not growth
        n_chunks = 60_000  # ~150 bytes each
        req = orjson.dumps({**CHAT, "max_tokens": n_chunks, "stream": True})
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(30)
            sock.connect(("127.0.0.1", port))
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(req)}\r\nConnection: close\r\n\r\n"
            ).encode()
            sock.sendall(head + req)
            got = sock.recv(4096)
            assert got.startswith(b"HTTP/1.1 200"), got[:200]
            before = rss_bytes(proxy.pid)
            time.sleep(1.5)  # measurement window: the upstream could produce the whole stream in this time
            stalled = rss_bytes(proxy.pid)
            total = len(got)
            for _ in range(50):  # then a slow reader: small reads with pauses
                total += len(sock.recv(4096))
                time.sleep(0.005)
            slow = rss_bytes(proxy.pid)
            tail = b""
            while chunk := sock.recv(1 << 16):
                total += len(chunk)
                tail = (tail + chunk)[-64:]
        assert b"data: [DONE]" in tail, tail
        assert total > 6_000_000  # the whole stream did flow
        growth = max(stalled, slow) - before
        mib = [round(x / 2**20, 1) for x in (total, before, stalled, slow)]  # streamed; RSS before, stalled, slow
        assert growth < 4 * 1024 * 1024, f"proxy RSS grew while the client stalled: {mib}"


async def _stream_then(base: str, proxy_pid: int, during: Any) -> tuple[list[str], Any]:
    async with aiohttp.ClientSession() as s:
        r = await s.post(base + "/v1/chat/completions", json={**CHAT, "max_tokens": 40, "stream": True})
        first = await r.content.readline()
        result = await during()
        rest = (first + await r.read()).decode()
        return [e for e in rest.split("\n\n") if e.strip()], result


def test_sigterm_in_flight_stream_finishes_within_grace(tmp_path):
    stub_port, port = free_port(), free_port()
    cfg = tmp_path / "p.yaml"
    write_policy(cfg, stub_port, listen={"shutdown_grace_s": 10})
    with Procs() as procs:
        procs.stub(stub_port, "--chunk-delay-s", "0.05")  # a 40-chunk stream lasts ~2 s
        proxy = procs.serve(str(cfg), port)

        async def term() -> None:
            proxy.send_signal(signal.SIGTERM)

        started = time.monotonic()
        events, _ = asyncio.run(_stream_then(f"http://127.0.0.1:{port}", proxy.pid, term))
        assert events[-1] == "data: [DONE]" and len(events) == 41
        assert proxy.wait(15) == 0
        assert time.monotonic() - started < 10


def test_sigterm_ready_turns_503_while_draining(tmp_path):
    stub_port, port = free_port(), free_port()
    cfg = tmp_path / "p.yaml"
    write_policy(cfg, stub_port, listen={"shutdown_grace_s": 10})
    with Procs() as procs:
        procs.stub(stub_port, "--chunk-delay-s", "0.05")
        proxy = procs.serve(str(cfg), port)
        base = f"http://127.0.0.1:{port}"

        async def term_then_probe() -> tuple[int, int]:
            proxy.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)  # let the signal land; the 2 s stream is still in flight
            async with aiohttp.ClientSession() as s2:
                ready = (await s2.get(base + "/ready")).status
                new = (await s2.post(base + "/v1/chat/completions", json={**CHAT, "max_tokens": 2})).status
            return ready, new

        events, (ready, new) = asyncio.run(_stream_then(base, proxy.pid, term_then_probe))
        assert (ready, new) == (503, 503)
        assert events[-1] == "data: [DONE]"


def test_sighup_with_invalid_file_keeps_the_old_policy_and_says_why(tmp_path):
    stub_port, port = free_port(), free_port()
    cfg = tmp_path / "p.yaml"
    write_policy(cfg, stub_port, roles={"monitor": {"max_output_tokens": 2}})
    with Procs() as procs:
        procs.stub(stub_port)
        proxy = procs.serve(str(cfg), port)
        base = f"http://127.0.0.1:{port}"

        async def scenario() -> None:
            async with aiohttp.ClientSession() as s:
                before = (await (await s.get(base + "/admin/state")).json())["policy"]
                for bad in ("roles: {monitor: {max_output_tokens: -5}}\n", "upstreams: [\n  {url: : :\n"):
                    cfg.write_text(bad)
                    failures = before["failed_reloads"]
                    proxy.send_signal(signal.SIGHUP)
                    for _ in range(200):
                        pol = (await (await s.get(base + "/admin/state")).json())["policy"]
                        if pol["failed_reloads"] > failures:
                            break
                        await asyncio.sleep(0.05)
                    assert pol["failed_reloads"] == failures + 1, pol
                    assert pol["fingerprint"] == before["fingerprint"] and pol["last_reload_error"], pol
                    before = pol
                r = await s.post(
                    base + "/v1/chat/completions", json={**CHAT, "max_tokens": 9}, headers={"X-Agent-Role": "monitor"}
                )
                assert r.status == 200 and r.headers["x-concurproxy-max-tokens-clamped"] == "2"  # old policy

        asyncio.run(scenario())
        wait_http(base + "/ready", proxy)
