"""Structured JSON logs (stdlib logging) and the per-request id.

Every request gets an id: the client's ``X-Request-Id`` when it is a safe token
(``[A-Za-z0-9._:-]{1,128}``), otherwise a fresh uuid4 hex. The id is stored in a
``ContextVar`` for the request's task, stamped on every log record emitted while
handling it, and echoed in the ``X-Request-Id`` response header (also on
streamed responses: the header is set in ``on_response_prepare``).

One log line is one JSON object: ``ts`` (RFC 3339 UTC), ``level``, ``logger``,
``msg``, ``request_id`` (when inside a request), any ``extra={...}`` fields, and
``exc`` with the formatted traceback when there is one.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from aiohttp import web

from concurproxy.config.models import TelemetryConfig

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("concurproxy_request_id", str)  # typed key in the request mapping
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# A ContextVar is per-task state, not shared mutable global state: each request's task sees its own id.
request_id_var: ContextVar[str | None] = ContextVar("concurproxy_request_id", default=None)

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


# A random per-process prefix + a counter: unique across instances and restarts, cheap per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id(client_value: str | None = None) -> str:
    """The client's id when it is a safe token, else a new random one (never echo unsafe bytes)."""
    if client_value and _SAFE_ID.match(client_value):
        return client_value
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"  # 32 hex chars like a uuid, ~10x cheaper


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` from the context at emit time (before any queue/thread hop)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; extras become top-level fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            doc["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(
    cfg: TelemetryConfig, stream: IO[str] | None = None, logger_name: str = "concurproxy"
) -> logging.Handler:
    """Attach one handler (JSON or text per ``cfg.log_format``) to ``logger_name`` and set its level.

    Returns the handler so the caller (or a test) can remove it again; the root logger is untouched.
    """
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    if cfg.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.setLevel(cfg.log_level)
    logger.addHandler(handler)
    logger.propagate = False
    return handler


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def begin_request(request: web.Request) -> tuple[str, Token[str | None]]:
    """Assign the request id: ``request[REQUEST_ID_KEY]`` and the log context (reset with the token)."""
    rid = new_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID_KEY] = rid
    return rid, request_id_var.set(rid)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Assign the request id, expose it as ``request[REQUEST_ID_KEY]`` and in the log context."""
    _, token = begin_request(request)
    try:
        return await handler(request)
    finally:
        request_id_var.reset(token)


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID_KEY)
    if rid and REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = rid


def install_request_id(app: web.Application) -> None:
    """Add the middleware and the response hook that echoes ``X-Request-Id`` (streams included)."""
    app.middlewares.append(request_id_middleware)
    app.on_response_prepare.append(_echo_request_id)
