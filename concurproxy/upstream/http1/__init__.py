"""A small, fast HTTP/1.1 client for the proxy's upstream hot path (asyncio Protocols, uvloop-friendly).

Usage::

    pool = UpstreamPool(max_per_host=256, connect_timeout_s=5, idle_timeout_s=30)
    async with await pool.request("POST", "http://127.0.0.1:8000", "/v1/chat/completions",
                                  {"Content-Type": "application/json"}, body, read_timeout_s=60) as resp:
        data = await resp.read()            # or: async for chunk in resp.iter_chunks(): ...
    await pool.close()
"""

from concurproxy.upstream.http1.errors import (
    UpstreamAborted,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRequestError,
    UpstreamTimeout,
)
from concurproxy.upstream.http1.parser import Headers
from concurproxy.upstream.http1.pool import UpstreamPool
from concurproxy.upstream.http1.response import UpstreamResponse

__all__ = [
    "Headers",
    "UpstreamAborted",
    "UpstreamConnectError",
    "UpstreamDisconnected",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamRequestError",
    "UpstreamResponse",
    "UpstreamTimeout",
]
