"""Limits on what an upstream may send (issue 21 items 2 and 3): the whole head, field counts,
Content-Length digits, chunk extensions, trailers, 1xx responses, and O(n) head reassembly."""

from __future__ import annotations

import asyncio
import logging

import pytest

from concurproxy.upstream.http1 import UpstreamPool, UpstreamProtocolError
from concurproxy.upstream.http1 import connection as connection_mod
from concurproxy.upstream.http1.chunked import MAX_CHUNK_EXT, MAX_TRAILER_FIELDS, ChunkedDecoder
from concurproxy.upstream.http1.parser import MAX_HEAD_BYTES, MAX_HEADER_FIELDS, HeadReader, parse_head

from .servers import raw_server, read_request

STATUS = b"HTTP/1.1 200 OK\r\n"


def fields(n: int) -> bytes:
    return b"\r\n".join(b"X-F%d: v" % i for i in range(n))


# --- pure: parse_head / HeadReader / ChunkedDecoder ---------------------------------------


def test_whole_head_over_the_limit_is_rejected_even_with_its_terminator() -> None:
    parse_head(STATUS + b"X: " + b"a" * (MAX_HEAD_BYTES - 40))  # just under: fine
    with pytest.raises(UpstreamProtocolError, match="larger than"):
        parse_head(STATUS + b"X: " + b"a" * 260_000)  # was accepted: the limit only ran without a terminator


def test_header_field_count_is_limited() -> None:
    assert len(parse_head(STATUS + fields(MAX_HEADER_FIELDS)).headers) == MAX_HEADER_FIELDS
    with pytest.raises(UpstreamProtocolError, match="header fields"):
        parse_head(STATUS + fields(MAX_HEADER_FIELDS + 1))


@pytest.mark.parametrize("digits", [19, 5000])
def test_content_length_digits_are_bounded(digits: int) -> None:
    """5000 digits raised ValueError (int()'s 4300-digit guard) inside data_received."""
    assert parse_head(STATUS + b"Content-Length: " + b"9" * 18).content_length == 10**18 - 1
    with pytest.raises(UpstreamProtocolError, match="Content-Length"):
        parse_head(STATUS + b"Content-Length: " + b"9" * digits)


def test_head_reader_scans_each_byte_once() -> None:
    """A 48 KiB head fed one byte at a time: O(n) bytes searched (it was O(n²): 0.73 s of loop CPU)."""
    head = STATUS + b"X-Big: " + b"a" * (48 * 1024) + b"\r\n\r\n"
    wire = head + b"body"
    reader = HeadReader()
    got = None
    for i in range(len(wire) - 4):
        got = reader.feed(wire[i : i + 1])
        if got is not None:
            break
    assert got is not None and got[0] == head[:-4] and got[1] == b""
    assert reader.scanned <= 4 * len(head)  # the old search-from-the-start was ~len²/2: 1.2e9


@pytest.mark.parametrize("cut", range(1, 25))
def test_head_reader_finds_a_terminator_split_anywhere(cut: int) -> None:
    wire = b"HTTP/1.1 204 No\r\nA: b\r\n\r\nrest"  # CRLFCRLF is bytes 21-24: every cut before its end
    reader = HeadReader()
    assert reader.feed(wire[:cut]) is None
    assert reader.feed(wire[cut:]) == (b"HTTP/1.1 204 No\r\nA: b", b"rest")


def test_head_reader_limits_an_unterminated_head() -> None:
    reader = HeadReader()
    for _ in range(MAX_HEAD_BYTES // 4096):
        assert reader.feed(b"a" * 4096) is None
    with pytest.raises(UpstreamProtocolError):
        reader.feed(b"a")


def test_chunk_extension_length_is_limited_on_complete_lines() -> None:
    ok = b"1;" + b"e" * (MAX_CHUNK_EXT - 1) + b"\r\nx\r\n0\r\n\r\n"
    dec = ChunkedDecoder()
    assert dec.feed(ok) == [b"x"] and dec.done
    with pytest.raises(UpstreamProtocolError, match="extension"):
        ChunkedDecoder().feed(b"1;" + b"e" * 100_000 + b"\r\nx\r\n0\r\n\r\n")  # was accepted in one read


def test_trailer_fields_are_limited_in_number_and_length() -> None:
    ok = b"0\r\n" + b"T: v\r\n" * MAX_TRAILER_FIELDS + b"\r\n"
    assert ChunkedDecoder().feed(ok) == [] and ChunkedDecoder().feed(ok + b"x") == []
    with pytest.raises(UpstreamProtocolError, match="trailer fields"):
        ChunkedDecoder().feed(b"0\r\n" + b"T: v\r\n" * (MAX_TRAILER_FIELDS + 1) + b"\r\n")
    with pytest.raises(UpstreamProtocolError, match="too long"):
        ChunkedDecoder().feed(b"0\r\nT: " + b"v" * 10_000 + b"\r\n\r\n")


# --- over real sockets -------------------------------------------------------------------


async def _answer_with(answer: bytes, *, piece: int = 0) -> tuple[int, bytes]:
    """Send ``answer`` to one POST (in ``piece``-byte writes if set); the client's status and body."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idx: int) -> None:
        await read_request(reader)
        if piece:
            for i in range(0, len(answer), piece):
                writer.write(answer[i : i + piece])
                await writer.drain()
                await asyncio.sleep(0)  # let the client read it: one read per piece
        else:
            writer.write(answer)
            await writer.drain()
        await asyncio.Event().wait()  # keep the socket open: errors must come from parsing

    pool = UpstreamPool(max_per_host=1)
    async with raw_server(script) as target:
        try:
            async with await pool.request("POST", target, "/", None, b"", read_timeout_s=10) as resp:
                return resp.status, await resp.read()
        finally:
            await pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        STATUS + b"X: " + b"a" * 260_000 + b"\r\n\r\n",
        STATUS + fields(MAX_HEADER_FIELDS + 1) + b"\r\n\r\n",
        STATUS + b"Content-Length: " + b"1" * 5000 + b"\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + STATUS + b"Content-Length: 0\r\n\r\n",
        STATUS + b"Transfer-Encoding: chunked\r\n\r\n1;" + b"e" * 5000 + b"\r\nx\r\n0\r\n\r\n",
    ],
    ids=["260KB-head", "too-many-fields", "5000-digit-length", "nine-1xx", "long-chunk-ext"],
)
async def test_limits_over_a_socket_are_protocol_errors(answer: bytes, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="asyncio"), pytest.raises(UpstreamProtocolError):
        await _answer_with(answer)
    assert not [r for r in caplog.records if "Fatal error" in r.getMessage()]  # data_received() never raises


async def test_two_interim_responses_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + STATUS
    assert await _answer_with(answer + b"Content-Length: 2\r\n\r\nok") == (200, b"ok")


async def test_head_sent_in_small_pieces_is_scanned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    readers: list[HeadReader] = []

    class Recording(HeadReader):
        def __init__(self) -> None:
            super().__init__()
            readers.append(self)

    monkeypatch.setattr(connection_mod, "HeadReader", Recording)
    head = STATUS + b"X-Big: " + b"a" * (48 * 1024) + b"\r\nContent-Length: 2\r\n\r\n"
    assert await _answer_with(head + b"ok", piece=97) == (200, b"ok")
    assert len(readers) == 1
    assert readers[0].scanned <= len(head) + 3 * (len(head) // 97 + 1)  # each piece searched once, +3 overlap
