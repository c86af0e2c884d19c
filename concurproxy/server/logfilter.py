"""Keep malformed-HTTP noise out of the logs.

aiohttp's protocol layer answers requests its parser rejects (bad request line,
oversized or duplicate headers, control characters) itself, before any
middleware runs, and logs each one at ERROR with a full traceback: a client can
flood the logs at will. This filter turns those records into one short WARNING
line without traceback, and lets at most ``per_minute`` of them through.
"""

from __future__ import annotations

import logging
import time

from aiohttp.http_exceptions import HttpProcessingError


class ParserErrorFilter(logging.Filter):
    def __init__(self, per_minute: int = 60, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.per_minute = per_minute
        self.clock = clock
        self._window_start = clock()
        self._count = 0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = self.clock()
        if now - self._window_start >= 60:
            self._window_start, self._count = now, 0
        self._count += 1
        if self._count > self.per_minute:
            self.suppressed += 1
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = f"{record.getMessage()}: rejected malformed HTTP: {type(exc).__name__}: {str(exc)[:120]!r}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def install_parser_error_filter() -> ParserErrorFilter:
    flt = ParserErrorFilter()
    logging.getLogger("aiohttp.server").addFilter(flt)
    return flt
