"""Rejected requests leave budgets untouched; front-door errors keep the OpenAI error shape."""

from __future__ import annotations

import asyncio

import orjson
import pytest

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
ROLE = {"X-Agent-Role": "coder", "X-Task-Id": "task-b", "X-Agent-Id": "agent-b"}
BUDGETED = {"roles": {"coder": {"tokens_per_min": 100_000, "max_steps_per_task": 1000}}}
TOKENS = "x-concurproxy-budget-remaining-tokens"
STEPS = "x-concurproxy-budget-remaining-steps"

REJECTED = [  # each is refused before or at the front door; none may be charged
    (b"{", ROLE),
    (b"\xff\xfe\x00", ROLE),
    (orjson.dumps({**CHAT, "max_tokens": -1}), ROLE),
    (orjson.dumps({**CHAT, "messages": []}), ROLE),
    (orjson.dumps({**CHAT, "stream": "yes"}), ROLE),
    (orjson.dumps({**CHAT, "model": "no-such-model"}), ROLE),
    (orjson.dumps(CHAT), {**ROLE, "X-Priority": "urgent!"}),
    (orjson.dumps(CHAT), {**ROLE, "X-Agent-Id": "bad id with spaces"}),
]


async def _remaining(h) -> tuple[int, int]:
    r = await h.post("/v1/chat/completions", CHAT, headers=ROLE)
    assert r.status == 200, await r.text()
    await r.read()
    return int(r.headers[TOKENS]), int(r.headers[STEPS])


async def test_rejected_requests_do_not_touch_budgets(proxy_factory):
    async with proxy_factory(**BUDGETED) as h:
        frozen = h.components.clock()
        h.components.clock = lambda: frozen  # no refill between the two probes: the numbers must match exactly
        t0, s0 = await _remaining(h)
        t1, s1 = await _remaining(h)
        cost = t0 - t1
        assert cost > 0 and s0 - s1 == 1
        for raw, headers in REJECTED:
            r = await h.session.post(h.url + "/v1/chat/completions", data=raw, headers=headers)
            assert 400 <= r.status < 500, (raw, r.status)
            assert (await r.json())["error"]["code"]
        t2, s2 = await _remaining(h)
        assert (t1 - t2, s1 - s2) == (cost, 1), "a rejected request was charged"


async def test_upstream_failure_refunds_the_budget(proxy_factory):
    async with proxy_factory(**BUDGETED) as h:
        frozen = h.components.clock()
        h.components.clock = lambda: frozen
        t0, _ = await _remaining(h)
        t1, s1 = await _remaining(h)
        h.stubs[0].status = 500
        r = await h.post("/v1/chat/completions", CHAT, headers=ROLE)
        assert r.status >= 500  # the engine's 500 is relayed as is
        h.stubs[0].status = 200
        t2, s2 = await _remaining(h)
        assert (t1 - t2, s1 - s2) == (t0 - t1, 1), "a failed step was charged"


async def _raw(url: str, data: bytes) -> tuple[int, str, bytes]:
    from ._proxy_thread import parse_response

    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            got = await reader.read()
    finally:
        writer.close()
    resp = parse_response(got)
    return resp.status, resp.headers.get("content-type", ""), resp.body


PARSER_LEVEL = {
    "header_too_long": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Agent-Id: " + b"a" * 20_000 + b"\r\n",
    "duplicate_content_type": b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b\r\n",
    "control_char_in_header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Agent-Id: a\x01b\r\n",
    "bad_method": b"G@RBAGE /health HTTP/1.1\r\nHost: x\r\n",
    "te_and_cl": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n",
}


@pytest.mark.parametrize("name", list(PARSER_LEVEL))
async def test_http_parser_errors_are_client_errors_without_echo(proxy_factory, name):
    async with proxy_factory() as h:
        status, _, body = await _raw(h.url, PARSER_LEVEL[name] + b"Connection: close\r\n\r\n{}")
        assert 400 <= status < 500 and b"Traceback" not in body


EXPECTED_STATUS = {"header_too_long": 431}


@pytest.mark.parametrize("name", list(PARSER_LEVEL))
async def test_http_parser_errors_are_openai_json(proxy_factory, name):
    """Refused by aiohttp's parser before any handler: still the OpenAI shape, the right status, no echo."""
    async with proxy_factory() as h:
        status, ctype, body = await _raw(h.url, PARSER_LEVEL[name] + b"Connection: close\r\n\r\n{}")
        assert ctype.startswith("application/json"), (status, ctype, body[:120])
        err = orjson.loads(body)["error"]
        assert err["code"] and err["type"] == "invalid_request_error"
        assert status == EXPECTED_STATUS.get(name, 400)
        assert b"aaaa" not in body and b"G@RBAGE" not in body  # the offending bytes are not echoed
        # The proxy still serves the next client normally.
        assert (await h.session.get(h.url + "/health")).status == 200


async def test_overlong_request_line_is_414(proxy_factory):
    async with proxy_factory() as h:
        raw = b"GET /v1/models?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, ctype, body = await _raw(h.url, raw)
        assert (status, ctype.split(";")[0]) == (414, "application/json"), body[:200]
        assert orjson.loads(body)["error"]["code"] == "uri_too_long"


async def test_asterisk_request_target_is_openai_json(proxy_factory):
    """``OPTIONS *`` (RFC 9110): a target no route pattern can match, still answered like any unknown route."""
    async with proxy_factory() as h:
        raw = b"OPTIONS * HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-star\r\nConnection: close\r\n\r\n"
        status, ctype, body = await _raw(h.url, raw)
        assert (status, ctype.split(";")[0]) == (404, "application/json"), body[:200]
        assert orjson.loads(body)["error"]["code"] == "not_found"
        # The fallback sits under its own router key: real paths are routed as before.
        assert (await h.session.get(h.url + "/health")).status == 200
        assert (await h.session.options(h.url + "/v1/models")).status == 405


def test_parse_error_classification_covers_aiohttp_server_errors():
    from aiohttp.http_exceptions import BadStatusLine, LineTooLong

    from concurproxy.server.parse_errors import classify_parse_error

    assert classify_parse_error(400, LineTooLong(b"aaaa...", 8190)).status == 431
    assert classify_parse_error(400, LineTooLong(b"/v1/models?q...", 8190)).status == 414
    assert classify_parse_error(400, BadStatusLine(b"x")).status == 400
    assert classify_parse_error(504, None).code == "timeout"
    internal = classify_parse_error(500, RuntimeError("secret detail"))
    assert internal.status == 500 and "secret" not in internal.message


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_corrupt_compressed_body_is_400(proxy_factory, encoding):
    async with proxy_factory() as h:
        r = await h.session.post(
            h.url + "/v1/chat/completions",
            data=b"this is not compressed",
            headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
        )
        assert r.status == 400, (r.status, await r.text())


async def test_compressed_body_is_bounded_by_the_body_limit(proxy_factory):
    import gzip

    bomb = gzip.compress(b'{"model": "stub-model", "x": "' + b" " * 20_000_000 + b'"}')  # ~20 KB on the wire
    async with proxy_factory() as h:
        r = await h.session.post(h.url + "/v1/chat/completions", data=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
