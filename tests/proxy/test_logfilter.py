import logging

from aiohttp.http_exceptions import BadHttpMessage

from concurproxy.server.logfilter import ParserErrorFilter


def record(exc: BaseException | None) -> logging.LogRecord:
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("1.2.3.4",),
        (type(exc), exc, None) if exc else None,
    )


def test_parser_errors_become_short_rate_limited_warnings():
    t = [0.0]
    flt = ParserErrorFilter(per_minute=2, clock=lambda: t[0])
    r = record(BadHttpMessage("Invalid header value char"))
    assert flt.filter(r) and r.levelname == "WARNING" and r.exc_info is None
    assert "1.2.3.4" in r.getMessage() and "BadHttpMessage" in r.getMessage()
    assert flt.filter(record(BadHttpMessage("x")))
    assert not flt.filter(record(BadHttpMessage("x")))  # over the budget for this minute
    t[0] = 61.0
    assert flt.filter(record(BadHttpMessage("x")))
    other = record(RuntimeError("real bug"))
    assert flt.filter(other) and other.levelname == "ERROR" and other.exc_info is not None
