"""Typed failures of the upstream HTTP/1.1 client.

Every error the client raises derives from :class:`UpstreamError`, so a caller can
catch the family with one narrow ``except``. The split matters for retry policy:

* :class:`UpstreamConnectError` - no connection could be opened (refused, DNS,
  connect timeout): nothing was sent, the step may go to another replica.
* :class:`UpstreamDisconnected` - the server closed the connection; ``got_bytes``
  says whether any response byte had arrived (``False``: retry is safe).
* :class:`UpstreamTimeout` - no response head (or no body data) within the limit.
* :class:`UpstreamProtocolError` - the bytes were not valid HTTP/1.x.
* :class:`UpstreamAborted` - the caller closed/aborted the response while a read waited.
* :class:`UpstreamRequestError` - the caller's request cannot be written as valid HTTP/1.1
  (bad method, target, header name or value): nothing was sent, and no replica is to blame.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Base class of every error raised by :mod:`concurproxy.upstream.http1`."""


class UpstreamConnectError(UpstreamError):
    """Could not open a TCP connection to the upstream (refused, unreachable, timed out)."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The upstream sent nothing within the read timeout (head or body)."""


class UpstreamDisconnected(UpstreamError):
    """The upstream closed the connection before the response was complete."""

    def __init__(self, message: str, *, got_bytes: bool) -> None:
        super().__init__(message)
        self.got_bytes = got_bytes


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes are not a valid HTTP/1.x response."""


class UpstreamAborted(UpstreamError):
    """The response was closed/aborted by the caller while a read was pending."""


class UpstreamRequestError(UpstreamError, ValueError):
    """The request cannot be serialised as valid HTTP/1.1; raised before anything is sent."""
