"""HTTP/1.1 wire format, pure functions and one incremental decoder (no I/O, no asyncio).

* :func:`build_request` - one ``bytes`` with request line, headers and body
  (``Host``, ``Content-Length`` and ``Connection: keep-alive`` added here).
* :func:`parse_head` - status line + header block (everything before the blank
  line) into a :class:`ResponseHead`; strict: obs-fold, bad names, conflicting
  ``Content-Length`` are errors, never guesses (request-smuggling hygiene).
* :class:`ChunkedDecoder` - ``Transfer-Encoding: chunked`` decoder, fed arbitrary
  slices of the byte stream; returns payload pieces as they become available.

Why hand-written rather than ``httptools``: the client only parses *responses*
from servers we run (vLLM, the bundled worker); one ``find`` locates the head and
a handful of ``split`` calls parse it - a few microseconds, no per-header Python
callback, no extra dependency. The chunked decoder is property-tested against
random chunkings and random stream splits (tests/upstream/test_parser_props.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from concurproxy.upstream.http1.errors import UpstreamProtocolError, UpstreamRequestError

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096
_SKIP_REQUEST_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "host"})
_HEXDIGITS = b"0123456789abcdefABCDEF"
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


def build_request(method: str, path: str, host_header: str, headers: Mapping[str, str] | None, body: bytes) -> bytes:
    """Serialise one request. Caller headers named Host/Content-Length/Connection/Transfer-Encoding
    are dropped (the client owns framing), except that a caller ``Host`` replaces the default.

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
    if _FIELD_VALUE.match(host) is None:
        raise UpstreamRequestError(f"invalid Host {host[:80]!r}")
    lines.append(f"Host: {host}\r\nContent-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return "".join(lines).encode("latin-1") + body


def parse_head(block: bytes) -> ResponseHead:
    """Parse ``block`` = status line + header lines, without the final blank line.

    The header block is validated by one regular expression (token names, no obs-fold,
    no bare CR/LF), then decoded once and split - a single C pass plus a short loop.
    """
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
        for line in rest.decode("latin-1").split("\r\n"):
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
        if not cl.isdigit() or not cl.isascii():
            raise UpstreamProtocolError(f"bad Content-Length {cl[:40]!r}")
        content_length = int(cl)
    conn_tokens = d.get("connection", "").lower()
    keep_alive = "close" not in conn_tokens if version == "1.1" else "keep-alive" in conn_tokens
    chunked = False
    te = d.get("transfer-encoding")
    if te is not None:
        chunked = te.rsplit(",", 1)[-1].strip().lower() == "chunked"
        if content_length is not None:
            keep_alive = False  # TE+CL: TE wins (RFC 9112 6.3), and the connection is suspect
        content_length = None
        if not chunked:
            keep_alive = False  # body delimited by close
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    return ResponseHead(version, int(code), reason, Headers.from_parsed(raw, d), content_length, chunked, keep_alive)


_SIZE, _DATA, _DATA_CRLF, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Incremental ``Transfer-Encoding: chunked`` decoder.

    ``feed(data)`` returns the payload pieces contained in ``data`` (possibly none);
    after the last-chunk and trailer section, ``done`` is true and ``tail`` holds any
    bytes that followed the message (which a keep-alive client must treat as an error).
    Chunk extensions are ignored; trailer fields are read and dropped.
    Single-threaded: one owner feeds it.
    """

    __slots__ = ("_buf", "_left", "_state", "tail")

    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0
        self._buf = b""
        self.tail = b""

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos = 0
        end = len(data)
        while pos < end:
            st = self._state
            if st == _DATA:
                take = min(self._left, end - pos)
                out.append(data[pos : pos + take] if take != end or pos else data)
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _DATA_CRLF
            elif st == _SIZE or st == _TRAILER:
                nl = data.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_CHUNK_LINE:
                        raise UpstreamProtocolError("chunk size/trailer line too long")
                    self._buf = data[pos:]
                    return out
                line = data[pos:nl]
                pos = nl + 2
                if st == _TRAILER:
                    if not line:
                        self._state = _DONE
                    continue
                size_s = line.split(b";", 1)[0].strip(b" \t") if b";" in line else line
                if not size_s or len(size_s) > 16 or size_s.translate(None, _HEXDIGITS):
                    raise UpstreamProtocolError(f"bad chunk size line {line[:40]!r}")
                size = int(size_s, 16)
                if size == 0:
                    self._state = _TRAILER
                elif pos + size + 2 <= end and data[pos + size : pos + size + 2] == b"\r\n":
                    out.append(data[pos : pos + size])  # fast path: the whole chunk is here
                    pos += size + 2
                else:
                    self._left = size
                    self._state = _DATA
            elif st == _DATA_CRLF:
                if end - pos < 2:
                    self._buf = data[pos:]
                    return out
                if data[pos : pos + 2] != b"\r\n":
                    raise UpstreamProtocolError("missing CRLF after chunk data")
                pos += 2
                self._state = _SIZE
            else:  # _DONE
                self.tail += data[pos:]
                return out
        return out
