"""Typed failures of the upstream HTTP/1.1 client.

Every error the client raises derives from :class:`UpstreamError`, so a caller can
catch the family with one narrow ``except``. The split matters for retry policy:

* :class:`UpstreamConnectError` - no connection could be opened (refused, DNS,
  connect timeout): nothing was sent, the step may go to another replica.
* :class:`UpstreamDisconnected` - the server closed the connection; ``got_bytes``
  says whether any response byte had arrived, ``sent`` whether the request had been
  handed to the transport (some or all of it may have reached the server).
* :class:`UpstreamTimeout` - no response head (or no body data) within the limit.
* :class:`UpstreamProtocolError` - the bytes were not valid HTTP/1.x.
* :class:`UpstreamAborted` - the caller closed/aborted the response while a read waited.
* :class:`UpstreamRequestError` - the caller's request cannot be written as valid HTTP/1.1
  (bad method, target, header name or value): nothing was sent, and no replica is to blame.

Re-sending a request (nginx's ``proxy_next_upstream`` default, and Go's ``net/http``):

* ``sent`` false (the server closed the idle connection before we wrote; the transport was
  already closing): nothing reached the server, any method may be sent again.
* ``sent`` true and no response byte: the server may have read the request and started
  working on it (for an inference step: a generation on the GPU). Only idempotent methods
  (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) may be sent again; a POST is not, unless the
  caller says it may (``replayable``: the proxy's inference steps). The pool follows this rule
  for its one stale keep-alive retry; a caller that fails over to another replica should apply
  the same rule (``UpstreamDisconnected.sent``).
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Base class of every error raised by :mod:`concurproxy.upstream.http1`."""


class UpstreamConnectError(UpstreamError):
    """Could not open a TCP connection to the upstream (refused, unreachable, timed out)."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The upstream sent nothing within the read timeout (head or body)."""


class UpstreamDisconnected(UpstreamError):
    """The upstream closed the connection before the response was complete.

    ``got_bytes``: some of the response had arrived. ``sent``: the request had been handed to
    the transport, so the server may have read it (see the module docstring for the retry rule).
    """

    def __init__(self, message: str, *, got_bytes: bool, sent: bool) -> None:
        super().__init__(message)
        self.got_bytes = got_bytes
        self.sent = sent


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes are not a valid HTTP/1.x response."""


class UpstreamAborted(UpstreamError):
    """The response was closed/aborted by the caller while a read was pending."""


class UpstreamRequestError(UpstreamError, ValueError):
    """The request cannot be serialised as valid HTTP/1.1; raised before anything is sent."""
