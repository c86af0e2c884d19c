"""What the client puts on the wire (issue 21 item 6): Accept-Encoding identity, IPv6 Host."""

from __future__ import annotations

import asyncio
import socket

import pytest

from concurproxy.upstream.http1 import UpstreamPool, UpstreamRequestError
from concurproxy.upstream.http1.parser import build_request, host_header

from .servers import raw_server, read_request_head


def test_build_request_asks_for_identity_and_drops_the_callers_coding() -> None:
    raw = build_request("POST", "/v1/x", "h:1", {"Accept-Encoding": "gzip, br"}, b"{}")
    head = raw.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"Accept-Encoding: identity" in head
    assert not [ln for ln in head if b"gzip" in ln]


@pytest.mark.parametrize(
    ("host", "port", "expect"),
    [
        ("10.0.0.5", 8000, "10.0.0.5:8000"),
        ("vllm", 80, "vllm"),
        ("::1", 8000, "[::1]:8000"),
        ("::1", 80, "[::1]"),  # was "::1": not a valid Host
        ("fe80::1%eth0", 8000, "[fe80::1]:8000"),  # the zone id is local to this host
    ],
)
def test_host_header(host: str, port: int, expect: str) -> None:
    assert host_header(host, port) == expect


def test_host_header_rejects_what_a_request_cannot_carry() -> None:
    with pytest.raises(UpstreamRequestError):
        host_header("bad\r\nX-Injected: 1", 80)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_requests_carry_identity_and_ipv6_base_urls_work() -> None:
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    heads: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        while True:
            head, _ = await read_request_head(reader)
            heads.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    pool = UpstreamPool()
    async with raw_server(script, host="::1") as (_, port):
        try:
            for target in (f"http://[::1]:{port}/api", ("::1", port), ("[::1]", port)):
                async with await pool.request("POST", target, "/v1/x", {"Accept-Encoding": "gzip"}, b"{}") as resp:
                    assert await resp.read() == b"ok"
            for head in heads:
                assert f"\r\nHost: [::1]:{port}\r\n".encode() in head
                assert b"\r\nAccept-Encoding: identity\r\n" in head and b"gzip" not in head
            assert heads[0].startswith(b"POST /api/v1/x HTTP/1.1\r\n")
        finally:
            await pool.close()
