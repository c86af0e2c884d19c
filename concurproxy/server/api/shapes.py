"""Error bodies in each API family's own shape, for answers that are not streams.

OpenAI-style APIs (chat, completions, Responses, every pass-through route but
Anthropic's): ``{"error": {"message", "type", "code", "param"}}``, which
`ProxyError.body` builds. Anthropic's Messages API (``/v1/messages`` and its
sub-routes): ``{"type": "error", "error": {"type", "message"}}`` with Anthropic's
error types for the status, so its SDK raises the matching exception class
(``BadRequestError``, ``RateLimitError``, ...). The status and headers
(``Retry-After``) are the same in both shapes. Mid-stream errors are each
codec's own (``ApiCodec.stream_error``).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from concurproxy.errors import ProxyError

ANTHROPIC_PREFIX = "/v1/messages"

# https://docs.anthropic.com/en/api/errors
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_body(err: ProxyError) -> dict[str, object]:
    return {"type": "error", "error": {"type": anthropic_type(err.status), "message": err.message}}


class ErrorShape:
    """OpenAI's shape (the default)."""

    name = "openai"

    def body(self, err: ProxyError) -> dict[str, object]:
        return err.body()

    def response(self, err: ProxyError) -> web.Response:
        return web.Response(
            status=err.status,
            body=orjson.dumps(self.body(err)),
            content_type="application/json",
            headers=err.response_headers(),
        )


class AnthropicShape(ErrorShape):
    name = "anthropic"

    def body(self, err: ProxyError) -> dict[str, object]:
        return anthropic_body(err)


OPENAI = ErrorShape()
ANTHROPIC = AnthropicShape()


def shape_for_path(path: str) -> ErrorShape:
    """The shape an error on ``path`` is written in (Anthropic's for its routes, else OpenAI's)."""
    return ANTHROPIC if path.startswith(ANTHROPIC_PREFIX) else OPENAI
