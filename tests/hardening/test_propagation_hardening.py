"""Trace-context headers from clients: validated before they are copied upstream, never a 500.

Found by the hardening fuzz (hypothesis 6.170): ``traceparent: \\x80`` reached ``build_request``,
which encodes the head as latin-1, and the step answered 500 on every try.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from concurproxy.server.propagation import propagated_headers, valid_traceparent, valid_tracestate
from concurproxy.testing.stub_upstream import StubBehaviour
from concurproxy.upstream.http1 import UpstreamRequestError
from concurproxy.upstream.http1.parser import build_request

from ._proxy_thread import ProxyThread

GOOD = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CHAT = orjson.dumps({"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (GOOD, True),
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future", True),  # a later version may extend
        (GOOD + "-x", False),  # version 00 has exactly four fields
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", False),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", False),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", False),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", False),  # upper-case hex
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01", False),
        ("\x80", False),
        ("\udc80", False),  # how aiohttp hands over a raw 0x80 byte
        ("", False),
    ],
)
def test_traceparent_grammar(value: str, ok: bool) -> None:
    assert valid_traceparent(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("congo=t61rcWkgMzE", True),
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", True),
        ("rojo=1, ,congo=2", True),  # empty members are allowed (OWS)
        ("tenant@vendor=v", True),
        ("Rojo=1", False),  # keys are lower case
        ("rojo=é", False),
        ("rojo", False),
        ("a=" + "x" * 600, False),
        (",".join(f"k{i}=v" for i in range(33)), False),
    ],
)
def test_tracestate_grammar(value: str, ok: bool) -> None:
    assert valid_tracestate(value) is ok


def test_propagated_headers_drop_what_does_not_parse() -> None:
    assert propagated_headers({"traceparent": GOOD, "tracestate": "a=1"}) == (
        {"traceparent": GOOD, "tracestate": "a=1"},
        (),
    )
    assert propagated_headers({"traceparent": GOOD, "tracestate": "A=é"}) == ({"traceparent": GOOD}, ("tracestate",))
    # without a valid traceparent, tracestate is not parsed at all (W3C §3.3.1)
    assert propagated_headers({"traceparent": "\x80", "tracestate": "a=1"}) == ({}, ("traceparent", "tracestate"))
    assert propagated_headers({"tracestate": "a=1"}) == ({}, ("tracestate",))
    assert propagated_headers({}) == ({}, ())


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("PO ST", "/v1/x", {}),
        ("", "/v1/x", {}),
        ("POST", "/v1/x y", {}),
        ("POST", "/v1/x\r\nX-Smuggled: 1", {}),
        ("POST", "/v1/é", {}),
        ("POST", "", {}),
        ("POST", "/v1/x", {"Bad Name": "v"}),
        ("POST", "/v1/x", {"X-A:": "v"}),
        ("POST", "/v1/x", {"X-A": "v\r\nX-Smuggled: 1"}),
        ("POST", "/v1/x", {"X-A": "v\x00"}),
        ("POST", "/v1/x", {"traceparent": "\udc80"}),  # not latin-1: was a UnicodeEncodeError (500)
        ("POST", "/v1/x", {"Host": "h\r\nX: 1"}),
    ],
)
def test_build_request_rejects_what_cannot_go_on_the_wire(method: str, path: str, headers: dict[str, str]) -> None:
    with pytest.raises(UpstreamRequestError):
        build_request(method, path, "127.0.0.1:8000", headers, b"{}")


def test_build_request_keeps_valid_latin1_values() -> None:
    head = build_request("POST", "/v1/x?a=%C3%A9", "h:1", {"X-Note": "caf\xe9\tok"}, b"")
    assert b"X-Note: caf\xe9\tok\r\n" in head


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyThread]:
    p = ProxyThread([StubBehaviour()])
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _dropped(proxy: ProxyThread, header: str) -> float:
    value = proxy.components.metrics.registry.get_sample_value(  # type: ignore[union-attr]
        "concurproxy_propagation_dropped_total", {"header": header}
    )
    return value or 0.0


@pytest.mark.parametrize("bad", [b"\x80", b"00-\xff", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz"])
def test_invalid_traceparent_is_dropped_and_the_step_served(proxy: ProxyThread, bad: bytes) -> None:
    before = _dropped(proxy, "traceparent")
    resp = proxy.request(b"POST", b"/v1/chat/completions", [(b"traceparent", bad), (b"tracestate", b"a=1")], CHAT)
    assert resp.status == 200, resp.raw[:300]
    assert orjson.loads(resp.body)["choices"]
    sent = {k.lower() for k in proxy.behaviours[0].seen_headers[-1]}
    assert "traceparent" not in sent and "tracestate" not in sent
    assert _dropped(proxy, "traceparent") == before + 1


def test_valid_trace_context_still_reaches_the_engine(proxy: ProxyThread) -> None:
    resp = proxy.request(
        b"POST", b"/v1/chat/completions", [(b"traceparent", GOOD.encode()), (b"tracestate", b"a=1")], CHAT
    )
    assert resp.status == 200
    sent = {k.lower(): v for k, v in proxy.behaviours[0].seen_headers[-1].items()}
    assert sent["traceparent"] == GOOD and sent["tracestate"] == "a=1"
