"""HTTP/1.1 wire format: pure functions and one reassembly buffer (no I/O, no asyncio).

* :func:`build_request` - one ``bytes`` with request line, headers and body
  (``Host``, ``Content-Length``, ``Connection: keep-alive`` and ``Accept-Encoding: identity``
  added here: the client never decodes a content coding, so it must not be sent one).
* :func:`parse_head` - status line + header block (everything before the blank
  line) into a :class:`ResponseHead`; strict: obs-fold, bad names, conflicting
  ``Content-Length`` are errors, never guesses (request-smuggling hygiene).
* :class:`HeadReader` - reassembles a head that arrives over several reads, searching
  each byte once.
* chunked bodies: :mod:`concurproxy.upstream.http1.chunked`.

Limits (on the whole head, whichever way it arrives): ``MAX_HEAD_BYTES`` for status line
plus fields, ``MAX_HEADER_FIELDS`` fields, a ``Content-Length`` of at most 18 digits.

Why hand-written rather than ``httptools`` (llhttp): measured, see docs/upstream-client.md
"Parser choice". llhttp saves ~1.5-2.5 µs per JSON response (~1% of the proxy's CPU per
request) and ~1 µs per SSE event, but through ``httptools`` it cannot bound chunk extensions
or be told a response answers a HEAD, and it rejects what RFC 9110/9112 let us accept
(identical repeated ``Content-Length``, TE+CL). The chunked decoder is property-tested against
random chunkings and random stream splits (tests/upstream/test_parser.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from concurproxy.upstream.http1.errors import UpstreamProtocolError, UpstreamRequestError

MAX_HEAD_BYTES = 64 * 1024  # status line + header fields; vLLM sends < 300 bytes
MAX_HEADER_FIELDS = 100  # Apache's LimitRequestFields default; engines send about 5
_MAX_LENGTH_DIGITS = 18  # < 2**63: int() never sees thousands of digits (ValueError past 4300)
# framing and coding headers belong to the client; a caller's Host replaces the default
_SKIP_REQUEST_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "host", "accept-encoding"})
# header lines: token name, colon, value without CR/LF/NUL; lines joined by CRLF (no obs-fold)
_LINE = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*"
_HEADER_BLOCK = re.compile(_LINE + rb"(?:\r\n" + _LINE + rb")*")


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only response headers; repeated fields joined with ``", "``.

    ``raw`` keeps the fields as received (name case and order), for relaying.
    """

    __slots__ = ("_d", "raw")

    def __init__(self, raw: list[tuple[str, str]]) -> None:
        self.raw = raw
        d: dict[str, str] = {}
        for name, value in raw:
            key = name.lower()
            prev = d.get(key)
            d[key] = value if prev is None else f"{prev}, {value}"
        self._d = d

    @classmethod
    def from_parsed(cls, raw: list[tuple[str, str]], folded: dict[str, str]) -> Headers:
        """Build from ``raw`` and its already lower-cased/joined dict (no second pass)."""
        h = cls.__new__(cls)
        h.raw = raw
        h._d = folded
        return h

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._d.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({self.raw!r})"


@dataclass(slots=True)
class ResponseHead:
    version: str  # "1.1" / "1.0"
    status: int
    reason: str
    headers: Headers
    content_length: int | None  # None: not given (or ignored because chunked)
    chunked: bool
    keep_alive: bool  # the server allows reusing the connection after this response


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 token (method, field name)
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")  # no CR/LF/NUL/controls; latin-1 encodable
_TARGET = re.compile(r"[\x21-\x7e]+\Z")  # origin-form: visible ASCII, no whitespace
_CHECKED_NAMES: set[str] = set()  # header names already found valid (a handful): no regex per step


def host_header(host: str, port: int) -> str:
    """The ``Host`` value for a connection target, computed once per target (not per request).

    An IPv6 literal goes in brackets (RFC 9110 7.2 / RFC 3986 ``IP-literal``) without its zone
    id (``%eth0`` means nothing to the server; Go's net/http drops it too); the port is left out
    when it is 80. Raises :class:`UpstreamRequestError` for a host no request could carry."""
    if ":" in host:
        host = f"[{host.split('%', 1)[0]}]"
    value = host if port == 80 else f"{host}:{port}"
    if not host or _FIELD_VALUE.match(value) is None:
        raise UpstreamRequestError(f"invalid upstream host {host[:80]!r}")
    return value


def build_request(method: str, path: str, host_header: str, headers: Mapping[str, str] | None, body: bytes) -> bytes:
    """Serialise one request. Caller headers named Host/Content-Length/Connection/Transfer-Encoding/
    Accept-Encoding are dropped (the client owns framing and codings), except that a caller ``Host``
    replaces ``host_header`` (which is trusted: built once by :func:`host_header`).

    Raises :class:`UpstreamRequestError` (nothing is sent) for a method that is not a token, a target
    with whitespace, controls or non-ASCII, a header name that is not a token, or a value holding
    CR/LF/NUL or a character outside latin-1: such a request would be malformed on the wire or
    split into two (request smuggling), whatever the caller meant."""
    host = host_header
    if _TOKEN.match(method) is None:
        raise UpstreamRequestError(f"invalid method {method[:40]!r}")
    if _TARGET.match(path) is None:
        raise UpstreamRequestError(f"invalid request target {path[:80]!r}")
    lines = [f"{method} {path} HTTP/1.1\r\n"]
    if headers:
        for name, value in headers.items():
            if name not in _CHECKED_NAMES:
                if _TOKEN.match(name) is None:
                    raise UpstreamRequestError(f"invalid header name {name[:40]!r}")
                if len(_CHECKED_NAMES) < 1024:
                    _CHECKED_NAMES.add(name)
            if _FIELD_VALUE.match(value) is None:
                raise UpstreamRequestError(f"invalid value for header {name!r}")
            low = name.lower()
            if low in _SKIP_REQUEST_HEADERS:
                if low == "host":
                    host = value
                continue
            lines.append(f"{name}: {value}\r\n")
    # identity: without Accept-Encoding any coding is acceptable (RFC 9110 12.5.3), and a gzip
    # body would reach the client labelled as JSON: the proxy relays bodies, it never decodes them
    lines.append(
        f"Host: {host}\r\nContent-Length: {len(body)}\r\nConnection: keep-alive\r\nAccept-Encoding: identity\r\n\r\n"
    )
    return "".join(lines).encode("latin-1") + body


