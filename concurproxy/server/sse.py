"""Server-sent-events relay: whole events out as bytes arrive, usage learned on the way.

The proxy relays an upstream SSE stream event by event. Each API codec
subclasses `SSERelay` with ``_keep(event)``, which reads the few events it
cares about (where usage is, where the stream ends, for Responses the id of
the response) and decides whether the client sees the event (chat strips the
usage-only chunk the proxy asked for). Everything else is forwarded without
decoding.

Fast path: a read that holds only whole ``\\n\\n``-separated events, nothing
buffered, and neither of the codec's two marker strings (``FAST_A``,
``FAST_B``: the bytes that announce an event ``_keep`` must see) goes out
unchanged after a few C scans. Such a read with markers (often a whole short
answer in one read) sends only its marked events through ``_keep``; other
reads go through the per-event loop. No run of three newlines and no CR keeps
the event split unambiguous.

Bound: an event still incomplete after ``max_event_bytes`` buffered raises
`EventTooLarge` (issue 21 item 7): an upstream that never ends an event must
not grow the proxy's memory without limit. The relay turns it into an error
event in the API's shape and ends the stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # (the api package imports this module: no cycle at run time)
    from concurproxy.server.api.usage import Usage

DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


class EventTooLarge(Exception):
    """An upstream SSE event grew past the configured bound without its end. ``complete``: the whole
    events of the same read, still owed to the client before the error."""

    def __init__(self, size: int, limit: int, complete: bytes = b"") -> None:
        super().__init__(f"an upstream event grew to {size} bytes without its end (limit {limit})")
        self.size = size
        self.limit = limit
        self.complete = complete


def _find_separator(buf: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """Position and length of the first event separator (blank line) at or after ``start``."""
    i = buf.find(b"\n\n", start)
    j = buf.find(b"\r\n\r\n", start)
    if j != -1 and (i == -1 or j < i):
        return j, 4
    return i, 2


class SSERelay:
    """Feed upstream bytes, get back the bytes to send to the client (whole events only).

    Subclasses set ``FAST_A``/``FAST_B`` and implement ``_keep``. Counters: ``chunks_seen``
    (events relayed or dropped), ``done_seen`` (the API's end-of-stream event arrived),
    ``usage`` (the last usage read), ``response_id`` (Responses: the id the engine gave)."""

    __slots__ = ("_buf", "_limit", "chunks_seen", "done_seen", "response_id", "strip_usage", "usage")

    FAST_A: ClassVar[bytes] = b'"usage":'
    FAST_B: ClassVar[bytes] = b"[DONE]"

    def __init__(self, strip_usage: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.strip_usage = strip_usage
        self.usage: Usage | None = None
        self.response_id: str | None = None
        self._buf = bytearray()
        self._limit = max_event_bytes
        self.chunks_seen = 0
        self.done_seen = False

    def feed(self, data: bytes) -> bytes:
        if not self._buf and data[-2:] == b"\n\n" and b"\n\n\n" not in data and b"\r" not in data:
            if self.FAST_A not in data and self.FAST_B not in data:
                self.chunks_seen += data.count(b"\n\n")
                return data
            return self._feed_marked(data)
        return self._feed_events(data)

    def _feed_marked(self, data: bytes) -> bytes:
        """Whole, unambiguously split events, some carrying a marker: only those go through ``_keep``,
        in stream order. A stream that arrives in one read (a fast engine, a short answer) then costs a
        few scans plus one ``_keep`` per marked event, not a Python loop over every event."""
        self.chunks_seen += data.count(b"\n\n")
        starts: set[int] = set()
        for marker in (self.FAST_A, self.FAST_B):
            at = data.find(marker)
            while at != -1:
                sep = data.rfind(b"\n\n", 0, at)
                starts.add(sep + 2 if sep != -1 else 0)
                at = data.find(marker, at + 1)
        out: bytearray | None = None
        pos = 0
        for start in sorted(starts):
            end = data.find(b"\n\n", start) + 2
            if not self._keep(data[start:end]):
                if out is None:
                    out = bytearray()
                out += data[pos:start]
                pos = end
        if out is None:
            return data
        out += data[pos:]
        return bytes(out)

    def _feed_events(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        pos = 0
        while True:
            idx, sep_len = _find_separator(self._buf, pos)
            if idx == -1:
                break
            event = bytes(self._buf[pos : idx + sep_len])
            pos = idx + sep_len
            self.chunks_seen += 1
            if self._keep(event):
                out += event
        if pos:
            del self._buf[:pos]
        if len(self._buf) > self._limit:
            raise EventTooLarge(len(self._buf), self._limit, bytes(out))
        return bytes(out)

    def flush(self) -> bytes:
        """Whatever is left when the upstream ends (an unterminated last event)."""
        rest = bytes(self._buf)
        self._buf.clear()
        if rest.strip():
            self.chunks_seen += 1
            if self._keep(rest):
                return rest + b"\n\n"
        return b""

    def _keep(self, event: bytes) -> bool:
        """Read ``event`` (one whole event, separator included); False drops it from the client's stream."""
        raise NotImplementedError


def data_of(event: bytes) -> bytes:
    """The ``data:`` payload of one event (multi-line data joined with newlines)."""
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            parts.append(line[5:].lstrip(b" "))
    return b"\n".join(parts)


__all__ = ["DEFAULT_MAX_EVENT_BYTES", "EventTooLarge", "SSERelay", "data_of"]
