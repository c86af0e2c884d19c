"""Who is asking: one typed `Identity` per step, extracted once at the front door.

Headers first (``X-Agent-Id`` / ``X-Session-Id``, ``X-Task-Id``, ``X-Agent-Role``,
``X-Priority``), then the body's ``metadata`` and ``user`` as fallbacks. The
tenant never comes from a header: it is resolved from the API key by the
caller. Values are validated here (length, characters) before they can reach
logs, metric labels or state keys: an invalid header is a 400, while a body
fallback that is not a valid id is not used (``user`` and ``metadata`` are
OpenAI fields with their own meaning, so "Jane Doe" as ``user`` is no error;
openapi.yaml says the same). A request with no agent id is its own one-step agent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import istr

from concurproxy.control.types import PriorityClass
from concurproxy.errors import bad_request

MAX_ID_LEN = 128
_ID_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}\Z")  # \Z: "$" would accept a trailing newline
_TRUE = frozenset({"1", "true", "yes"})
DEFAULT_ROLE = "default"
# Case-insensitive header names: aiohttp's CIMultiDict finds an ``istr`` without folding its case per
# lookup (about twice as fast); a plain dict matches them as the strings they are.
_AGENT_ID, _SESSION_ID, _TASK_ID = istr("X-Agent-Id"), istr("X-Session-Id"), istr("X-Task-Id")
_ROLE, _PRIORITY, _DONE = istr("X-Agent-Role"), istr("X-Priority"), istr("X-Agent-Done")


@dataclass(slots=True)
class Identity:
    """Treat as immutable. Not ``frozen``: one is built per step, and a frozen dataclass costs
    about six times as much to construct (``object.__setattr__`` per field)."""

    tenant: str
    agent_id: str
    task_id: str
    role: str
    priority: PriorityClass | None  # None: not given; the role's priority applies
    one_shot: bool  # no agent id was given: the agent is this single step
    done: bool  # the client says this is the agent's last step (X-Agent-Done)


def _clean(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else str(value)
    if not _ID_RE.match(text):
        raise bad_request(
            f"{name} must be 1-{MAX_ID_LEN} characters of [A-Za-z0-9._:@/+=-]", param=name, code="invalid_identity"
        )
    return text


def _from_body(value: Any) -> str | None:
    """A body fallback: a valid id string, else not used."""
    return value if type(value) is str and _ID_RE.match(value) else None


_PRIORITY_BY_TEXT = {**{p.name: p for p in PriorityClass}, **{str(int(p)): p for p in PriorityClass}}


def _priority(value: Any, strict: bool = True) -> PriorityClass | None:
    """A class name (any case) or its number 0-3, exactly (openapi.yaml's pattern); else a 400 for the
    header and nothing for a body fallback."""
    if value is None:
        return None
    text = value.lower() if type(value) is str else str(value) if type(value) is int and not strict else None
    found = _PRIORITY_BY_TEXT.get(text) if text is not None else None
    if found is None and strict:
        names = ", ".join(p.name for p in PriorityClass)
        raise bad_request(f"X-Priority must be one of {names} (or 0-3)", param="X-Priority", code="invalid_identity")
    return found


def extract_identity(headers: Mapping[str, str], body: Mapping[str, Any], tenant: str, request_id: str) -> Identity:
    get = headers.get
    meta = body.get("metadata")
    if meta and (isinstance(meta, dict) or isinstance(meta, Mapping)):
        mget = meta.get
        agent_raw = get(_AGENT_ID) or get(_SESSION_ID) or _from_body(mget("agent_id")) or _from_body(mget("session_id"))
        task_raw = get(_TASK_ID) or _from_body(mget("task_id"))
        role_raw = get(_ROLE) or _from_body(mget("role"))
        prio_raw = get(_PRIORITY)
        if not prio_raw and (from_meta := _priority(mget("priority"), strict=False)) is not None:
            prio_raw = from_meta.name
        done_raw = get(_DONE) or mget("agent_done")
    else:  # no metadata (the usual case): headers only; an empty header counts as absent, as above
        agent_raw = get(_AGENT_ID) or get(_SESSION_ID)
        task_raw = get(_TASK_ID) or None
        role_raw = get(_ROLE) or None
        prio_raw = get(_PRIORITY) or None
        done_raw = get(_DONE) or None
    agent_raw = agent_raw or _from_body(body.get("user"))
    # A valid string passes with one regex match; anything else goes through _clean (None, "", other
    # types, or a 400 for an invalid value).
    match = _ID_RE.match
    agent = agent_raw if type(agent_raw) is str and match(agent_raw) else _clean(agent_raw, "X-Agent-Id")
    session = get(_SESSION_ID)
    if session and session is not agent_raw and not match(session):  # sent beside X-Agent-Id: still checked
        _clean(session, "X-Session-Id")
    task = task_raw if type(task_raw) is str and match(task_raw) else _clean(task_raw, "X-Task-Id")
    role = role_raw if type(role_raw) is str and match(role_raw) else _clean(role_raw, "X-Agent-Role")
    priority = _priority(prio_raw) if prio_raw else None
    done = str(done_raw).lower() in _TRUE if done_raw is not None else False
    if agent is None:  # no agent id: this step is its own one-step agent
        agent_id = f"req-{request_id}"
        return Identity(
            tenant, agent_id, task if task is not None else agent_id, role or DEFAULT_ROLE, priority, True, True
        )
    return Identity(tenant, agent, task if task is not None else agent, role or DEFAULT_ROLE, priority, False, done)
