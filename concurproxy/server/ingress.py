"""The front door every API request goes through, admitted or passed through: body, tenant, rate.

* ``take_body`` / ``read_body``: the request body within ``listen.max_body_bytes``
  (413) and ``limits.body_read_timeout_s`` (408); a body that does not decode
  (Content-Encoding, chunking) is a 400.
* ``admit_tenant``: the tenant from the API key (``Authorization: Bearer`` or
  ``x-api-key``; 401 when required), then the per-key rate limit (429).
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from concurproxy.errors import ProxyError, bad_request
from concurproxy.server.components import Components
from concurproxy.tenancy.directory import ANONYMOUS


def take_body(request: web.Request) -> bytes | None:
    """The whole body when it is already buffered (the usual case), without a timer or a coroutine;
    None when it is still arriving (then ``read_body``)."""
    content = request.content
    if not content.is_eof():
        return None
    try:
        raw = content.read_nowait()
    except (RequestPayloadError, zlib.error):
        raise _undecodable(request) from None
    max_size = request._client_max_size  # what request.read() enforces
    if max_size and len(raw) > max_size:
        raise web.HTTPRequestEntityTooLarge(max_size, len(raw))
    return raw


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise ProxyError(408, "body_timeout", "the request body did not arrive in time") from None
    except (RequestPayloadError, zlib.error):
        raise _undecodable(request) from None


def _undecodable(request: web.Request) -> ProxyError:
    """A body that does not decode (Content-Encoding, chunking)."""
    encoding = request.headers.get("Content-Encoding", "identity")
    return bad_request(f"the request body could not be decoded (Content-Encoding: {encoding})", code="invalid_encoding")


def admit_tenant(c: Components, request: web.Request) -> str:
    """The request's tenant, once its key and its rate allow it."""
    tenant = c.tenants.resolve(request.headers)
    if c.rate_limiter is not None:
        key = tenant if tenant != ANONYMOUS else f"ip:{request.remote}"
        wait = c.rate_limiter.allow(key, c.clock())
        if wait:
            raise ProxyError(429, "rate_limited", "too many requests for this API key", retry_after_s=wait)
    return tenant
