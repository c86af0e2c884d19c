"""Operations: hot reload, front-door limits, a separate admin listener, drain on shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack

import aiohttp
import pytest
import yaml

from concurproxy.config import load_policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def write_policy(path, upstreams, **extra) -> None:
    doc = {"upstreams": [{"url": u, "name": f"r{i}"} for i, u in enumerate(upstreams)], **extra}
    path.write_text(yaml.safe_dump(doc))


async def test_reload_applies_budgets_and_new_replicas_and_rejects_bad_files(tmp_path):
    f = tmp_path / "policy.yaml"
    async with AsyncExitStack() as stack:
        ups = [await stack.enter_async_context(running_stub(StubBehaviour())) for _ in range(2)]
        write_policy(f, ups[:1])
        policy = load_policy(f, env={})
        comps = build_components(policy)
        comps.policy_path = str(f)
        url = await stack.enter_async_context(running_proxy(policy, comps))
        s = await stack.enter_async_context(aiohttp.ClientSession())
        before = (await (await s.get(url + "/admin/state")).json())["policy"]["fingerprint"]

        write_policy(f, ups, roles={"monitor": {"max_output_tokens": 2}}, health={"panic_threshold": 0})
        r = await s.post(url + "/admin/reload")
        assert r.status == 200, await r.text()
        assert comps.pool.health_cfg.panic_threshold == 0  # the health section applies at once
        state = await (await s.get(url + "/admin/state")).json()
        assert state["policy"]["fingerprint"] != before and state["policy"]["reloads"] == 1
        assert [x["id"] for x in state["replicas"]] == ["r0", "r1"]
        r = await s.post(
            url + "/v1/chat/completions", json={**CHAT, "max_tokens": 50}, headers={"X-Agent-Role": "monitor"}
        )
        assert r.headers["x-concurproxy-max-tokens-clamped"] == "2"

        good = state["policy"]["fingerprint"]
        f.write_text("roles: {monitor: {max_output_tokens: -5}}\n")
        r = await s.post(url + "/admin/reload")
        assert r.status == 400 and "roles.monitor.max_output_tokens" in (await r.json())["error"]["message"]
        state = await (await s.get(url + "/admin/state")).json()
        assert state["policy"]["fingerprint"] == good  # the old policy stays
        assert state["policy"]["failed_reloads"] == 1 and state["policy"]["last_reload_error"]
        assert (await s.post(url + "/v1/chat/completions", json=CHAT)).status == 200


async def test_rate_limit_per_key_before_admission(proxy_factory):
    async with proxy_factory(limits={"requests_per_s": 1, "burst": 2}) as h:
        statuses = [(await h.post("/v1/chat/completions", CHAT)).status for _ in range(3)]
        assert statuses == [200, 200, 429]
        r = await h.post("/v1/chat/completions", CHAT)
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "rate_limited"
        assert len(h.stubs[0].seen) == 2


async def test_too_many_messages_and_long_headers(proxy_factory):
    async with proxy_factory(limits={"max_messages": 3, "max_header_bytes": 2048}) as h:
        body = {**CHAT, "messages": [{"role": "user", "content": "x"}] * 4}
        r = await h.post("/v1/chat/completions", body)
        assert r.status == 400 and (await r.json())["error"]["param"] == "messages"
        r = await h.post("/v1/chat/completions", CHAT, headers={"X-Pad": "y" * 5000})
        assert r.status in (400, 431)
        assert (await h.post("/v1/chat/completions", CHAT)).status == 200


async def test_admin_routes_on_their_own_listener():
    async with AsyncExitStack() as stack:
        up = await stack.enter_async_context(running_stub(StubBehaviour()))
        policy = load_policy(overrides={"upstreams": [{"url": up}], "listen": {"admin_port": 0}}, env={})
        comps = build_components(policy)
        url = await stack.enter_async_context(running_proxy(policy, comps))
        s = await stack.enter_async_context(aiohttp.ClientSession())
        assert comps.admin_url and comps.admin_url != url
        assert (await s.get(url + "/admin/state")).status == 404
        assert (await s.get(url + "/metrics")).status == 404
        assert (await s.get(comps.admin_url + "/admin/state")).status == 200
        assert "concurproxy_requests_total" in await (await s.get(comps.admin_url + "/metrics")).text()
        assert (await s.post(comps.admin_url + "/v1/chat/completions", json=CHAT)).status == 404
        assert (await s.post(url + "/v1/chat/completions", json=CHAT)).status == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen, status: int = 200, timeout: float = 20) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == status:
                    return
        except urllib.error.HTTPError as e:
            if e.code == status:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered {status}")


def test_serve_process_sighup_reload_and_sigterm_drain(tmp_path):
    """The real `concurproxy serve` process: SIGHUP reloads, SIGTERM lets an in-flight stream finish."""
    stub_port, port = _free_port(), _free_port()
    stub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "concurproxy.testing.stub_upstream",
            "--port",
            str(stub_port),
            "--chunk-delay-s",
            "0.05",
        ],
        stderr=subprocess.DEVNULL,
    )
    f = tmp_path / "p.yaml"
    up = [f"http://127.0.0.1:{stub_port}"]
    write_policy(f, up, listen={"shutdown_grace_s": 10})
    proxy = None
    try:
        _wait_http(f"http://127.0.0.1:{stub_port}/health", stub)
        env = {**os.environ, "CONCURPROXY_LOG_LEVEL": "WARNING"}
        proxy = subprocess.Popen(
            [sys.executable, "-m", "concurproxy", "serve", "--config", str(f), "--port", str(port)],
            stderr=subprocess.DEVNULL,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/ready", proxy)
        write_policy(f, up, listen={"shutdown_grace_s": 10}, roles={"monitor": {"max_output_tokens": 1}})
        proxy.send_signal(signal.SIGHUP)

        async def scenario() -> list[str]:
            async with aiohttp.ClientSession() as s:
                for _ in range(200):
                    st = await (await s.get(base + "/admin/state")).json()
                    if st["policy"]["reloads"] == 1:
                        break
                    await asyncio.sleep(0.05)
                assert st["policy"]["reloads"] == 1
                r = await s.post(
                    base + "/v1/chat/completions", json={**CHAT, "max_tokens": 9}, headers={"X-Agent-Role": "monitor"}
                )
                assert r.headers["x-concurproxy-max-tokens-clamped"] == "1"  # the reloaded policy applies
                # a 20-chunk stream (~1 s) is in flight when SIGTERM arrives: it must finish
                r = await s.post(base + "/v1/chat/completions", json={**CHAT, "max_tokens": 20, "stream": True})
                first = await r.content.readline()
                proxy.send_signal(signal.SIGTERM)
                rest = (first + await r.read()).decode()
                return [e for e in rest.split("\n\n") if e.strip()]

        events = asyncio.run(scenario())
        assert events[-1] == "data: [DONE]" and len(events) == 21
        assert proxy.wait(15) == 0
    finally:
        for p in (proxy, stub):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)


@pytest.mark.parametrize("path", ["/v1/chat/completions"])
async def test_new_steps_get_503_while_shutting_down(proxy_factory, path):
    async with proxy_factory() as h:
        h.components.shutting_down = True
        r = await h.post(path, CHAT)
        assert r.status == 503 and r.headers["Retry-After"]
        assert (await r.json())["error"]["code"] == "shutting_down"
        assert (await h.session.get(h.url + "/ready")).status == 503
