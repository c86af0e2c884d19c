"""Tenant isolation and upstream choice: who you are comes from the key, where it goes from the policy."""

from __future__ import annotations

import asyncio
import hashlib

from concurproxy.testing.stub_upstream import StubBehaviour

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


TENANTS = {
    "tenants": [{"name": "alpha", "key_sha256": [sha("key-a")]}, {"name": "beta", "key_sha256": [sha("key-b")]}],
    "auth": {"allow_anonymous": False},
}


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


async def test_tenant_comes_from_the_key_only(proxy_factory):
    async with proxy_factory(**TENANTS) as h:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"X-Tenant": "alpha", "X-Tenant-Id": "alpha"}):
            r = await h.post("/v1/chat/completions", CHAT, headers=headers)
            assert r.status == 401 and (await r.json())["error"]["type"] == "authentication_error"
        # identity headers that look like another tenant's scope stay under the caller's tenant
        r = await h.post(
            "/v1/chat/completions",
            CHAT,
            headers=bearer("key-b", **{"X-Agent-Id": "alpha/agent-1", "X-Tenant": "alpha"}),
        )
        assert r.status == 200
        assert h.listener.steps[-1].step.tenant == "beta"
        assert h.listener.steps[-1].step.agent_id == "beta/alpha/agent-1"


async def test_one_tenant_cannot_release_anothers_agent(proxy_factory):
    async with proxy_factory(**TENANTS) as h:
        r = await h.post("/v1/chat/completions", CHAT, headers=bearer("key-a", **{"X-Agent-Id": "shared-name"}))
        assert r.status == 200
        r = await h.session.delete(h.url + "/v1/agents/shared-name", headers=bearer("key-b"))
        assert r.status == 200 and (await r.json())["released"] is False
        r = await h.session.delete(h.url + "/v1/agents/shared-name")
        assert r.status == 401
        r = await h.session.delete(h.url + "/v1/agents/shared-name", headers=bearer("key-a"))
        assert (await r.json())["released"] is True


async def test_client_cannot_choose_the_upstream_and_its_key_is_not_forwarded(proxy_factory):
    stub = StubBehaviour()
    async with proxy_factory(behaviours=[stub], **TENANTS) as h:
        port = int(h.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"model": "stub-model", "messages": [{"role": "user", "content": "x"}], "base_url": "http://evil:1"}'
        writer.write(
            b"POST http://evil.example:1/v1/chat/completions HTTP/1.1\r\nHost: evil.example:1\r\n"
            b"X-Forwarded-Host: evil.example\r\nAuthorization: Bearer key-a\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        async with asyncio.timeout(10):
            got = await reader.read()
        writer.close()
        status = int(got.split(b" ", 2)[1])
        assert status == 200 or 400 <= status < 500, got[:200]
        if status == 200:  # served: by the configured replica, never by the client's choice
            assert len(stub.seen) == 1
        assert all("key-a" not in v for hdrs in stub.seen_headers for v in hdrs.values())
