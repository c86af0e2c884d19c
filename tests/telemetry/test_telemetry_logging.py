"""Structured JSON logs and the request id round trip."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from concurproxy.config.models import TelemetryConfig
from concurproxy.telemetry.logging import (
    REQUEST_ID_HEADER,
    REQUEST_ID_KEY,
    configure_logging,
    install_request_id,
    new_request_id,
    request_id_var,
)

NAME = "concurproxy.test_telemetry_logging"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging(TelemetryConfig(log_level="DEBUG"), stream, logger_name=NAME)
    yield stream
    logging.getLogger(NAME).removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_extras_request_id_and_exception(captured: io.StringIO) -> None:
    log = logging.getLogger(NAME)
    log.info("plain %s", "message")
    token = request_id_var.set("req-1")
    try:
        log.warning("queued", extra={"replica": "r0", "wait_s": 1.5})
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("failed")
    finally:
        request_id_var.reset(token)
    first, second, third = lines(captured)
    assert first["msg"] == "plain message" and first["level"] == "INFO" and "request_id" not in first
    assert str(first["ts"]).endswith("+00:00")
    assert second == {**second, "msg": "queued", "request_id": "req-1", "replica": "r0", "wait_s": 1.5}
    assert "ValueError: bad" in str(third["exc"])


def test_request_id_accepts_safe_client_ids_only() -> None:
    assert new_request_id("abc-123_X.y:z") == "abc-123_X.y:z"
    for bad in (None, "", "has space", "x" * 200, "inject\r\nSet-Cookie: a"):
        rid = new_request_id(bad)
        assert rid != bad and len(rid) == 32


def test_text_format_also_carries_request_id() -> None:
    stream = io.StringIO()
    handler = configure_logging(TelemetryConfig(log_format="text"), stream, logger_name=NAME + ".text")
    try:
        token = request_id_var.set("rid-7")
        logging.getLogger(NAME + ".text").info("hello")
        request_id_var.reset(token)
    finally:
        logging.getLogger(NAME + ".text").removeHandler(handler)
    assert "[rid-7] hello" in stream.getvalue()


async def test_request_id_echoed_on_plain_streamed_and_error_responses(captured: io.StringIO) -> None:
    log = logging.getLogger(NAME)

    async def plain(request: web.Request) -> web.Response:
        log.info("handling")
        return web.json_response({"id": request[REQUEST_ID_KEY]})

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: x\n\n")
        await resp.write_eof()
        return resp

    async def failing(request: web.Request) -> web.Response:
        raise web.HTTPTooManyRequests()

    app = web.Application()
    install_request_id(app)
    app.router.add_get("/plain", plain)
    app.router.add_get("/stream", streamed)
    app.router.add_get("/fail", failing)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        r = await client.get("/plain", headers={REQUEST_ID_HEADER: "client-id-1"})
        assert r.headers[REQUEST_ID_HEADER] == "client-id-1"
        assert (await r.json())["id"] == "client-id-1"
        r = await client.get("/stream")
        assert len(r.headers[REQUEST_ID_HEADER]) == 32
        await r.read()
        r = await client.get("/fail", headers={REQUEST_ID_HEADER: "bad id"})
        assert r.status == 429 and r.headers[REQUEST_ID_HEADER] != "bad id"
    assert lines(captured)[0]["request_id"] == "client-id-1"
    assert request_id_var.get() is None
