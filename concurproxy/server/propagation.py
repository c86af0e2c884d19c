"""Trace-context headers the proxy copies from a client to the engine, checked against their grammar first.

W3C Trace Context (https://www.w3.org/TR/trace-context/) is ASCII by definition. A client may still send
anything (a stray ``\\x80``, a CR smuggled through a lenient parser, a 10 KB ``tracestate``); copied
unchanged, such a value breaks the upstream request or the engine's own parser. So each value is parsed
the way the spec's receivers do and dropped when it does not parse (never a 500):

* ``traceparent``: ``version-traceid-parentid-flags``, lower-case hex, version ``ff`` invalid, all-zero
  trace id or parent id invalid; a future version may append fields after a ``-`` (spec §3.2.4).
* ``tracestate``: only together with a valid ``traceparent`` (spec §3.3.1: a receiver that could not
  parse ``traceparent`` must not parse ``tracestate``); at most 32 list members of ``key=value``
  with the spec's key and value alphabets, at most 512 characters in all (the length the spec asks
  vendors to propagate at least).

Whatever is dropped is returned by name, so the caller can count it (``concurproxy_propagation_dropped_total``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-[\x21-\x7e]*)?\Z")
_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16
# list-member = key "=" value; key: simple or tenant@system; value: printable ASCII but "," and "=", no trailing space
_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]\Z"
)
MAX_TRACESTATE_CHARS = 512
MAX_TRACESTATE_MEMBERS = 32


def valid_traceparent(value: str) -> bool:
    m = _TRACEPARENT.match(value)
    if m is None:
        return False
    version, trace_id, parent_id, rest = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return False
    return not (version == "00" and rest is not None)  # version 00 has exactly four fields


def valid_tracestate(value: str) -> bool:
    if len(value) > MAX_TRACESTATE_CHARS or not value.isascii():
        return False
    members = [m.strip(" \t") for m in value.split(",")]
    present = [m for m in members if m]
    if len(present) > MAX_TRACESTATE_MEMBERS:
        return False
    return all(_MEMBER.match(m) is not None for m in present)


def propagated_headers(client_headers: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The trace headers to send upstream, and the names of those dropped as invalid."""
    parent = client_headers.get("traceparent")
    if not parent:
        return {}, ("tracestate",) if client_headers.get("tracestate") else ()
    if not valid_traceparent(parent):
        return {}, ("traceparent", "tracestate") if client_headers.get("tracestate") else ("traceparent",)
    out = {"traceparent": parent}
    state = client_headers.get("tracestate")
    if state:
        if valid_tracestate(state):
            out["tracestate"] = state
        else:
            return out, ("tracestate",)
    return out, ()
