"""OpenAI-shaped answers for requests aiohttp's HTTP parser refuses before any handler runs.

A header over ``limits.max_header_bytes``, a duplicate ``Content-Type``, a
control character in a header, an unknown method, ``Transfer-Encoding`` with
``Content-Length``: the parser rejects these while reading the request, so the
app's error middleware never sees them and aiohttp would answer ``text/plain``
with the offending bytes echoed back. Agents' clients expect the same JSON error
shape on every status, and echoing attacker-chosen bytes into a response is
needless; so the protocol's ``handle_error`` is replaced here. Status mapping:

- request target (URL) too long: 414 ``uri_too_long``;
- a header name or value too long: 431 ``request_header_fields_too_large``;
- anything else the parser refuses: 400 ``malformed_http_request``;
- the rare errors aiohttp itself raises around a handler (a 500, a 504 handler
  timeout): the same JSON shape, without a traceback.

The connection is closed after such an answer, as aiohttp does: the parser
state after a framing error cannot be trusted.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from concurproxy.errors import ProxyError


def classify_parse_error(status: int, exc: BaseException | None) -> ProxyError:
    """The OpenAI error a client gets for a request the server could not take in."""
    if isinstance(exc, LineTooLong):
        if _is_request_target(exc):
            return ProxyError(414, "uri_too_long", "the request line is longer than the configured limit")
        return ProxyError(
            431, "request_header_fields_too_large", "a request header is larger than limits.max_header_bytes"
        )
    if isinstance(exc, BadHttpMethod):
        return ProxyError(400, "malformed_http_request", "unsupported or malformed HTTP method")
    if isinstance(exc, HttpProcessingError) or status == 400:
        # The parser's own message may quote the offending bytes; name only the kind of fault.
        return ProxyError(400, "malformed_http_request", f"the HTTP request could not be parsed ({type(exc).__name__})")
    if status == 504:
        return ProxyError(504, "timeout", "the request took longer than the server allows")
    if status < 500:
        return ProxyError(status, "http_error", "the HTTP request was refused")
    return ProxyError(500, "internal_error", "the proxy failed on this request; it was logged")


def _is_request_target(exc: LineTooLong) -> bool:
    """Whether the over-long line is the request target rather than a header.

    aiohttp raises the same exception for both, carrying the line's first bytes;
    a request target starts with ``/`` (origin form) or a scheme (absolute form)."""
    head = bytes(exc.args[0]) if exc.args and isinstance(exc.args[0], (bytes, bytearray)) else b""
    return head.startswith((b"/", b"http://", b"https://", b"*"))


class OpenAIErrorRequestHandler(RequestHandler):
    """aiohttp's connection protocol, answering its own errors as OpenAI JSON."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The base class logs (filtered by logfilter) and raises if part of an answer is already out.
        super().handle_error(request, status, exc, message)
        resp = classify_parse_error(status, exc).to_response()
        resp.force_close()
        return resp


class OpenAIErrorServer(Server):
    """A low-level server whose connections use `OpenAIErrorRequestHandler`."""

    def __call__(self) -> RequestHandler:
        return OpenAIErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class ProxyAppRunner(web.AppRunner):
    """`web.AppRunner` for the proxy's listeners: same app, same options, JSON parser errors."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # aiohttp builds the Server inside Application._make_handler and offers no hook for the
        # protocol class; OpenAIErrorServer adds no state, so re-classing the built server is safe.
        server.__class__ = OpenAIErrorServer
        return server
