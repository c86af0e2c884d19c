"""Wire-format unit tests: request building, head parsing, chunked decoding (with properties)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concurproxy.upstream.http1.chunked import ChunkedDecoder
from concurproxy.upstream.http1.errors import UpstreamProtocolError
from concurproxy.upstream.http1.parser import build_request, parse_head


def test_build_request_adds_framing_and_drops_caller_framing() -> None:
    raw = build_request(
        "POST",
        "/v1/x",
        "h:1",
        {"Content-Type": "application/json", "content-length": "99", "Connection": "close"},
        b"{}",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x HTTP/1.1"
    assert b"Content-Type: application/json" in lines
    assert b"Host: h:1" in lines and b"Content-Length: 2" in lines and b"Connection: keep-alive" in lines
    assert b"content-length: 99" not in lines and b"Connection: close" not in lines
    assert body == b"{}"


def test_build_request_host_override_and_injection_rejected() -> None:
    assert b"Host: other\r\n" in build_request("GET", "/", "h:1", {"host": "other"}, b"")
    with pytest.raises(ValueError):
        build_request("GET", "/", "h", {"X-A": "1\r\nX-B: 2"}, b"")


def test_parse_head_basic_and_case_insensitive() -> None:
    h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 5")
    assert (h.status, h.reason, h.version, h.content_length, h.chunked, h.keep_alive) == (
        200,
        "OK",
        "1.1",
        5,
        False,
        True,
    )
    assert h.headers["content-type"] == "text/plain" and h.headers.get("CONTENT-TYPE") == "text/plain"
    assert h.headers["X-A"] == "1, 2" and "x-a" in h.headers and h.headers.get("nope") is None
    assert h.headers.raw[1] == ("X-A", "1")


@pytest.mark.parametrize(
    ("head", "chunked", "length", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", True, None, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked", True, None, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3", True, None, False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3", False, 3, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 3", False, 3, False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 3", False, 3, True),
        # HTTP/1.0: reused only when keep-alive AND length-delimited (RFC 9112 9.3, 6.1)
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked", True, None, False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive", False, None, False),
        (b"HTTP/1.0 200 OK\r\nConnection: not-keep-alive\r\nContent-Length: 3", False, 3, False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", False, None, False),
        (b"HTTP/1.1 204", False, None, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3", False, 3, True),
    ],
)
def test_parse_head_framing(head: bytes, chunked: bool, length: int | None, keep_alive: bool) -> None:
    h = parse_head(head)
    assert (h.chunked, h.content_length, h.keep_alive) == (chunked, length, keep_alive)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 2000 OK",
        b"HTTP/2 200 OK",
        b"garbage",
        b"HTTP/1.1 200 OK\r\nNo-Colon",
        b"HTTP/1.1 200 OK\r\n folded: x",
        b"HTTP/1.1 200 OK\r\nBad Name: x",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb",
    ],
)
def test_parse_head_rejects(head: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_head(head)


def encode_chunked(pieces: list[bytes], ext: bool, trailers: bool) -> bytes:
    out = b""
    for p in pieces:
        if p:
            out += f"{len(p):x}".encode() + (b";name=val" if ext else b"") + b"\r\n" + p + b"\r\n"
    out += b"0\r\n" + (b"X-Trailer: 1\r\n" if trailers else b"") + b"\r\n"
    return out


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=0, max_size=300), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
    ext=st.booleans(),
    trailers=st.booleans(),
    tail=st.binary(max_size=10),
)
def test_chunked_decoder_any_split(
    pieces: list[bytes], cuts: list[int], ext: bool, trailers: bool, tail: bytes
) -> None:
    """decode(split(encode(p))) == join(p) for any split of the stream; trailing bytes kept apart."""
    wire = encode_chunked(pieces, ext, trailers) + tail
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    dec = ChunkedDecoder()
    got = b""
    for a, b in itertools.pairwise(points):
        got += b"".join(dec.feed(wire[a:b]))
    assert dec.done
    assert got == b"".join(pieces)
    assert dec.tail == tail


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=12), upper=st.booleans())
def test_chunked_decoder_one_chunk_per_read(pieces: list[bytes], upper: bool) -> None:
    """The streaming case: each read one whole chunk with a plain size line (the regex path), either hex case."""
    dec = ChunkedDecoder()
    got: list[bytes] = []
    for p in pieces:
        size = f"{len(p):X}" if upper else f"{len(p):x}"
        got += dec.feed(size.encode() + b"\r\n" + p + b"\r\n")
    got += dec.feed(b"0\r\n\r\n")
    assert dec.done and got == pieces


@pytest.mark.parametrize(
    "wire", [b"zz\r\n", b"5\r\nhelloXX", b"5\r\nhelloX\n", b"0x5\r\nhello\r\n", b"-1\r\n", b"\r\n", b"1" * 5000]
)
def test_chunked_decoder_rejects(wire: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChunkedDecoder().feed(wire)
