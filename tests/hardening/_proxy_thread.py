"""A proxy (and its stub upstreams) on a background event loop, for sync hypothesis tests.

Hypothesis drives sync test functions; the proxy must keep running across
examples, so it lives on its own loop in a thread. Raw requests go over
plain sockets so that any byte (invalid UTF-8 in headers, broken framing)
can be sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from concurproxy.config import load_policy
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.server.components import Components
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub

T = TypeVar("T")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    raw: bytes = field(repr=False, default=b"")


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2 :]
        body = out
    return RawResponse(status, headers, body, data)


class ProxyThread:
    """Start with ``start(**policy_overrides)``; ``call(coro)`` runs a coroutine on the proxy's loop."""

    def __init__(self, behaviours: list[StubBehaviour]) -> None:
        self.behaviours = behaviours
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stack = AsyncExitStack()
        self.url = ""
        self.port = 0
        self.components: Components | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, policy_path: str | Path | None = None, **overrides: Any) -> None:
        """``policy_path``: a policy file under the overrides (e.g. policies/default.yaml as shipped)."""
        self.thread.start()
        self.call(self._start(policy_path, overrides))

    async def _start(self, policy_path: str | Path | None, overrides: dict[str, Any]) -> None:
        urls = [await self.stack.enter_async_context(running_stub(b)) for b in self.behaviours]
        doc: dict[str, Any] = {"upstreams": [{"url": u, "name": f"r{i}"} for i, u in enumerate(urls)], **overrides}
        policy = load_policy(policy_path, overrides=doc, env={})
        self.components = build_components(policy)
        self.url = await self.stack.enter_async_context(running_proxy(policy, self.components))
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        try:
            self.call(self.stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    async def raw(self, data: bytes, limit_s: float = 10.0) -> RawResponse:
        """Send bytes, read until the server closes (requests carry Connection: close)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(limit_s):  # a hung connection fails the test here
                got = await reader.read()
        finally:
            writer.close()
        return parse_response(got)

    def request(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> RawResponse:
        lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        lines += [k + b": " + v for k, v in headers]
        if body is not None:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        data = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
        return self.call(self.raw(data))
