"""Session ids that clients already send (their own, not ours): read in the policy's order.

Each source (``identity.client_session_ids``) is a header or a dotted body path; the first one
present gives the agent id ``LABEL:VALUE`` (``LABEL:VALUE/QUALIFIER`` when the source names a
qualifier header and the request carries it, e.g. Codex's ``x-openai-subagent``). A source with a
``match`` pattern counts only when the value matches, and then only its group (Claude Code's
``metadata.user_id`` names its session; anyone else's names a user, not an agent). The label keeps
ids from different sources apart; the tenant is added by the caller (``tenant/agent``, as every
agent id), so a client-sent id never joins two tenants' steps.

Values are checked with the rule of ``concurproxy.identity`` (1-128 characters of
``[A-Za-z0-9._:@/+=-]``); anything else (longer, other characters, a JSON string such as newer
Claude Code's ``metadata.user_id``) is not refused, unlike an explicit ``X-Agent-Id``: it is
replaced by a digest (``LABEL:h-<24 hex>``), since a client that never heard of this proxy must not
get a 400 for its own id. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from multidict import istr

from concurproxy.config.identity import ClientSessionIdConfig
from concurproxy.identity import _ID_RE as ID_RE  # the one rule for ids that reach logs, labels and keys


class ClientSession(NamedTuple):
    agent_id: str
    label: str


class _Source(NamedTuple):
    header: istr | None
    path: tuple[str, ...]
    label: str
    qualifier: istr | None
    match: re.Pattern[str] | None


def safe_id(label: str, parts: Sequence[str]) -> str:
    """``LABEL:part[/part]`` when that is a valid id, else ``LABEL:h-<digest of the parts>``."""
    candidate = f"{label}:{'/'.join(parts)}"
    if ID_RE.match(candidate):
        return candidate
    digest = hashlib.sha1("\x00".join(parts).encode("utf-8", "surrogatepass"), usedforsecurity=False)
    return f"{label}:h-{digest.hexdigest()[:24]}"


def _value(value: Any) -> str | None:
    if value.__class__ is int:
        value = str(value)
    if value.__class__ is not str:
        return None  # objects, lists, booleans: not an id (a Responses `conversation` object has `.id`)
    value = value.strip()
    return value or None


class ClientSessionIds:
    def __init__(self, sources: Sequence[ClientSessionIdConfig]) -> None:
        self._sources = tuple(
            _Source(
                istr(s.header) if s.header else None,
                tuple(s.body.split(".")) if s.body else (),
                s.label,
                istr(s.qualifier_header) if s.qualifier_header else None,
                re.compile(s.match) if s.match else None,
            )
            for s in sources
        )

    def find(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> ClientSession | None:
        """The first source present in the request, as an agent id; None when there is none."""
        for s in self._sources:
            raw = _value(headers.get(s.header)) if s.header is not None else _value(_path(body, s.path))
            if raw is not None and s.match is not None:
                found = s.match.search(raw)
                raw = next((g for g in found.groups() if g), None) if found else None
            if raw is None:
                continue
            parts = [raw]
            qualifier = _value(headers.get(s.qualifier)) if s.qualifier is not None else None
            if qualifier is not None:
                parts.append(qualifier)
            return ClientSession(safe_id(s.label, parts), s.label)
        return None


def _path(body: Any, path: tuple[str, ...]) -> Any:
    node = body
    for name in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(name)
    return node