def parse_head(block: bytes) -> ResponseHead:
    """Parse ``block`` = status line + header lines, without the final blank line.

    The header block is validated by one regular expression (token names, no obs-fold,
    no bare CR/LF), then decoded once and split - a single C pass plus a short loop.
    """
    if len(block) > MAX_HEAD_BYTES:
        raise UpstreamProtocolError(f"response head larger than {MAX_HEAD_BYTES // 1024} KiB")
    status_line, _, rest = block.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or len(parts[0]) != 8 or not parts[0].startswith(b"HTTP/1."):
        raise UpstreamProtocolError(f"bad status line {status_line[:80]!r}")
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        raise UpstreamProtocolError(f"bad status code in {status_line[:80]!r}")
    version = "1.1" if parts[0] == b"HTTP/1.1" else "1.0"
    raw: list[tuple[str, str]] = []
    d: dict[str, str] = {}
    if rest:
        if _HEADER_BLOCK.fullmatch(rest) is None:
            bad = next((ln for ln in rest.split(b"\r\n") if _HEADER_BLOCK.fullmatch(ln) is None), rest)
            raise UpstreamProtocolError(f"bad header line {bad[:80]!r}")
        lines = rest.decode("latin-1").split("\r\n")
        if len(lines) > MAX_HEADER_FIELDS:
            raise UpstreamProtocolError(f"more than {MAX_HEADER_FIELDS} header fields")
        for line in lines:
            n, _, v = line.partition(":")
            v = v.strip(" \t")
            raw.append((n, v))
            low = n.lower()
            prev = d.get(low)
            d[low] = v if prev is None else f"{prev}, {v}"
    content_length: int | None = None
    cl = d.get("content-length")
    if cl is not None:
        values = {x.strip() for x in cl.split(",")} if "," in cl else {cl}
        if len(values) != 1:
            raise UpstreamProtocolError("conflicting Content-Length headers")
        cl = values.pop()
        if len(cl) > _MAX_LENGTH_DIGITS or not cl.isdigit() or not cl.isascii():
            raise UpstreamProtocolError(f"bad Content-Length {cl[:40]!r}")
        content_length = int(cl)
    conn = d.get("connection")
    te = d.get("transfer-encoding")
    if version == "1.1":
        keep_alive = conn is None or "close" not in conn.lower()
    else:
        # HTTP/1.0: persistent only if the server says keep-alive (RFC 9112 9.3) AND the body is
        # length-delimited; a 1.0 message with Transfer-Encoding has faulty framing (RFC 9112 6.1)
        keep_alive = (
            conn is not None
            and te is None
            and content_length is not None
            and "keep-alive" in (t.strip() for t in conn.lower().split(","))
        )
    chunked = False
    if te is not None:
        chunked = te.rsplit(",", 1)[-1].strip().lower() == "chunked"
        if content_length is not None:
            keep_alive = False  # TE+CL: TE wins (RFC 9112 6.3), and the connection is suspect
        content_length = None
        if not chunked:
            keep_alive = False  # body delimited by close
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    return ResponseHead(version, int(code), reason, Headers.from_parsed(raw, d), content_length, chunked, keep_alive)


class HeadReader:
    """Reassembles a response head that arrives over several reads (the rare case: a whole head
    usually comes in one read, which the connection searches directly without this buffer).

    Each byte is searched for the blank line once: the search resumes 3 bytes before the end of
    what was already searched (a CRLFCRLF may be split across reads), and bytes are appended to
    one ``bytearray`` (amortised O(1)). The old ``buf + data`` and search-from-the-start cost
    O(n²): a 48 KiB head sent byte by byte took 0.73 s of event-loop CPU. ``scanned`` counts the
    bytes searched, so tests can assert the O(n) bound without timing anything.
    """

    __slots__ = ("_buf", "scanned")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.scanned = 0

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        """``(head block, bytes after the blank line)`` once the blank line arrived, else ``None``.
        Raises :class:`UpstreamProtocolError` when more than ``MAX_HEAD_BYTES`` came without one."""
        buf = self._buf
        start = len(buf) - 3 if len(buf) > 3 else 0
        buf += data
        idx = buf.find(b"\r\n\r\n", start)
        self.scanned += (idx + 4 if idx >= 0 else len(buf)) - start
        if idx < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise UpstreamProtocolError(f"response head larger than {MAX_HEAD_BYTES // 1024} KiB")
            return None
        view = memoryview(buf)
        try:
            return bytes(view[:idx]), bytes(view[idx + 4 :])
        finally:
            view.release()  # a bytearray with an exported view cannot be resized
