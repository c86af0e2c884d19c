"""Server-sent-events relay that learns token usage and can hide the usage chunk.

The proxy relays an upstream SSE stream event by event, as bytes arrive. It
needs each step's usage, so when the client did not ask for
``stream_options.include_usage`` the proxy asks the upstream for it and removes
the extra usage-only chunk (``"choices": []`` + ``"usage": {...}``) before the
client sees it. Only events that carry a usage object are parsed; the rest are
forwarded without decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_USAGE_MARKERS = (b'"usage":{', b'"usage": {')


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None

    @classmethod
    def from_obj(cls, obj: object) -> Usage | None:
        if not isinstance(obj, dict):
            return None
        try:
            prompt = int(obj.get("prompt_tokens") or 0)
            completion = int(obj.get("completion_tokens") or 0)
        except (TypeError, ValueError):
            return None
        details = obj.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return cls(prompt, completion, cached if isinstance(cached, int) else None)


def _find_separator(buf: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """Position and length of the first event separator (blank line) at or after ``start``."""
    i = buf.find(b"\n\n", start)
    j = buf.find(b"\r\n\r\n", start)
    if j != -1 and (i == -1 or j < i):
        return j, 4
    return i, 2


class SSERelay:
    """Feed upstream bytes, get back the bytes to send to the client (whole events only)."""

    __slots__ = ("_buf", "chunks_seen", "done_seen", "first_content_seen", "strip_usage", "usage")

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self.usage: Usage | None = None
        self._buf = bytearray()
        self.chunks_seen = 0
        self.done_seen = False
        self.first_content_seen = False

    def feed(self, data: bytes) -> bytes:
        # The usual chunk: whole "\n\n"-separated events, nothing buffered, no usage and no [DONE]:
        # every event is kept as it is, so the chunk goes out unchanged (a few C scans instead of
        # the per-event loop). No run of three newlines and no CR keeps the event split unambiguous.
        if (
            not self._buf
            and data[-2:] == b"\n\n"
            and b"\n\n\n" not in data
            and b"\r" not in data
            and b'"usage":' not in data
            and b"[DONE]" not in data
        ):
            self.chunks_seen += data.count(b"\n\n")
            return data
        return self._feed_events(data)

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
            if self._keep(event):
                out += event
        if pos:
            del self._buf[:pos]
        return bytes(out)

    def flush(self) -> bytes:
        """Whatever is left when the upstream ends (an unterminated last event)."""
        rest = bytes(self._buf)
        self._buf.clear()
        if rest.strip() and self._keep(rest):
            return rest + b"\n\n"
        return b""

    def _keep(self, event: bytes) -> bool:
        self.chunks_seen += 1
        if b"data: [DONE]" in event or b"data:[DONE]" in event:
            self.done_seen = True
            return True
        if not any(m in event for m in _USAGE_MARKERS):
            return True
        payload = _data_of(event)
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True  # not ours to judge: relay as is
        if not isinstance(obj, dict):
            return True
        usage = Usage.from_obj(obj.get("usage"))
        if usage is not None:
            self.usage = usage
        if self.strip_usage and not obj.get("choices"):
            return False
        return True


def _data_of(event: bytes) -> bytes:
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            parts.append(line[5:].lstrip(b" "))
    return b"\n".join(parts)
